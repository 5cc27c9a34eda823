"""Hyper-parameter search (DESIGN.md §11): an Optuna study per dataset spec and family.

Each trial is a training like any other (components/pipeline.py ``tune_trial``: its own
process, lake checkpoints, an MLflow run, here a child of the study's ``tune`` run) of one
cross-validation fold: it learns from everything but that fold's validation targets (and
every test target) and scores on the fold's validation targets, so no test target enters
a study. Optuna's TPE sampler proposes each trial's settings from the family's
``search_space`` (a :class:`~components.models.contract.Search` range per config field,
declared beside the config in the family's own file); its median pruner, fed the
validation NDCG@10 after every epoch, ends a trial whose curve is below the median of the
earlier trials' at the same epoch.

The study lives in a durable Optuna storage, ``INTERESTFLOW_OPTUNA_STORAGE`` (a database
URL; the team stack points it at an ``optuna`` database on MLflow's Postgres). The default
is ``optuna.db`` beside MLflow's ``mlflow.db`` in INTERESTFLOW_HOME, not inside it: both
libraries keep their schema revision in a table named ``alembic_version``, so one file
would confuse their migrations. A killed study resumes: the trial it was running is
marked failed and its settings queued again, and that trial's training resumes from its
last checkpoint in the lake (same data, same settings: the same checkpoint key).

The best trial's settings become a new version of ``09_settings/<spec>/<family>``
(components/lake.py) that the nightly run reads; its ``model`` parameter still overrides.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from components import lake, storage, tracking
from components.config import TrainConfig
from components.models import MODELS

log = logging.getLogger("interestflow")

STORAGE_ENV = "INTERESTFLOW_OPTUNA_STORAGE"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trials that count towards a study's budget (a failed one is run again)."""
MODEL_ATTR = "model"
"""A trial's user attribute: the family config overrides it trained with (searched and fixed)."""


def storage_url() -> str:
    """The studies' database: ``INTERESTFLOW_OPTUNA_STORAGE``, or ``optuna.db`` in INTERESTFLOW_HOME."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{tracking.home() / 'optuna.db'}"


def study_name(spec: str, family: str) -> str:
    return f"{spec}-{family}"


@dataclass(frozen=True)
class StudyConfig:
    """How a study searches and prunes."""

    random_trials: int = 5
    """TPE's first trials, drawn at random before it models the results."""
    prune: bool = True
    """End trials whose validation curve falls below the median (Optuna's MedianPruner)."""
    prune_after_trials: int = 2
    """Finished trials before the pruner ends any."""
    prune_warmup_epochs: int = 2
    """Epochs every trial trains before it can be ended."""
    seed: int = 0
    """The sampler's seed."""


@dataclass(frozen=True)
class TuneSettings:
    """What ``interestflow tune`` is asked to do (the tune flow's parameters, typed)."""

    family: str = "mf"
    trials: int = 20
    """Finished trials (completed or pruned) the study should have; a resumed study runs the rest."""
    timeout_s: float | None = None
    """No new trial starts after this many seconds (a running one finishes)."""
    folds: int = 3
    """The dataset's cross-validation folds (the nightly run's, so the layer is shared)."""
    fold: int = 0
    """The fold whose validation targets score every trial."""
    train: TrainConfig = TrainConfig()
    """Epoch budget, patience and the rest of each trial's training."""
    model: dict = field(default_factory=dict)
    """Family config overrides every trial keeps (not searched), e.g. {"objective": "masked"}."""
    enqueue: tuple[dict, ...] = ()
    """Settings the study tries before its sampler's own (:func:`enqueue`)."""
    study: StudyConfig = StudyConfig()


