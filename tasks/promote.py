from prefect import task
from prefect.artifacts import create_markdown_artifact

from components import pipeline, promotion
from components.lake import DatasetLayer, Registered, TestReport
from components.promotion import Decision, GateConfig
from tasks._retry import IO_RETRIES


@task(name="promote", **IO_RETRIES, task_run_name="promote-{registered.name}")
def promote(registered: Registered, report: TestReport, dataset: DatasetLayer, gate: GateConfig) -> Decision:
    """The promotion gate: re-score the champion on today's holdout, move the alias or not."""
    d = pipeline.promote(registered, report, dataset, gate)
    verdict = "promoted" if d.promote else "not promoted"
    create_markdown_artifact(
        f"**{registered.name} v{registered.version}**: {verdict} — {d.reason}",
        key=f"promotion-{report.family}",
        description="Promotion decision",
    )
    return d


@task(name="move-champion", **IO_RETRIES, task_run_name="move-champion-{family}")
def move_champion(family: str, version: str | None, rollback: bool, reason: str) -> dict:
    """A manual promotion of ``version``, or a rollback to the previous champion."""
    if rollback:
        out = promotion.rollback(family, reason)
    elif version is None:
        raise ValueError("promote needs a version (or rollback=true)")
    else:
        out = promotion.promote_version(family, version, reason)
    create_markdown_artifact(
        f"**{out['name']}**: champion v{out['previous']} -> v{out['champion']} ({'rollback' if rollback else 'manual'})"
        f" — {reason}",
        key=f"champion-{family}",
        description="Manual champion change",
    )
    return out
