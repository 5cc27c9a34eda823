from prefect import task

from components import profiles
from tasks._retry import IO_RETRIES


@task(name="profiles", **IO_RETRIES)
def build_profiles(
    dataset: dict, lake: str, overrides: dict, model_uri: str | None, test_recommendations: dict, tags: dict
) -> dict:
    """07_profiles: interests, drift, churn risk, next-category accuracy, exploration table."""
    return profiles.profile_stage(dataset, lake, overrides, model_uri, test_recommendations, tags)
