from prefect import task

from components import pipeline
from components.lake import Registered, TestReport
from tasks._retry import IO_RETRIES


@task(name="register", **IO_RETRIES, task_run_name="register-{report.family}")
def register(report: TestReport) -> Registered:
    """A new model version with alias challenger."""
    return pipeline.register(report)
