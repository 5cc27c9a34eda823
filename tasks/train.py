from prefect import get_run_logger, task

from components import pipeline
from components.config import TrainConfig
from components.lake import DatasetLayer, ModelResult
from tasks._retry import transient

# One retry, for a training killed by a signal or a transient lake error: it resumes from the checkpoint.
TRAIN_RETRY = dict(retries=1, retry_delay_seconds=10, retry_condition_fn=transient)


@task(name="train-fold", **TRAIN_RETRY, tags=["training"], task_run_name="train-{family}-fold{fold}")
def train_fold(dataset: DatasetLayer, family: str, fold: int, cfg: TrainConfig, lake: str, tags: dict) -> ModelResult:
    """One cross-validation fold in its own process; a retry resumes from the lake checkpoint."""
    return pipeline.train(dataset, family, "fold", cfg, lake, fold=fold, tags=tags, on_epoch=get_run_logger().info)


def train_folds(dataset: DatasetLayer, family: str, cfg: TrainConfig, lake: str, tags: dict) -> list[ModelResult]:
    """Every fold as its own task, submitted together (they run in parallel on the flow's task runner)."""
    runs = [train_fold.submit(dataset, family, f, cfg, lake, tags) for f in range(dataset.folds)]
    return [r.result() for r in runs]


@task(name="train-final", **TRAIN_RETRY, tags=["training"], task_run_name="train-{family}-final")
def train_final(
    dataset: DatasetLayer,
    family: str,
    folds: list[ModelResult],
    cfg: TrainConfig,
    lake: str,
    tags: dict,
    warm_start: bool | None = None,
) -> ModelResult:
    """Final fit on everything but the test targets, for the epochs the folds chose (from the
    champion's weights with ``warm_start``)."""
    logger = get_run_logger()
    return pipeline.train_final(dataset, family, folds, cfg, lake, tags, on_epoch=logger.info, warm_start=warm_start)
