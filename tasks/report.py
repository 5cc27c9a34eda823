from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from components import pipeline, report


@task(name="report", task_run_name="report")
def publish(results: list, recommendations, data_hash: str, profiles=None, reviews=None, root: str = "") -> str:
    """The run summary and the leaderboard as Prefect artifacts."""
    md = pipeline.report(results, recommendations, data_hash, profiles, reviews, root)
    create_markdown_artifact(md, key="nightly-summary", description="CV, test figures and promotion decisions")
    create_table_artifact(report.leaderboard(results), key="leaderboard", description="Per family figures")
    return md
