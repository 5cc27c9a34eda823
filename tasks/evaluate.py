from prefect import task

from components import pipeline
from components.lake import DatasetLayer, ModelResult, TestReport
from tasks._retry import IO_RETRIES


@task(name="evaluate", **IO_RETRIES, task_run_name="evaluate-{final.family}")
def evaluate(dataset: DatasetLayer, final: ModelResult, folds: list[ModelResult], lake: str) -> TestReport:
    """Test figures of the logged model beside popularity; writes the test-time top-10."""
    return pipeline.evaluate(dataset, final, folds, lake)
