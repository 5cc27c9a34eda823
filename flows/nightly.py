"""The nightly retrain: raw events -> validated -> features (+ item text) -> datasets -> CV
training -> test -> registry -> promotion -> recommendations -> profiles (DESIGN.md §2, §8);
and the tune flow, whose best settings the nightly run trains with (DESIGN.md §11)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run as prefect_flow_run
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from components import pipeline, runlock, training, tuning
from components.config import RUNNER_ENV, TASK_RUNNERS, TrainConfig, default_lake
from components.events import InputNotReady, SpecError, check_ready
from components.profiles import ProfileConfig  # noqa: F401 - named in the docstring of ``profile``
from components.promotion import GateConfig
from components.storage import S3NotConfigured
from components.tracking import home
from components.validation import DataValidationError
from tasks.datasets import build_datasets
from tasks.evaluate import evaluate
from tasks.features import build_features, embed_items, embed_reviews
from tasks.ingest import ingest, spec_name
from tasks.profiles import build_profiles
from tasks.promote import promote
from tasks.recommend import recommend
from tasks.register import register
from tasks.report import publish
from tasks.reviews import analyse_reviews
from tasks.train import train_final, train_folds
from tasks.tune import tune_trials
from tasks.validate import check_batches, validate

# The pipeline's stages as Prefect tasks: the flows run components/pipeline.py's one data path
# through these (retries, logs, artifacts), the benchmarks and tests run it with pipeline.PLAIN.
TASKS = pipeline.Stages(
    ingest=ingest,
    check_batches=check_batches,
    validate=validate,
    features=build_features,
    item_text=embed_items,
    review_text=embed_reviews,
    datasets=build_datasets,
    reviews=analyse_reviews,
    train_folds=train_folds,
    train_final=train_final,
    evaluate=evaluate,
    register=register,
    promote=promote,
    recommend=recommend,
    profiles=build_profiles,
    report=publish,
)

REJECTIONS = (SpecError, DataValidationError, S3NotConfigured)
"""Bad data, a bad spec, missing settings: the CLI exits 2 on these."""
EXPECTED = (*REJECTIONS, runlock.RunLocked, InputNotReady)
"""Failures whose message is the whole story (what, where, what to do): a traceback adds nothing."""


class _NoTracebackForExpected(logging.Filter):
    """Prefect logs every task and flow failure with its traceback (to the terminal and the
    UI); for an expected failure the message says it all, so its log record loses the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_NoTracebackForExpected())


