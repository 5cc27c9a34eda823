from prefect import task
from prefect.artifacts import create_markdown_artifact

from components import validation


@task(name="validate")
def validate(raw: dict, lake: str) -> dict:
    """02_validated: run the expectation suites; a critical failure stops the flow here."""
    out = validation.validate(raw, lake)
    if out["warnings"]:
        create_markdown_artifact(
            "\n".join(f"- {w}" for w in out["warnings"]),
            key="validation-warnings",
            description="Warning expectations that failed; the run went on.",
        )
    return out
