from prefect import get_run_logger, task

from components import pipeline, tuning
from components.lake import DatasetLayer


@task(name="tune-trial", tags=["training"], task_run_name="tune-{s.family}-{i}")
def tune_trial(
    dataset: DatasetLayer,
    s: tuning.TuneSettings,
    lake: str,
    parent_run_id: str,
    tags: dict,
    deadline: float | None,
    i: int,
) -> dict | None:
    """One trial of the study in its own training process (no retry: a failed trial is failed in
    the study, and the next ``tune`` run runs its share of the budget again)."""
    return pipeline.tune_trial(dataset, s, lake, parent_run_id, tags, deadline, on_epoch=get_run_logger().info)


def tune_trials(
    dataset: DatasetLayer, s: tuning.TuneSettings, lake: str, parent_run_id: str, tags: dict, deadline, n: int
) -> list[dict | None]:
    """``n`` trials as tasks, submitted together: the flow's task runner runs as many at once as it
    has workers (each asks the study for its settings when it starts)."""
    runs = [tune_trial.submit(dataset, s, lake, parent_run_id, tags, deadline, i) for i in range(n)]
    return [r.result() for r in runs]