class _ToRunLog(logging.Handler):
    """components/ log to the stdlib loggers ``interestflow`` and ``components.*`` (they import
    no Prefect): inside a flow or task run their records go to that run's log (the terminal
    and the Prefect UI), so each stage says what it found and did. Outside a run, records go
    on to the root logger's handlers at its level, as if they had propagated.

    Written here rather than with ``PREFECT_LOGGING_EXTRA_LOGGERS``: that setting is read when
    Prefect configures logging, before a worker imports this flow, and its API handler warns
    on every record outside a run (the benchmarks and tests call the stages directly)."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        try:
            if TaskRunContext.get() is None and FlowRunContext.get() is None:
                root = logging.getLogger()  # as if it had propagated, at the root's own level
                if record.levelno >= root.getEffectiveLevel():
                    root.handle(record)
                return
            get_run_logger().log(record.levelno, record.getMessage(), exc_info=record.exc_info)
        except Exception:  # noqa: BLE001 - a log line never stops a stage
            self.handleError(record)


for _name in ("interestflow", "components"):  # pipeline.py's logger, and each component's own
    _pipeline_log = logging.getLogger(_name)
    if not any(type(h).__name__ == "_ToRunLog" for h in _pipeline_log.handlers):  # once, even if re-imported
        _pipeline_log.addHandler(_ToRunLog(logging.INFO))
        _pipeline_log.setLevel(logging.INFO)
        _pipeline_log.propagate = False  # in a run the run logger prints it once; outside, the handler passes it on

Family = Literal["mf", "lstm", "cnn", "bert"]  # the keys of components.models.MODELS (a test checks)
ServeFamily = Literal[Family, None]  # flattens to one enum: mf, lstm, cnn, bert, null
"""A family, or None (the best test NDCG@10): one enum with null, which the Prefect UI shows as
one dropdown (``Family | None`` is a union there: a type switch that starts on "None")."""
# Lightning's settings that the flow offers (the Prefect UI shows them as dropdowns)
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
Strategy = Literal["auto", "ddp", "ddp_spawn"]
Precision = Literal["auto", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true"]
# Fold trainings run concurrently up to this many at a time (each is its own process).
FOLD_WORKERS = int(os.environ.get("INTERESTFLOW_FOLD_WORKERS", "1"))
DASK_ADDRESS_ENV = "INTERESTFLOW_DASK_ADDRESS"  # a running Dask scheduler (tcp://host:8786); unset: a local cluster
Runner = Literal["threads", "dask"]


def task_runner(kind: Runner | None = None, workers: int = FOLD_WORKERS, address: str | None = None):
    """The task runner that the fold trainings and tuning trials (the tasks a flow submits) run on.

    ``threads`` (the default, or $INTERESTFLOW_TASK_RUNNER): Prefect's thread pool, ``workers``
    at a time, each training its own process on this machine. ``dask``: prefect-dask's runner
    on the Dask scheduler at ``address`` ($INTERESTFLOW_DASK_ADDRESS: infra/'s dask-scheduler),
    or without one on a local cluster of ``workers`` worker processes; each task then runs in a
    Dask worker, which starts the training process on its own machine (the lake and MLflow
    must be shared: S3 and a tracking server, as in infra/).
    """
    kind = kind or os.environ.get(RUNNER_ENV) or "threads"
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind not in TASK_RUNNERS:
        raise SpecError(f"{RUNNER_ENV}={kind!r}: the task runner is one of {', '.join(TASK_RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    address = address or os.environ.get(DASK_ADDRESS_ENV)
    if address:
        return DaskTaskRunner(address=address)
    # One thread per worker process: a training is a process of its own, and a worker runs one at a time.
    return DaskTaskRunner(
        cluster_class=local_dask_cluster,
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True},
    )


def local_dask_cluster(**kwargs):
    """``distributed.LocalCluster(**kwargs)``, leaving this process's environment as it was.
    Dask's nannies set OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) in the starting process's
    environment for their workers and never unset it: every training this process started
    afterwards (the final fits) would run on one thread."""
    from distributed import LocalCluster

    saved = dict(os.environ)
    try:
        return LocalCluster(**kwargs)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _stopped(signal: BaseException, what: str) -> Cancelled:
    """The state a flow run ends in when SIGINT or SIGTERM stopped it (the CLI exits 1 with it)."""
    return Cancelled(message=f"stopped by {'SIGTERM' if isinstance(signal, TerminationSignal) else 'SIGINT'}: {what}")


RERUN_PREFIX = "rerun-"
"""Names the runs that prefect.yaml's automation starts again after a failure (it skips them)."""


def run_name(prefix: str) -> Callable[[], str]:
    """A flow's run names: ``<prefix>-<spec>-<UTC date and time>`` (``<prefix>-<date and time>``
    for a flow without a spec), ``rerun-`` first for the automation's re-run of a failed night."""

    def name() -> str:
        params = prefect_flow_run.parameters
        spec = f"-{spec_name(params['spec'])}" if params.get("spec") else ""
        family = f"-{params['family']}" if params.get("family") else ""
        again = RERUN_PREFIX if params.get("rerun_of") else ""
        return f"{again}{prefix}{spec}{family}-{datetime.now(UTC):%Y-%m-%d-%H%M}"

    return name


def tag_run(spec: str, families) -> None:
    """The flow run's tags name its spec and families (``spec:<name>``, ``family:<f>``), to
    filter runs by in the Prefect UI whether the CLI or a deployment started them. Tags are
    for people: an API that does not take them is a warning, not a failed night."""
    try:
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(prefect_flow_run.id)
            wanted = {f"spec:{spec_name(spec)}", *(f"family:{f}" for f in families)}
            c.update_flow_run(run.id, tags=sorted({*run.tags, *wanted}))
    except Exception as e:  # noqa: BLE001
        get_run_logger().warning(f"the flow run's tags were not set ({type(e).__name__}: {e})")


def _scheduled_time(rerun_of: str | None) -> datetime:
    """When this night was meant to start: the first state's scheduled time (a deployment
    run's schedule slot) or, for a run started by hand, when it was created; kept across
    retries, and for a re-run the failed run's (so a re-run gets no new freshness deadline)."""
    run_id = rerun_of.removeprefix("prefect.flow-run.") if rerun_of else prefect_flow_run.id
    with get_client(sync_client=True) as c:
        first = min(c.read_flow_run_states(run_id), key=lambda st: st.timestamp)
    return first.state_details.scheduled_time or first.timestamp


def _later_or_never(e: InputNotReady) -> InputNotReady:
    """Input not there yet: before the deadline, ask Prefect to run this flow run again in
    ``e.retry_s`` (one more flow retry: the server turns the failure into AwaitingRetry, a
    Scheduled state, and the run starts again then); at the deadline, the final failure."""
    log = get_run_logger()
    if datetime.now(UTC) + timedelta(seconds=e.retry_s) > e.deadline:
        return InputNotReady(f"{e}; still so at the deadline {e.deadline:%Y-%m-%d %H:%M} UTC", e.retry_s, e.deadline)
    with get_client(sync_client=True) as c:
        run = c.read_flow_run(prefect_flow_run.id)
        again = {"retries": run.run_count, "retry_delay": max(1, round(e.retry_s))}
        c.update_flow_run(run.id, empirical_policy=run.empirical_policy.model_copy(update=again))
    log.info(f"input not ready: {e}; running again in {e.retry_s:.0f} s (until {e.deadline:%Y-%m-%d %H:%M} UTC)")
    return e


@flow(
    name="nightly-retrain",
    flow_run_name=run_name("nightly"),
    task_runner=task_runner(workers=FOLD_WORKERS),
    log_prints=True,
)
def nightly(
    spec: str = "specs/beauty_sample.yaml",
    lake: str | None = None,
    families: list[Family] = ["mf"],  # noqa: B006 - Prefect renders the default in the UI
    folds: int = 3,
    max_epochs: int = 30,
    patience: int = 5,
    batch_size: int = 512,
    lr: float | None = None,
    seed: int = 0,
    accelerator: Accelerator = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    strategy: Strategy = "auto",
    precision: Precision = "auto",
    model: dict[str, dict] | None = None,
    min_gain: float = 0.0,
    tolerance: float = 0.05,
    k: int = 10,
    serve_family: ServeFamily = None,
    explore_share: float = 0.0,
    profiles: bool = True,
    profile: dict | None = None,
    reviews: dict | None = None,
    dry_run: bool = False,
    warm_start: bool | None = None,
    tuned: bool = True,
    rerun_of: str | None = None,
) -> pipeline.NightlyResult:
    """Retrain, evaluate, register and (maybe) promote each family, then recommend.

    Args:
        spec: Dataset spec (YAML) mapping the event log and catalogue onto the data contract.
        lake: Lake root: a local folder or s3://bucket/prefix (default: $INTERESTFLOW_LAKE or var/lake).
        families: Model families to train.
        folds: Cross-validation folds (users split into this many groups).
        max_epochs: Epoch budget per fold; early stopping on validation NDCG@10 may end sooner.
        patience: Early-stopping patience in epochs.
        batch_size: Users per training batch.
        lr: Learning rate (default: each family's own).
        seed: Seed for folds, weights and shuffling (logged).
        accelerator: Lightning accelerator: auto, cpu or gpu.
        devices: Devices per node; more than one trains with DDP.
        num_nodes: Nodes for multi-node DDP.
        strategy: Lightning strategy (auto: ddp when devices x nodes > 1).
        precision: auto (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision.
        model: Per-family config overrides, e.g. {"mf": {"dim": 64}}.
        min_gain: Relative NDCG@10 gain a challenger needs over the champion.
        tolerance: Allowed relative regression of guarded metrics (HR@10, MRR).
        k: Recommendations per user.
        serve_family: Family whose champion serves recommendations (default: best test NDCG@10).
        explore_share: Share of each top-k reserved for relevant items outside the user's usual categories.
        profiles: Write user interest profiles (07_profiles): interests, drift, churn risk, exploration table.
        profile: Overrides of components.profiles.ProfileConfig, e.g. {"half_life_days": 90, "drift_by": "days"}.
        reviews: Overrides of components.reviews.ReviewConfig for logs with review text, e.g. {"n_topics": 30}.
        dry_run: Train and evaluate, but register, promote and recommend nothing.
        warm_start: Start each final fit from its champion's weights where the ids overlap (default: when the
            champion was trained on other data with the same model settings).
        tuned: Train each family with its tuned settings for this spec where `interestflow tune` wrote some
            (09_settings in the lake); `model` and `lr` still override them.
        rerun_of: Set by the automation that runs a failed nightly once more: the failed flow run.
    """
    tag_run(spec, families)
    try:  # the spec's freshness rule: not there yet means "come back later", not "fail"
        check_ready(spec, _scheduled_time(rerun_of))
    except InputNotReady as e:
        raise _later_or_never(e) from None
    settings = pipeline.NightlySettings(
        families=tuple(families),
        folds=folds,
        train=TrainConfig(
            max_epochs=max_epochs,
            patience=patience,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=precision,
        ),
        model=model or {},
        gate=GateConfig(min_gain=min_gain, tolerance=tolerance),
        k=k,
        serve_family=serve_family,
        explore_share=explore_share,
        profiles=profiles,
        profile=profile or {},
        reviews=reviews or {},
        dry_run=dry_run,
        warm_start=warm_start,
        tuned=tuned,
    )
    tags = {"interestflow.flow_run_id": prefect_flow_run.id}  # MLflow run -> the Prefect run that made it
    try:
        # One run at a time on this home (lake and registry): a second one refuses, naming this
        # one. A SIGINT or SIGTERM kills the training processes (stoppable) and ends the run
        # Cancelled; a layer is only complete once its marker is written, so nothing half-made
        # looks finished, and the next run reuses what did finish.
        with runlock.hold(home(), f"flow run {prefect_flow_run.name} ({prefect_flow_run.id})"), training.stoppable():
            out = pipeline.nightly(spec, lake or default_lake(), settings, tags, stages=TASKS)
    except (KeyboardInterrupt, TerminationSignal) as e:
        return _stopped(
            e,
            "training processes ended; completed layers (and any family registered before the signal) are "
            "kept, the next run reuses them",
        )
    print(out.summary)
    return out


# -- tuning (DESIGN.md §11) ----------------------------------------------------------------------
TRIAL_WORKERS = int(os.environ.get("INTERESTFLOW_TRIAL_WORKERS", "1"))
"""Trials that run at once (each its own training process; a GPU machine can take several)."""
TUNE_TASKS = dataclasses.replace(TASKS, tune_trials=tune_trials)


@flow(
    name="tune",
    flow_run_name=run_name("tune"),
    task_runner=task_runner(workers=TRIAL_WORKERS),
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
    enqueue: list[dict] | None = None,
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
        enqueue: Settings to try first, each a JSON object of searched fields (the rest are drawn), e.g.
            today's defaults; settings the study already has are not queued again.
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
        enqueue=tuple(enqueue or ()),
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
        return _stopped(
            e, f"the running trials' trainings ended; the next tune of {study} runs them again, from their checkpoints"
        )
    best = f"best trial {out.best['trial']}: val NDCG@10 {out.best['val_ndcg10']:.4f}" if out.best else "none completed"
    where = f" -> {out.settings.uri} (v{out.settings.version})" if out.settings else ""
    print(f"study {out.study}: {out.finished} trials finished ({out.ran} now), {best}{where}")
    return out
