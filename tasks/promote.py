from prefect import task
from prefect.artifacts import create_markdown_artifact

from components import promotion
from tasks._retry import IO_RETRIES


@task(name="promote", **IO_RETRIES, task_run_name="promote-{registered[name]}")
def promote(registered: dict, report: dict, dataset: dict, min_gain: float, tolerance: float) -> dict:
    """The promotion gate: re-score the champion on today's holdout, move the alias or not."""
    d = promotion.run_gate(registered, report, dataset, promotion.GateConfig(min_gain=min_gain, tolerance=tolerance))
    verdict = "promoted" if d.promote else "not promoted"
    create_markdown_artifact(
        f"**{registered['name']} v{registered['version']}**: {verdict} — {d.reason}",
        key=f"promotion-{report['family']}",
        description="Promotion decision",
    )
    return d.as_dict()


@task(name="move-champion", **IO_RETRIES)
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
