"""Retry policy shared by the tasks: exponential backoff with jitter, for transient errors only.

A retry is for what a second try can fix: a refused or dropped connection, a timeout, an
HTTP 5xx or throttling (components/storage.py:is_transient), and a training process killed
by a signal (the retry resumes from its lake checkpoint). Bad data, a bad spec, missing
settings, a missing file or a bug fail at once: retrying them only triples the wait.
"""

from prefect.tasks import exponential_backoff

from components.storage import is_transient
from components.training import TrainingFailed


def transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry only a transient failure."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, TrainingFailed):
        return error.killed or is_transient(error)
    return isinstance(error, BaseException) and is_transient(error)


IO_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient,
)
