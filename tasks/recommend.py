from prefect import task

from components import recommend as rec
from tasks._retry import IO_RETRIES


@task(name="recommend", **IO_RETRIES)
def recommend(
    dataset: dict, families: list[str], lake: str, k: int, family: str | None, explore_share: float = 0.0
) -> dict:
    """06_recommendations: top-k per user from the serving champion (optionally with exploration)."""
    return rec.batch_recommendations(dataset, families, lake, k, family, explore_share)
