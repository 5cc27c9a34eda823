from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from components import report


@task(name="report")
def publish(results: list[dict], recommendations: dict | None, data_hash: str, profiles: dict | None = None) -> str:
    """The run summary and the leaderboard as Prefect artifacts."""
    md = report.markdown(results, recommendations, data_hash, profiles)
    create_markdown_artifact(md, key="nightly-summary", description="CV, test figures and promotion decisions")
    create_table_artifact(report.leaderboard(results), key="leaderboard", description="Per family figures")
    return md