def distributions(family: str, fixed: dict | None = None) -> dict[str, BaseDistribution]:
    """The family's ``search_space`` as Optuna distributions; the config field's type (int or
    float, from its default) decides which. A field in ``fixed`` (the overrides every trial
    keeps, ``--model``) is not searched: the value given is the one every trial trains with."""
    defaults = MODELS[family].Config()
    out: dict[str, BaseDistribution] = {}
    for name, s in MODELS[family].search_space.items():
        if not hasattr(defaults, name):
            raise ValueError(f"{family}.search_space names {name!r}, which is not a field of {type(defaults).__name__}")
        if name in (fixed or {}):
            continue
        default = getattr(defaults, name)
        if s.choices:
            out[name] = CategoricalDistribution(s.choices)
        elif isinstance(default, int) and not isinstance(default, bool):
            out[name] = IntDistribution(int(s.low), int(s.high), log=s.log)
        else:
            out[name] = FloatDistribution(float(s.low), float(s.high), log=s.log)
    return out


_OPEN: dict[tuple, optuna.Study] = {}
_OPEN_LOCK = threading.Lock()


def open_study(name: str, cfg: StudyConfig = StudyConfig()) -> optuna.Study:
    """The study ``name`` in :func:`storage_url`, created the first time, loaded after.

    One Study object per process (the trials' threads share it): its sampler's random state
    must move on from trial to trial, and a sampler made afresh for each trial with the same
    seed would propose the same settings every time. The seed is offset by the trials the
    study already has, so a resumed study (or another process) does not repeat the first draws."""
    key = (storage_url(), name, cfg)
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = _create(name, cfg)
        return _OPEN[key]


def _create(name: str, cfg: StudyConfig) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log says what each trial did
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=cfg.prune_after_trials, n_warmup_steps=cfg.prune_warmup_epochs)
        if cfg.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=name, storage=storage_url(), pruner=pruner, direction="maximize", load_if_exists=True
    )
    # constant_liar: trials running side by side are told apart while they run.
    study.sampler = optuna.samplers.TPESampler(
        n_startup_trials=cfg.random_trials, seed=cfg.seed + len(study.get_trials(deepcopy=False)), constant_liar=True
    )
    return study


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def recover(study: optuna.Study) -> list[int]:
    """Trials a killed study left running: each is marked failed and its settings are queued
    again (the next trial takes them, and its training resumes from the lake checkpoint).
    Call it while holding the study's lock: a running trial is then a dead one."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return [t.number for t in stale]


def enqueue(study: optuna.Study, family: str, settings: tuple[dict, ...], fixed: dict | None = None) -> list[dict]:
    """Queue ``settings`` (each searched fields and values; the fields left out are drawn) as the
    study's next trials (Optuna's ``enqueue_trial``): today's defaults, say, so that the study
    never ends below them, or settings known to work on another log. Settings the study
    already has, run or queued, are not queued again. Raises ValueError, queuing nothing,
    for a field the family does not search, a value outside its range, or settings the
    family refuses (with ``fixed``, the overrides every trial keeps, which are not searched).
    Returns those queued."""
    space = distributions(family, fixed)
    for p in settings:
        where = f"tune {family}: enqueued settings {json.dumps(p, sort_keys=True)}"
        if unknown := sorted(set(p) - set(space)):
            raise ValueError(f"{where}: {unknown} not searched (the search space: {sorted(space)})")
        for name, value in p.items():
            d = space[name]
            inside = value in d.choices if isinstance(d, CategoricalDistribution) else d.low <= value <= d.high
            if not inside:
                bounds = list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]
                raise ValueError(f"{where}: {name}={value!r} is outside the search space {bounds}")
        MODELS[family].Config(**{**(fixed or {}), **p})  # raises ValueError: a combination the family refuses
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    for p in settings:
        study.enqueue_trial(p, skip_if_exists=True)
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return [t.params or t.system_attrs.get("fixed_params", {}) for t in queued if t.number not in before]


class Pruning:
    """``stop_if`` for a trial's training: reports each epoch's validation NDCG@10 to the
    trial and says whether the pruner ends it."""

    def __init__(self, trial: optuna.Trial):
        self.trial, self.reported = trial, set()

    def report(self, row: dict) -> None:
        if "val_ndcg10" in row and row["epoch"] not in self.reported:
            self.trial.report(float(row["val_ndcg10"]), int(row["epoch"]))
            self.reported.add(row["epoch"])

    def __call__(self, row: dict) -> bool:
        self.report(row)
        return self.trial.should_prune()


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


# -- the settings file ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tuned:
    """One version of a family's tuned settings for a spec."""

    spec: str
    family: str
    version: int
    model: dict
    """The family config overrides the nightly run trains with."""
    study: str
    trial: int
    val_ndcg10: float
    uri: str
    data_hash: str = ""
    written: str = ""
    tune_run_id: str = ""

    @property
    def label(self) -> str:
        """How a run and a model version record it: ``<spec>/<family> v<N> (study trial T)``."""
        return f"{self.spec}/{self.family} v{self.version} (study {self.study} trial {self.trial})"


