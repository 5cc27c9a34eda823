from prefect import task

from components import pipeline
from components.lake import DatasetLayer, FeatureLayer
from tasks._retry import IO_RETRIES


@task(name="datasets", **IO_RETRIES, task_run_name="datasets-k{folds}-s{seed}")
def build_datasets(features: FeatureLayer, lake: str, folds: int, seed: int) -> DatasetLayer:
    """04_datasets: leave-one-out targets and user folds."""
    return pipeline.build_datasets(features, lake, folds, seed)
