from prefect import task

from components import pipeline
from components.lake import DatasetLayer, ReviewsLayer
from components.promotion import GateConfig
from tasks._retry import IO_RETRIES


@task(name="reviews", **IO_RETRIES, task_run_name="reviews-{dataset.features.validated.raw.spec}")
def analyse_reviews(
    dataset: DatasetLayer, lake: str, overrides: dict | None, gate: GateConfig, tags: dict, register: bool
) -> ReviewsLayer | None:
    """What the reviews say: sentiment (beside VADER) and topics; the sentiment model through the gate."""
    return pipeline.analyse_reviews(dataset, lake, overrides, gate, tags, register)