def read_settings(root: str, spec: str, family: str) -> Tuned | None:
    """The current tuned settings of ``family`` for ``spec``, or None (never tuned)."""
    pointer = storage.join(lake.settings_uri(root, spec, family), "current.json")
    if not storage.exists(pointer):
        return None
    return Tuned(**storage.read_json(storage.read_json(pointer)["uri"]))


def write_settings(root: str, spec: str, family: str, study: optuna.Study, data_hash: str, run_id: str) -> Tuned | None:
    """The study's best trial as a new version of the family's settings (v0001.json, ...,
    then ``current.json`` naming it), unless it is already the current one. None: no trial
    has completed."""
    best = best_trial(study)
    if best is None:
        return None
    current = read_settings(root, spec, family)
    if current and (current.study, current.trial) == (study.study_name, best.number):
        return current
    version = current.version + 1 if current else 1
    folder = lake.settings_uri(root, spec, family)
    uri = storage.join(folder, f"v{version:04d}.json")
    tuned = Tuned(
        spec=spec,
        family=family,
        version=version,
        model=best.user_attrs[MODEL_ATTR],
        study=study.study_name,
        trial=best.number,
        val_ndcg10=float(best.value),
        uri=uri,
        data_hash=data_hash,
        written=datetime.now(UTC).isoformat(timespec="seconds"),
        tune_run_id=run_id,
    )
    storage.write_json(asdict(tuned), uri)  # the version first, the pointer last (each write is atomic)
    storage.write_json({"version": version, "uri": uri}, storage.join(folder, "current.json"))
    return tuned


# -- what a study shows --------------------------------------------------------------------------
def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, validation NDCG@10, epochs reported, minutes, settings."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60 if t.datetime_complete else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "val_ndcg10": t.value,
                "epochs": len(t.intermediate_values),
                "minutes": minutes,
                **{f"param.{k}": v for k, v in t.params.items()},
            }
        )
    return pd.DataFrame(rows)


def best_lines(study: optuna.Study, n: int = 5) -> list[str]:
    """The ``n`` best completed trials, one line each (``interestflow tune --show``)."""
    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    return [f"trial {t.number}: val_ndcg10 {t.value:.4f}  {json.dumps(t.params, sort_keys=True)}" for t in done[:n]]


def log_study(run_id: str, study: optuna.Study) -> None:
    """To the study's MLflow run: the trials table, the best figures, and Optuna's plots of the
    optimisation history, the trials' curves and (with two completed trials or more) the
    parameters' importance."""
    from optuna.visualization import matplotlib as plots

    frame = trials_frame(study)
    tracking.log_table(run_id, frame, "trials.json")
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    best = best_trial(study)
    tracking.log_metrics(
        run_id,
        {
            "trials_complete": counts.get("COMPLETE", 0),
            "trials_pruned": counts.get("PRUNED", 0),
            "trials_failed": counts.get("FAIL", 0),
            **({"best_val_ndcg10": best.value, "best_trial": best.number} if best else {}),
        },
    )
    if best:
        tracking.set_tags(run_id, {"interestflow.best_params": json.dumps(best.params, sort_keys=True)})
    figures = {
        "optimization_history.png": plots.plot_optimization_history,
        "intermediate_values.png": plots.plot_intermediate_values,
    }
    if counts.get("COMPLETE", 0) >= 2:
        figures["param_importances.png"] = plots.plot_param_importances
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for path, plot in figures.items():
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances when every trial had the same value
                log.info("tune: %s not plotted (%s)", path, e)
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            tracking.log_figure(run_id, fig, path)
