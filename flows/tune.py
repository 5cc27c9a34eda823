"""The tune flow (DESIGN.md §11): an Optuna study of one family's settings on a spec's data,
each trial a training like any other, the best settings written for the nightly run."""

from __future__ import annotations

import dataclasses
import os

from prefect import flow
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run as prefect_flow_run
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from components import pipeline, runlock, training, tuning
from components.config import TrainConfig, default_lake
from components.tracking import home
from flows.nightly import TASKS, Accelerator, Family, Precision, Strategy, run_name, tag_run
from tasks.ingest import spec_name
from tasks.tune import tune_trials

TRIAL_WORKERS = int(os.environ.get("INTERESTFLOW_TRIAL_WORKERS", "1"))
"""Trials that run at once (each its own training process; a GPU machine can take several)."""
TUNE_TASKS = dataclasses.replace(TASKS, tune_trials=tune_trials)


@flow(
    name="tune",
    flow_run_name=run_name("tune"),
    task_runner=ThreadPoolTaskRunner(max_workers=TRIAL_WORKERS),
    log_prints=True,
)
def tune(
    spec: str = "specs/beauty_sample.yaml",
    lake: str | None = None,
    family: Family = "mf",
    trials: int = 20,
    timeout: float | None = None,
    folds: int = 3,
    fold: int = 0,
    max_epochs: int = 30,
    patience: int = 5,
    batch_size: int = 512,
    seed: int = 0,
    accelerator: Accelerator = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    strategy: Strategy = "auto",
    precision: Precision = "auto",
    model: dict | None = None,
    random_trials: int = 5,
    prune: bool = True,
    prune_after_trials: int = 2,
    prune_warmup_epochs: int = 2,
) -> pipeline.TuneResult:
    """Search a family's settings with Optuna; the best become its settings for the nightly run.

    Args:
        spec: Dataset spec (YAML) whose data the study tunes on (a study per spec and family).
        lake: Lake root: a local folder or s3://bucket/prefix (default: $INTERESTFLOW_LAKE or var/lake).
        family: Model family to tune (its search space: `search_space` in components/models/<family>.py).
        trials: Finished trials the study should have; a study that was stopped runs only the rest.
        timeout: Seconds after which no new trial starts (a running one finishes).
        folds: The dataset's cross-validation folds (the nightly run's, so the data layers are shared).
        fold: The fold whose validation targets score every trial (test targets never do).
        max_epochs: Epoch budget per trial; early stopping on validation NDCG@10 may end it sooner.
        patience: Early-stopping patience in epochs.
        batch_size: Users per training batch.
        seed: Seed for folds, weights, shuffling and the sampler.
        accelerator: Lightning accelerator: auto, cpu or gpu.
        devices: Devices per node; more than one trains with DDP.
        num_nodes: Nodes for multi-node DDP.
        strategy: Lightning strategy (auto: ddp when devices x nodes > 1).
        precision: auto (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision.
        model: Config overrides every trial keeps (not searched), e.g. {"objective": "masked"}.
        random_trials: Trials drawn at random before the TPE sampler models the results.
        prune: End a trial whose validation curve is below the median of earlier trials at the same epoch.
        prune_after_trials: Finished trials before any trial is pruned.
        prune_warmup_epochs: Epochs every trial trains before it can be pruned.
    """
    tag_run(spec, [family])
    settings = tuning.TuneSettings(
        family=family,
        trials=trials,
        timeout_s=timeout,
        folds=folds,
        fold=fold,
        train=TrainConfig(
            max_epochs=max_epochs,
            patience=patience,
            batch_size=batch_size,
            seed=seed,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=precision,
        ),
        model=model or {},
        study=tuning.StudyConfig(
            random_trials=random_trials,
            prune=prune,
            prune_after_trials=prune_after_trials,
            prune_warmup_epochs=prune_warmup_epochs,
            seed=seed,
        ),
    )
    tags = {"interestflow.flow_run_id": prefect_flow_run.id}
    study = tuning.study_name(spec_name(spec), family)
    try:
        # One run per study at a time (not per home: a study of hours must not hold the nightly up).
        with runlock.hold(home() / "tune" / study, f"tune {study} ({prefect_flow_run.id})"), training.stoppable():
            out = pipeline.tune(spec, lake or default_lake(), settings, tags, stages=TUNE_TASKS)
    except (KeyboardInterrupt, TerminationSignal) as e:
        signal_name = "SIGTERM" if isinstance(e, TerminationSignal) else "SIGINT"
        return Cancelled(
            message=f"stopped by {signal_name}: the running trials' trainings ended; the next tune of {study} "
            "runs them again, from their last checkpoints"
        )
    best = f"best trial {out.best['trial']}: val NDCG@10 {out.best['val_ndcg10']:.4f}" if out.best else "none completed"
    where = f" -> {out.settings.uri} (v{out.settings.version})" if out.settings else ""
    print(f"study {out.study}: {out.finished} trials finished ({out.ran} now), {best}{where}")
    return out
