from prefect import task

from components import tracking
from tasks._retry import IO_RETRIES


@task(name="register", **IO_RETRIES, task_run_name="register-{report[family]}")
def register(report: dict, dataset: dict) -> dict:
    """A new model version with alias challenger."""
    return tracking.register_challenger(report, dataset["data_hash"])
