from prefect import task

from components import training


@task(
    name="train-fold", retries=1, retry_delay_seconds=10, tags=["training"], task_run_name="train-{family}-fold{fold}"
)
def train_fold(dataset: dict, family: str, fold: int, train_config: dict, lake: str, tags: dict) -> dict:
    """One cross-validation fold in its own process; a retry resumes from the lake checkpoint."""
    return training.run_stage(dataset, family, "fold", train_config, lake, None, fold=fold, extra_tags=tags)


@task(name="train-final", retries=1, retry_delay_seconds=10, tags=["training"], task_run_name="train-{family}-final")
def train_final(dataset: dict, family: str, folds: list[dict], train_config: dict, lake: str, tags: dict) -> dict:
    """Final fit on everything but the test targets, for the epochs the folds chose."""
    cv = training.summarize_folds(folds)
    result = training.run_stage(
        dataset, family, "final", train_config, lake, None, epochs=cv["epochs"], extra_tags=tags
    )
    return {**result, "cv": cv, "fold_metrics": training.fold_metrics(folds)}
