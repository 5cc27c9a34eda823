from prefect import task

from components import features
from tasks._retry import IO_RETRIES


@task(name="features", **IO_RETRIES)
def build_features(validated: dict, lake: str) -> dict:
    """03_features: id vocabularies and time-ordered user sequences."""
    return features.build_features(validated, lake)
