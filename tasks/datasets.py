from prefect import task

from components import datasets
from tasks._retry import IO_RETRIES


@task(name="datasets", **IO_RETRIES)
def build_datasets(features: dict, lake: str, folds: int, seed: int) -> dict:
    """04_datasets: leave-one-out targets and user folds."""
    return datasets.build_datasets(features, lake, folds, seed)
