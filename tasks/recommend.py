from prefect import task

from components import pipeline
from components.lake import DatasetLayer, RecommendationsLayer
from tasks._retry import IO_RETRIES


@task(name="recommend", **IO_RETRIES, task_run_name="recommend-top{k}")
def recommend(
    dataset: DatasetLayer, families: list[str], lake: str, k: int, family: str | None, explore_share: float = 0.0
) -> RecommendationsLayer:
    """06_recommendations: top-k per user from the serving champion (optionally with exploration)."""
    return pipeline.recommend(dataset, families, lake, k, family, explore_share)
