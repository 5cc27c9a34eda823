from prefect import task

from components import pipeline
from components.lake import FeatureLayer, ValidatedLayer
from tasks._retry import IO_RETRIES


@task(name="features", **IO_RETRIES, task_run_name="features-{validated.raw.spec}")
def build_features(validated: ValidatedLayer, lake: str) -> FeatureLayer:
    """03_features: id vocabularies and time-ordered user sequences."""
    return pipeline.build_features(validated, lake)


@task(name="item-text", **IO_RETRIES, task_run_name="item-text-{features.validated.raw.spec}")
def embed_items(features: FeatureLayer, lake: str) -> FeatureLayer:
    """03_features text layer: MiniLM embeddings of item texts, only for texts not cached yet."""
    return pipeline.embed_items(features, lake)


@task(name="review-text", **IO_RETRIES, task_run_name="review-text-{features.validated.raw.spec}")
def embed_reviews(features: FeatureLayer, lake: str) -> FeatureLayer:
    """03_features review layer: MiniLM embeddings of review texts (logs with review text only)."""
    return pipeline.embed_reviews(features, lake)
