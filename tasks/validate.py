from prefect import task
from prefect.artifacts import create_markdown_artifact

from components import pipeline
from components.lake import RawLayer, ValidatedLayer


@task(name="validate", task_run_name="validate-{raw.spec}")
def validate(raw: RawLayer, lake: str) -> ValidatedLayer:
    """02_validated: run the expectation suites; a critical failure stops the flow here."""
    out = pipeline.validate(raw, lake)
    if out.warnings:
        create_markdown_artifact(
            "\n".join(f"- {w}" for w in out.warnings),
            key="validation-warnings",
            description="Warning expectations that failed; the run went on.",
        )
    return out
