from prefect import task

from components import evaluation
from tasks._retry import IO_RETRIES


@task(name="evaluate", **IO_RETRIES, task_run_name="evaluate-{final[family]}")
def evaluate(dataset: dict, final: dict, lake: str) -> dict:
    """Test figures of the logged model beside popularity; writes the test-time top-10."""
    return evaluation.evaluate_final(dataset, final, lake, final["cv"])
