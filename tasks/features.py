from prefect import task

from components import features
from tasks._retry import IO_RETRIES


@task(name="features", **IO_RETRIES)
def build_features(validated: dict, lake: str) -> dict:
    """03_features: id vocabularies and time-ordered user sequences."""
    return features.build_features(validated, lake)


@task(name="item-text", **IO_RETRIES)
def embed_items(features: dict, lake: str) -> dict:
    """03_features text layer: MiniLM embeddings of item texts, only for texts not cached yet."""
    from components import text

    return text.embed_items(features, lake)
