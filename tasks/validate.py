from prefect import task
from prefect.artifacts import create_markdown_artifact

from components import pipeline, validation
from components.lake import RawLayer, ValidatedLayer


@task(name="check-batch", task_run_name="check-{raw.spec}-{names[0]}")
def check_batch(raw: RawLayer, names: list[str]) -> list[validation.Finding]:
    """The events suite on one batch of partitions (days or months), which the task reads from the lake."""
    return validation.check_batch(raw, names)


def check_batches(raw: RawLayer, lake: str) -> list[list[validation.Finding]] | None:
    """Every batch of partitions as its own task, submitted together: they run in parallel
    on the flow's task runner (on Dask's workers with the dask runner). None: validated before."""
    batches = validation.pending(raw, lake)
    if batches is None:
        return None
    runs = [check_batch.submit(raw, names) for names in batches]
    return [r.result() for r in runs]


@task(name="validate", task_run_name="validate-{raw.spec}")
def validate(raw: RawLayer, lake: str, checked: list[list[validation.Finding]] | None = None) -> ValidatedLayer:
    """02_validated: the expectation suites (the events suite's findings per batch: ``checked``);
    a critical failure stops the flow here."""
    out = pipeline.validate(raw, lake, checked)
    if out.warnings:
        create_markdown_artifact(
            "\n".join(f"- {w}" for w in out.warnings),
            key="validation-warnings",
            description="Warning expectations that failed; the run went on.",
        )
    return out
