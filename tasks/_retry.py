"""Retry policy shared by the tasks that do I/O (lake, MLflow): exponential backoff with jitter.

Bad data is not transient: a spec or validation error is never retried.
"""

from prefect.tasks import exponential_backoff

from components.events import SpecError
from components.validation import DataValidationError


def transient(task, task_run, state) -> bool:
    """Retry unless the failure is a data or request error (ValueError included), which a
    retry cannot fix."""
    return not isinstance(state.result(raise_on_failure=False), SpecError | DataValidationError | ValueError)


IO_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient,
)
