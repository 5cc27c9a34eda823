from prefect import task

from components import pipeline
from components.lake import DatasetLayer, ProfilesLayer, ReviewsLayer
from tasks._retry import IO_RETRIES


@task(name="profiles", **IO_RETRIES, task_run_name="profiles-{dataset.features.validated.raw.spec}")
def build_profiles(
    dataset: DatasetLayer,
    lake: str,
    overrides: dict,
    model_uri: str | None,
    test_recommendations: dict,
    tags: dict,
    reviews: ReviewsLayer | None = None,
) -> ProfilesLayer:
    """07_profiles: interests, drift, churn risk, next-category accuracy, exploration table,
    and what the user's reviews say (sentiment, topics) when the log has reviews."""
    return pipeline.build_profiles(dataset, lake, overrides, model_uri, test_recommendations, tags, reviews)
