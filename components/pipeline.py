"""The data path, written once: the stages of the nightly retrain in order, as plain functions.

    ingest -> validate -> features -> item text -> datasets            (01_raw .. 04_datasets)
    per family: train folds -> final fit -> evaluate -> register -> promote   (05_models, MLflow)
    recommend -> profiles -> report                                   (06_recommendations, 07_profiles)

Each stage takes and returns the frozen layer records of components/lake.py. :func:`nightly`
and :func:`recommend_path` run them in order through a :class:`Stages` table: :data:`PLAIN`
calls the functions below directly (benchmarks, tests, the CLI's one-user lookup);
flows/nightly.py passes the same functions wrapped as Prefect tasks (tasks/), so the flow,
the benchmarks and the tests run one data path. Nothing here imports Prefect.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from components import datasets as datasets_
from components import (
    evaluation,
    events,
    features,
    lake,
    plots,
    promotion,
    pyfunc,
    storage,
    tracking,
    training,
    tuning,
)
from components import profiles as profiles_
from components import recommend as recommend_
from components import validation as validation_
from components.behaviour import EVENT_TYPES
from components.config import PROTOCOL, TrainConfig
from components.datasets import Dataset
from components.lake import (
    DatasetLayer,
    FeatureLayer,
    ModelResult,
    ProfilesLayer,
    RawLayer,
    RecommendationsLayer,
    Registered,
    ReviewsLayer,
    TestReport,
    ValidatedLayer,
)
from components.models import MODELS
from components.profiles import ProfileConfig
from components.promotion import Decision, GateConfig
from components.recommender import Recommender

log = logging.getLogger("interestflow")
Log = Callable[[str], None]


# -- 01..04: the data stages --------------------------------------------------------------------
def ingest(spec: str, root: str, secret: events.SecretLookup | None = None) -> RawLayer:
    """01_raw: map the spec's sources onto the data contract."""
    raw = events.ingest(spec, root, secret)
    f = lake.facts(raw.uri)
    log.info(
        "ingest %s: %s events from %s and %s items from %s -> %s",
        raw.spec,
        f"{f.get('n_events', 0):,}",
        raw.events_source,
        f"{f.get('n_items', 0):,}",
        raw.items_source,
        lake.relative(root, raw.uri),
    )
    return raw


def check_batches(raw: RawLayer, root: str) -> list[list[validation_.Finding]] | None:
    """The events suite over 01_raw's batches of partitions (validation.plan), one
    validation.check_batch each: the flow submits them as tasks to its task runner. None when
    02_validated is there already."""
    batches = validation_.pending(raw, root)
    return None if batches is None else [validation_.check_batch(raw, names) for names in batches]


def validate(raw: RawLayer, root: str, checked: list[list[validation_.Finding]] | None = None) -> ValidatedLayer:
    """02_validated: the expectation suites (the events suite's findings per batch of partitions:
    ``checked``, from :func:`check_batches`); a critical failure stops here (quarantine/)."""
    validated = validation_.validate(raw, root, checked=checked)
    f = lake.facts(validated.uri)
    suites = "; ".join(
        f"suite {name}: {c['expectations']} expectations, {c['failed']} not met"
        for name, c in f.get("suites", {}).items()
    )
    log.info(
        "validate: %s; %s other checks not met; %d warnings, 0 critical; kept %s events and %s items -> %s",
        suites or "validated before",
        f.get("other_checks_failed", "?"),
        len(validated.warnings),
        f"{f.get('n_events', 0):,}",
        f"{f.get('n_items', 0):,}",
        lake.relative(root, validated.uri),
    )
    return validated


def build_features(validated: ValidatedLayer, root: str) -> FeatureLayer:
    """03_features: id vocabularies and time-ordered user sequences."""
    feats = features.build_features(validated, root)
    log.info(
        "features: vocabularies of %s users and %s items -> %s",
        f"{feats.n_users:,}",
        f"{feats.n_items:,}",
        lake.relative(root, feats.uri),
    )
    return feats


def embed_items(feats: FeatureLayer, root: str) -> FeatureLayer:
    """03_features text layer: MiniLM embeddings of the item texts the cache lacks."""
    return features.embed_items(feats, root)


def embed_reviews(feats: FeatureLayer, root: str) -> FeatureLayer:
    """03_features review layer: MiniLM embeddings of the review texts (when the log has them)."""
    return features.embed_reviews(feats, root)


def build_datasets(feats: FeatureLayer, root: str, folds: int, seed: int) -> DatasetLayer:
    """04_datasets: leave-one-out targets and user folds."""
    ds = datasets_.build_datasets(feats, root, folds, seed)
    log.info(
        "datasets: %d folds (seed %d), %s of %s users with validation and test targets -> %s",
        folds,
        seed,
        f"{ds.n_eval_users:,}",
        f"{feats.n_users:,}",
        lake.relative(root, ds.uri),
    )
    return ds


# -- 05: training ---------------------------------------------------------------------------------
def train(
    dataset: DatasetLayer,
    family: str,
    stage: str,
    cfg: TrainConfig,
    root: str,
    fold: int | None = None,
    epochs: int | None = None,
    tags: dict | None = None,
    parent_run_id: str | None = None,
    on_epoch: Log | None = None,
    warm_start: WarmStart | None = None,
    stop_if: Callable[[dict], bool] | None = None,
    run_name: str | None = None,
) -> ModelResult:
    """One training (a fold or the final fit) in its own process, as one MLflow run: params,
    live per-epoch curve, metrics, plots and, for the final fit, the logged model.

    The same data and config trained before (a re-run of the same night) reuses that
    training's result and trains nothing. ``on_epoch`` gets one line per epoch as it trains.
    ``warm_start``: start from that registered model's weights where the ids overlap.
    ``stop_if``: ends the training after an epoch whose figures it returns True for (a
    pruned search trial): the run ends KILLED and :class:`training.TrainingPruned` is raised."""
    ckpt_uri = training.checkpoint_uri(root, dataset, family, cfg, stage, fold, epochs, warm_start and warm_start.key)
    if (done := training.finished(ckpt_uri)) is not None:
        return _model_result(done, reused=True)
    model_cfg = MODELS[family].Config(**cfg.model)
    params = {
        **{f"train.{k}": v for k, v in asdict(cfg).items() if k != "model"},
        **{f"model.{k}": v for k, v in asdict(model_cfg).items()},
        **{f"protocol.{k}": v for k, v in PROTOCOL.items()},
        **{f"protocol.behaviour.{k}": v for k, v in dataset.behaviour.params().items()},
        "family": family,
        "stage": stage,
        "fold": fold if fold is not None else "",
        "epochs": epochs or "",
        "warm_start": warm_start.key if warm_start else "",
        "data_hash": dataset.data_hash,
        "dataset_uri": dataset.uri,
        "folds": dataset.folds,
    }
    run_tags = {
        "interestflow.family": family,
        "interestflow.stage": stage,
        "interestflow.data_hash": dataset.data_hash,
        **(tags or {}),
    }
    name = run_name or f"{family}-{'fold' + str(fold) if stage == 'fold' else stage}"
    run_id = tracking.create_run(name, params, run_tags, parent_run_id)
    start = f" from {warm_start.key}" if warm_start else ""
    log.info("train %s%s: MLflow run %s", name, start, tracking.run_link(run_id))
    request = {
        "dataset": asdict(dataset),
        "family": family,
        "stage": stage,
        "fold": fold,
        "epochs": epochs,
        "train_config": asdict(cfg),  # serialised here, where the training process is launched
        "run_id": run_id,
        "checkpoint_uri": ckpt_uri,
        "catalogue_uri": lake.catalogue_uri(root, dataset.features.validated.raw.spec),
    }
    try:
        if warm_start:  # the champion's bytes beside the training, for its process to read
            start = lake.file(ckpt_uri, training.WARM_START)
            storage.write_bytes(start, (warm_start.model or pyfunc.load(warm_start.model_uri)).to_bytes())
            request["warm_start"] = {"uri": start, "label": warm_start.key, "shrink": warm_start.shrink}
        result = training.launch(request, log=on_epoch or log.info, stop_if=stop_if)
        if stage == "final":
            rec = Recommender.from_bytes(storage.read_bytes(lake.file(ckpt_uri, training.RECOMMENDER)))
            example = pd.DataFrame(storage.read_json(lake.file(ckpt_uri, training.EXAMPLE)))
            result["model_uri"] = pyfunc.log(run_id, rec, example)
            training.mark_final(ckpt_uri, result)  # complete with its model: a re-run reuses it
    except training.TrainingPruned as e:
        tracking.set_tags(run_id, {"interestflow.pruned_after_epoch": e.epoch})
        tracking.end_run(run_id, "KILLED")
        raise
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    # Metric names sort test_ < train_ < val_ < vs_: the test figures come first wherever MLflow lists them.
    summary = {"train_s": result["train_s"], "train_epochs": result["epochs_run"]}
    if stage == "fold":
        summary.update(
            {"val_best_epoch": result["best_epoch"], **{f"val_{k}": v for k, v in result["metrics"].items()}}
        )
        tracking.log_table(run_id, pd.DataFrame([result["metrics"]]), "metrics_table.json")
    tracking.log_metrics(run_id, summary)
    if result["history"]:
        for path, fig in plots.learning_curve(result["history"], name, result.get("best_epoch")).items():
            tracking.log_figure(run_id, fig, path)
    tracking.end_run(run_id)
    return _model_result(result, reused=False)


def _model_result(result: dict, reused: bool) -> ModelResult:
    names = {f for f in ModelResult.__dataclass_fields__}
    kept = {k: v for k, v in result.items() if k in names and k != "reused"}
    return ModelResult(**{**kept, "history": tuple(result.get("history") or ()), "reused": reused})


def train_folds(
    dataset: DatasetLayer, family: str, cfg: TrainConfig, root: str, tags: dict | None = None
) -> list[ModelResult]:
    """Every cross-validation fold, one after the other (the flow runs them as parallel tasks)."""
    return [train(dataset, family, "fold", cfg, root, fold=f, tags=tags) for f in range(dataset.folds)]


def train_final(
    dataset: DatasetLayer,
    family: str,
    folds: list[ModelResult],
    cfg: TrainConfig,
    root: str,
    tags: dict | None = None,
    on_epoch: Log | None = None,
    warm_start: bool | None = None,
) -> ModelResult:
    """The final fit on everything but the test targets, for the epochs the folds chose.

    ``warm_start`` (None: when there is a compatible champion trained on other data): start
    from the champion's weights (:func:`warm_start_from`). Only the final fit: a champion
    trained on all of yesterday's events has seen most of today's validation targets, so a
    warm-started fold would score itself on what it learnt."""
    epochs = training.summarize_folds(folds)["epochs"]
    start = warm_start_from(dataset, family, cfg) if warm_start is not False else None
    if warm_start and start is None:
        log.warning("warm start asked for %s, but there is no compatible champion: training from scratch", family)
    return train(dataset, family, "final", cfg, root, epochs=epochs, tags=tags, on_epoch=on_epoch, warm_start=start)


def _latest_event(dataset: DatasetLayer) -> int:
    """Unix seconds of the dataset's latest event (a champion that knew later events was
    trained on another, newer log: it may have seen today's test targets)."""
    users = storage.read_parquet(lake.file(dataset.features.uri, "users.parquet"), columns=["ts"])
    return max((int(t.max()) for t in users["ts"] if len(t)), default=0)


@dataclass(frozen=True)
class WarmStart:
    model_uri: str
    label: str
    """``<registered name> v<version>``: recorded on the run and in its checkpoint's key."""
    shrink: float = 1.0
    """Carried weights are ``shrink * champion + (1 - shrink) * fresh`` (Family.warm_start)."""

    @property
    def key(self) -> str:
        """What the training starts from, as its run records it and its checkpoint is keyed."""
        return self.label if self.shrink == 1 else f"{self.label} shrink {self.shrink:g}"

    model: Recommender | None = field(default=None, compare=False, repr=False)
    """The model at ``model_uri`` when it is already loaded (not loaded again)."""


def warm_start_from(dataset: DatasetLayer, family: str, cfg: TrainConfig) -> WarmStart | None:
    """The champion of ``family`` to warm-start from, or None: there is none, it was trained
    on today's data (a re-run of the same night trains as the night did), it knew events
    later than today's latest (a newer log, which may hold today's test targets), or its
    model settings differ from today's (other shapes)."""
    name = tracking.model_name(family)
    version = tracking.alias_version(name, tracking.CHAMPION)
    if version is None or tracking.version_tags(name, version).get("data_hash") == dataset.data_hash:
        return None
    uri = f"models:/{name}/{version}"  # this version, whatever the alias points at later
    champion = pyfunc.load(uri)
    latest = int(champion.serving.ts.max()) if champion.serving is not None and len(champion.serving.ts) else None
    if latest is not None and latest > _latest_event(dataset):
        log.info(
            "warm start: %s v%s knows events later than today's log: %s trains from scratch", name, version, family
        )
        return None
    if champion.family != family or not same_model(family, champion.config, cfg.model):
        log.info("warm start: %s v%s has other model settings: %s trains from scratch", name, version, family)
        return None
    return WarmStart(uri, f"{name} v{version}", shrink=WARM_SHRINK, model=champion)


def same_model(family: str, saved: dict, overrides: dict) -> bool:
    """Whether a saved model's config (whole, as registered) and today's ``overrides`` make
    the same model: only settings that leave the weights as they are (training's lr and
    weight decay, the family's ``RANKING_ONLY``) may differ. A field the saved model
    predates takes its old value (``FamilyConfig.from_saved``)."""
    Config = MODELS[family].Config
    then, today = asdict(Config.from_saved(saved)), asdict(Config(**overrides))
    free = {"lr", "weight_decay", *Config.RANKING_ONLY}
    return {k: v for k, v in then.items() if k not in free} == {k: v for k, v in today.items() if k not in free}


WARM_SHRINK = 0.7
"""A nightly warm start takes ``0.7 * champion + 0.3 * fresh`` of each carried weight
(Family.warm_start). Night 2 of bench/fresh.py (a week more of Beauty, bert), the first
epoch at which the warm start reaches the from-scratch best validation NDCG@10 (0.0760,
epoch 20): shrink 1.0 (the champion itself) never in 10 epochs (plateau 0.0746); 0.7 at
epoch 6 (0.30 of the from-scratch time; best 0.0761); 0.5 at epoch 8 (0.40; it went on to
0.0768 at epoch 10); 0.3 slower than 0.5. bench/RESULTS.md, 2026-12-06 and 2026-12-07."""


# -- test, registry, promotion ---------------------------------------------------------------------
def evaluate(dataset: DatasetLayer, final: ModelResult, folds: list[ModelResult], root: str) -> TestReport:
    """Test the final model as registered (loaded back through MLflow), beside the popularity
    and recent-interaction baselines.

    Writes ``06_recommendations/test_recommendations_<family>.parquet`` (the exact top-10
    the metrics come from) and logs test, popularity and CV figures to the final run."""
    cv = training.summarize_folds(folds) if folds else {"epochs": final.epochs_run}
    fold_metrics = training.fold_metrics(folds)
    data = Dataset.load(dataset)
    test, frame = evaluation.test_report(pyfunc.load(final.model_uri), data)
    sample = evaluation.test_sample_size(dataset.n_eval_users)  # the size test_report's sample had
    if sample is not None:
        tracking.log_params(final.run_id, {"protocol.test_sample_users": sample})
        n = dataset.n_eval_users
        log.info("evaluate %s: test figures on a fixed sample of %d of %d test users", final.family, sample, n)
    pop = evaluation.popularity_report(data)
    recent = evaluation.recent_report(data)
    uri = lake.test_recommendations_uri(root, final.family)
    storage.write_parquet(
        frame, uri, metadata={"interestflow.data_hash": dataset.data_hash, "interestflow.run_id": final.run_id}
    )
    tracking.log_metrics(final.run_id, _test_metrics(test, pop, recent, cv))
    tracking.log_table(final.run_id, frame.head(1000), "test_recommendations_sample.json")
    table = pd.DataFrame(
        [
            {"evaluation": "test", **test},
            {"evaluation": "popularity (test)", **pop},
            {"evaluation": "recent interactions (test)", **recent},
        ]
        + [{"evaluation": f"validation fold {i}", **m} for i, m in enumerate(fold_metrics)]
    )
    tracking.log_table(final.run_id, table, "metrics_table.json")
    if fold_metrics:
        for path, fig in plots.cv_folds(fold_metrics).items():
            tracking.log_figure(final.run_id, fig, path)
    log.info(
        "evaluate %s: test NDCG@10 %.4f, HR@10 %.4f on %s (popularity %.4f, recent interactions %.4f)",
        final.family,
        test["ndcg10"],
        test["hr10"],
        f"{dataset.n_eval_users} users" if sample is None else f"the sample of {sample:,} users",
        pop["ndcg10"],
        recent["ndcg10"],
    )
    return TestReport(
        family=final.family,
        data_hash=dataset.data_hash,
        test=test,
        popularity=pop,
        recent=recent,
        cv=cv,
        fold_metrics=tuple(fold_metrics),
        epochs=cv["epochs"],
        final_train_s=final.train_s,
        run_id=final.run_id,
        model_uri=final.model_uri,
        test_recommendations_uri=uri,
        reused_training=final.reused,
        n_users=data.n_users,
        n_eval_users=dataset.n_eval_users,
        n_test_sample=sample,
        behaviour=dataset.behaviour.params(),
        spec=dataset.spec,
    )


def _test_users(report: TestReport) -> str:
    """Who the test figures are on: "N users", or the fixed sample's size out of the test users."""
    if report.n_test_sample is None:
        return f"{report.n_eval_users} users"
    return f"a fixed sample of {report.n_test_sample:,} of {report.n_eval_users:,} test users"


def _test_metrics(test: dict, popularity: dict, recent: dict, cv: dict) -> dict:
    """A family's figures as MLflow metrics, on its final run and its night's parent run. Names
    sort test_ < train_ < val_ < vs_: the test figures come first wherever MLflow lists them."""
    return {
        **{f"test_{k}": v for k, v in test.items()},
        **{f"vs_popularity_{k}": v for k, v in popularity.items()},
        **{f"vs_recent_{k}": v for k, v in recent.items()},
        **{f"val_{k}": v for k, v in cv.items()},  # the folds' mean and std
    }


def register(report: TestReport) -> Registered:
    """The final run's model as a new registered version with alias ``challenger``."""
    t, cv = report.test, report.cv
    tags = {
        "data_hash": report.data_hash,
        "test_ndcg10": round(t["ndcg10"], 4),
        "test_hr10": round(t["hr10"], 4),
        "cv_ndcg10_mean": round(cv["ndcg10_mean"], 4) if "ndcg10_mean" in cv else "",
        "cv_ndcg10_std": round(cv["ndcg10_std"], 4) if "ndcg10_std" in cv else "",
    }
    spread = f", validation NDCG@10 {cv['ndcg10_mean']:.4f} ± {cv['ndcg10_std']:.4f}" if "ndcg10_mean" in cv else ""
    trained = (
        f"{report.family} trained on {report.n_users} users of `{report.spec}` (data {report.data_hash}, target "
        f"{(report.behaviour or {}).get('target', 'any')}) on {time.strftime('%Y-%m-%d')}: test NDCG@10 "
        f"{t['ndcg10']:.4f}, HR@10 {t['hr10']:.4f} on {_test_users(report)} (popularity NDCG@10 "
        f"{report.popularity['ndcg10']:.4f}){spread}."
    )
    return _register_once(
        tracking.model_name(report.family),
        report.run_id,
        report.model_uri,
        tags,
        trained,
        f"interestflow's {report.family} recommender: {_family_summary(report.family)} Retrained every night; "
        "the alias `champion` serves (batch top-K and `interestflow serve`) and moves when a challenger "
        "beats it on the same holdout, or by hand with a reason (`interestflow promote` / `rollback`).",
    )


def _family_summary(family: str) -> str:
    """The first sentence of the family's module docstring (what the model is)."""
    import sys

    doc = sys.modules[MODELS[family].__module__].__doc__ or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _register_once(
    name: str, run_id: str, model_uri: str, tags: dict, description: str = "", model_description: str = ""
) -> Registered:
    """``model_uri`` (logged in ``run_id``) as a new version of ``name``, alias ``challenger``,
    with ``description`` (what was trained on which data; the gate adds why it was promoted or
    not) and, where the registered model has none, ``model_description``.
    Idempotent: a re-run that reused yesterday's run finds the version it registered."""
    version = tracking.version_of_run(name, run_id)
    reused = version is not None
    if version is None:
        version = tracking.register(model_uri, name, tags)
    if description and not tracking.version_description(name, version):  # also after a retried register
        tracking.describe_version(name, version, description)
    if model_description:
        tracking.describe_model(name, model_description)
    tracking.set_alias(name, tracking.CHALLENGER, version)
    log.info(
        "register %s v%s (alias challenger%s): %s",
        name,
        version,
        ", registered before" if reused else "",
        tracking.version_link(name, version),
    )
    return Registered(name=name, version=version, reused=reused)


def promote(registered: Registered, report: TestReport, dataset: DatasetLayer, gate: GateConfig) -> Decision:
    """The promotion gate: re-score the current champion on today's holdout, decide, carry it out."""

    def rescore(_champion_version: str) -> tuple[dict, dict]:
        rec = pyfunc.load(f"models:/{registered.name}@{tracking.CHAMPION}")
        return report.test, evaluation.test_report(rec, Dataset.load(dataset))[0]

    return _gate(registered, report.test, rescore, gate, report.run_id)


def _gate(
    registered: Registered,
    challenger: dict,
    rescore: Callable[[str], tuple[dict, dict]],
    gate: GateConfig,
    run_id: str,
) -> Decision:
    """The gate for any registered model: ``rescore(champion version)`` gives (challenger,
    champion) figures on the same holdout; a champion that cannot be re-scored is kept. The
    decision is carried out (alias, tags on the run and the version) and logged."""
    name, version = registered.name, registered.version
    champion_version = tracking.alias_version(name, tracking.CHAMPION)
    if champion_version == version:  # a re-run of the night that promoted it: nothing to decide
        return Decision(False, f"v{version} is already the champion", challenger, challenger, gate.primary)
    champion, error = None, None
    if champion_version is not None:
        try:
            challenger, champion = rescore(champion_version)
        except Exception as e:  # noqa: BLE001 - any failure to re-score must block promotion
            error = f"{type(e).__name__}: {e}"
    decision = promotion.decide(challenger, champion, gate, error)
    promotion.apply(name, version, decision, run_id)
    link = tracking.version_link(name, version)
    log.info("promote %s v%s: %s (%s) %s", name, version, decision.verdict, decision.reason, link)
    return decision


# -- what the reviews say ------------------------------------------------------------------------
SENTIMENT = "sentiment"
"""The sentiment classifier's registered model: ``tracking.model_name(SENTIMENT)``."""


def analyse_reviews(
    dataset: DatasetLayer,
    root: str,
    overrides: dict | None = None,
    gate: GateConfig = GateConfig(),
    tags: dict | None = None,
    register: bool = True,
) -> ReviewsLayer | None:
    """05_models/<key>/reviews-<cfg>: sentiment (beside VADER) and topics of the log's reviews,
    logged to an MLflow run ``reviews``; with ``register`` the classifier becomes a new version
    of the sentiment model and goes through the promotion gate (primary metric: its AUC on
    today's later reviews, macro-F1 guarded). None when the log has no review text."""
    import tempfile
    from pathlib import Path

    import joblib

    from components import reviews as reviews_

    feats = dataset.features
    if not feats.review_uri:
        return None
    cfg = reviews_.ReviewConfig(**(overrides or {}))
    # keyed by the review layer too: new vectors (another encoder) never reuse an old classifier
    uri = lake.review_models_uri(root, feats, {**asdict(cfg), "review_layer": lake.key(feats.review_uri)})
    run_tags = {"interestflow.stage": "reviews", "interestflow.data_hash": dataset.data_hash, **(tags or {})}

    def compute(uri: str) -> dict:
        frame = storage.read_parquet(lake.file(feats.review_uri, "reviews.parquet"))
        report, scored, table, clf, tm = reviews_.analyse(frame, cfg)
        storage.write_parquet(scored, lake.file(uri, "scored.parquet"))
        storage.write_parquet(table, lake.file(uri, "topics.parquet"))
        names = []
        with tempfile.TemporaryDirectory() as tmp:
            if clf is not None:
                joblib.dump(clf, Path(tmp) / "sentiment.joblib")
                storage.upload_file(Path(tmp) / "sentiment.joblib", lake.file(uri, "sentiment.joblib"))
            if tm is not None:
                tm.save(Path(tmp) / "topic_model", serialization="safetensors", save_ctfidf=True)
                names = sorted(p.name for p in (Path(tmp) / "topic_model").iterdir())
                for name in names:
                    storage.upload_file(Path(tmp) / "topic_model" / name, lake.file(uri, f"topic_model/{name}"))
        return {"report": report, "topic_model_files": names, "classifier": clf is not None}

    info, _ = lake.build(uri, compute)
    report, table = info["report"], storage.read_parquet(lake.file(uri, "topics.parquet"))
    run_id, model_uri = info.get("run_id"), info.get("model_uri")
    if not tracking.run_exists(run_id):  # first time, or a registry that never saw this layer
        run_id = tracking.create_run("reviews", reviews_.config_params(cfg), run_tags)
        try:
            model_uri = _log_reviews(run_id, uri, info, report, table)
        except BaseException:
            tracking.end_run(run_id, "FAILED")
            raise
        tracking.end_run(run_id)
        lake.mark_complete(uri, {**info, "run_id": run_id, "model_uri": model_uri})
    topics = tuple((str(r.label), tuple(r.keywords)) for r in table.itertuples())
    log.info(
        "reviews: %d reviews, sentiment AUC %.4f (VADER %.4f), macro-F1 %.4f (VADER %.4f), %d topics: %s",
        report["reviews"],
        report["sentiment_auc"],
        report["vader_auc"],
        report["sentiment_macro_f1"],
        report["vader_macro_f1"],
        report["n_topics"],
        ", ".join(t for t, _ in topics),
    )
    layer = ReviewsLayer(uri=uri, run_id=run_id, report=report, topics=topics, model_uri=model_uri)
    if not register or model_uri is None:
        return layer
    registered, decision = _gate_sentiment(layer, feats, gate)
    return replace(layer, registered=registered, decision=decision)


def _figures(facts: dict) -> dict:
    """The finite numbers of a stage's facts: what MLflow takes as metrics (NaN: a skipped figure)."""
    return {k: v for k, v in facts.items() if isinstance(v, int | float) and np.isfinite(v)}


def _log_reviews(run_id: str, uri: str, info: dict, report: dict, table: pd.DataFrame) -> str | None:
    """The reviews layer's figures, topic table, topic model and sentiment pyfunc into ``run_id``;
    returns the pyfunc's URI (None: no classifier)."""
    import tempfile
    from pathlib import Path

    from components import text

    tracking.log_metrics(run_id, _figures(report))
    tracking.log_table(run_id, table.assign(keywords=table["keywords"].map(", ".join)), "topics.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name in info["topic_model_files"]:
            storage.download_file(lake.file(uri, f"topic_model/{name}"), Path(tmp) / "topic_model" / name)
        if info["topic_model_files"]:
            tracking.log_artifacts(run_id, Path(tmp) / "topic_model", "topic_model")
        if not info["classifier"]:
            return None
        path = storage.download_file(lake.file(uri, "sentiment.joblib"), Path(tmp) / "sentiment.joblib")
        return pyfunc.log_sentiment(run_id, str(path), text.model_version(text.REVIEW_MAX_LENGTH))


def _gate_sentiment(layer: ReviewsLayer, feats: FeatureLayer, gate: GateConfig) -> tuple[Registered, Decision]:
    """Register the classifier (idempotent) and let the gate decide against the champion, both
    scored on the same later reviews: today's test reviews written after the champion's own
    training reviews too (a champion is never scored on what it was trained on)."""
    from components import reviews as reviews_
    from components import text

    name = tracking.model_name(SENTIMENT)
    r = layer.report
    challenger = {"auc": r["sentiment_auc"], "macro_f1": r["sentiment_macro_f1"]}
    tags = {
        "data_hash": feats.data_hash,
        "train_until": r["sentiment_train_until"],
        **{f"test_{k}": round(v, 4) for k, v in challenger.items()},
    }
    trained = (
        f"Sentiment classifier on MiniLM review vectors, trained on {r['sentiment_train_reviews']} reviews of "
        f"`{feats.spec}` (data {feats.data_hash}) up to {r['sentiment_cut']}: AUC positive vs negative "
        f"{r['sentiment_auc']:.4f} (VADER {r['vader_auc']:.4f}), macro-F1 {r['sentiment_macro_f1']:.4f} on the "
        f"{r['sentiment_test_reviews']} later reviews."
    )
    about = (
        "interestflow's review sentiment model (negative / neutral / positive from a review's text), retrained "
        "with the nightly run; `champion` moves only when a challenger beats it on the same later reviews."
    )
    registered = _register_once(name, layer.run_id, layer.model_uri, tags, trained, about)

    def rescore(champion_version: str) -> tuple[dict, dict]:
        scored = storage.read_parquet(lake.file(layer.uri, "scored.parquet"))
        seen_until = int(tracking.version_tags(name, champion_version).get("train_until", 0))
        test = scored["sentiment_test"].to_numpy() & (scored["ts"].to_numpy() > seen_until)
        y = reviews_.star_labels(scored["stars"].to_numpy())[test]
        if not {reviews_.NEGATIVE, reviews_.POSITIVE} <= set(y.tolist()):
            raise ValueError(
                f"today's later reviews after the champion's training reviews (up to "
                f"{pd.Timestamp(seen_until, unit='s').date()}) hold no positive and negative pair to compare on"
            )
        mine = challenger
        if test.sum() < scored["sentiment_test"].sum():  # a narrower holdout: the challenger on it too
            mine = reviews_.scores_of(y, scored[test])
        model = tracking.load_pyfunc(f"models:/{name}@{tracking.CHAMPION}")
        frame = storage.read_parquet(lake.file(feats.review_uri, "reviews.parquet"))[test].reset_index(drop=True)
        if model.encoder_version == text.model_version(text.REVIEW_MAX_LENGTH):
            out = model.score(reviews_.features(frame))  # the same vectors: no need to embed again
        else:
            out = model.predict(None, pd.DataFrame({"text": frame["body"], "summary": frame["summary"]}))
        return mine, reviews_.scores_of(y, out)

    sentiment_gate = GateConfig(min_gain=gate.min_gain, guarded=("macro_f1",), tolerance=gate.tolerance, primary="auc")
    return registered, _gate(registered, challenger, rescore, sentiment_gate, layer.run_id)


# -- 06, 07: recommendations and profiles ------------------------------------------------------------
def recommend(
    dataset: DatasetLayer,
    families: list[str],
    root: str,
    k: int = 10,
    family: str | None = None,
    explore_share: float = 0.0,
    category_depth: int = 3,
) -> RecommendationsLayer:
    """06_recommendations/recommendations.parquet: top-k for every user from a family's champion
    (default: the champion with the best test NDCG@10 recorded on its version)."""
    c = recommend_.serving_champion(families, family)
    rec = pyfunc.load(c["model_uri"])
    item_cat = None
    if explore_share:
        items = storage.read_parquet(lake.file(dataset.features.uri, "items.parquet"))
        item_cat, _ = features.item_categories(items, category_depth)
    frame = recommend_.recommend(rec, Dataset.load(dataset), k, explore_share, item_cat)
    uri = lake.recommendations_uri(root)
    meta = {
        "family": c["family"],
        "model": c["name"],
        "version": c["version"],
        "data_hash": dataset.data_hash,
        "explore_share": explore_share,
        **frame.attrs,  # ann_recall10 and its sample, where the index ranked (components/retrieval.py)
    }
    storage.write_parquet(frame, uri, metadata={f"interestflow.{k}": str(v) for k, v in meta.items()})
    log.info(
        "recommend: top-%d for %s users from champion %s v%s -> %s",
        k,
        f"{frame['user_id'].nunique():,}",
        c["name"],
        c["version"],
        lake.relative(root, uri),
    )
    return RecommendationsLayer(
        uri=uri,
        family=c["family"],
        version=c["version"],
        rows=len(frame),
        users=int(frame["user_id"].nunique()),
        explore_share=explore_share,
        model_uri=c["model_uri"],
    )


def recommend_for_user(
    user_id: str, dataset: DatasetLayer, families: list[str], k: int = 10, family: str | None = None
) -> pd.DataFrame:
    """Top-k for one user through the served MLflow model (``models:/<name>@champion``), with
    the items' titles and categories; the user's history is read from the dataset."""
    data = Dataset.load(dataset)
    pos = np.flatnonzero(data.user_ids == str(user_id))
    if not len(pos):
        raise ValueError(f"user {user_id!r} is not in the event log {dataset.features.validated.raw.events_source}")
    history = [str(x) for x in data.item_ids[data.seqs[pos[0]]]]
    types = [EVENT_TYPES[t] for t in data.types[pos[0]]]
    c = recommend_.serving_champion(families, family)
    request = pd.DataFrame({"user_id": [str(user_id)], "history": [history], "event_types": [types]})
    # Today's lake holds the whole history (the model's stored one may be older): it is the history.
    top = tracking.predict(c["model_uri"], request, {"k": k, "stored_history": False})
    items = storage.read_parquet(lake.file(dataset.features.uri, "items.parquet"))[["item_id", "categories"]]
    out = top.merge(items.astype({"item_id": str}), on="item_id", how="left")
    out.attrs.update({"model": f"{c['name']} v{c['version']}", "history": len(history)})
    return out


def write_profiles(
    dataset: DatasetLayer,
    root: str,
    cfg: ProfileConfig = ProfileConfig(),
    scorer=None,
    max_len: int = 512,
    test_recommendations: dict[str, str] | None = None,
    tags: dict | None = None,
    data: Dataset | None = None,
    reviews: ReviewsLayer | None = None,
) -> ProfilesLayer:
    """Write 07_profiles/<features key>/: profiles.parquet (one row per user), transitions.parquet,
    exploration.parquet (when a ``scorer`` is given) and summary.json; log figures and plots to
    an MLflow run named ``profiles``. ``test_recommendations``: family -> URI of its written
    test-time top-K (for next-category accuracy). ``reviews``: the reviews stage's layer, for
    the review columns (sentiment, topics, review-text vector) and the churn model's sentiment."""
    import json

    from components import exploration

    t0 = time.perf_counter()
    data = data if data is not None else Dataset.load(dataset)
    users = storage.read_parquet(lake.file(dataset.features.uri, "users.parquet"))
    items = storage.read_parquet(lake.file(dataset.features.uri, "items.parquet"))
    tss = [np.asarray(t, dtype=np.int64) for t in users["ts"]]
    view = data.view("final")
    topk = {
        f: profiles_.topk_matrix(storage.read_parquet(uri), data, view.eval_users)
        for f, uri in (test_recommendations or {}).items()
    }
    item_cat, cat_names = features.item_categories(items, cfg.category_depth)
    user_reviews = _user_reviews(reviews, dataset, data.n_users) if reviews else None
    profiles, trans, summary, curves = profiles_.profile_tables(data, tss, item_cat, cat_names, cfg, topk, user_reviews)
    table = exploration.exploration_table(scorer, data, item_cat, max_len=max_len) if scorer else []
    summary["profile_s"] = time.perf_counter() - t0

    uri = lake.profiles_uri(root, dataset.features)
    meta = {"interestflow.data_hash": dataset.data_hash, "interestflow.config": json.dumps(asdict(cfg))}
    storage.write_parquet(profiles, lake.file(uri, "profiles.parquet"), metadata=meta)
    storage.write_parquet(trans, lake.file(uri, "transitions.parquet"), metadata=meta)
    if table:
        storage.write_parquet(pd.DataFrame(table), lake.file(uri, "exploration.parquet"), metadata=meta)
    storage.write_json({**summary, "exploration": table, "config": asdict(cfg)}, lake.file(uri, "summary.json"))
    lake.mark_complete(uri, {"data_hash": dataset.data_hash})

    run_id = tracking.create_run(
        "profiles",
        {f"profile.{k}": v for k, v in asdict(cfg).items()},
        {"interestflow.stage": "profiles", "interestflow.data_hash": dataset.data_hash, **(tags or {})},
    )
    tracking.log_metrics(run_id, _figures(summary))
    for row in table:
        tracking.log_metrics(
            run_id, {f"explore_{k}": v for k, v in row.items() if k != "share"}, step=int(row["share"] * 100)
        )
    drifts = profiles["drift_jsd"].dropna().to_numpy()
    figures = plots.profile_figures(drifts, curves, table)
    for path, fig in figures.items():
        tracking.log_figure(run_id, fig, path)
    tracking.end_run(run_id)
    summary["profile_s"] = time.perf_counter() - t0
    churn = summary.get("churn_skipped") or f"churn AUC {summary['churn_auc']:.3f}"
    log.info(
        "profiles: %s users, %s, median drift %.3f nats -> %s; plots: %s",
        f"{summary['users']:,}",
        churn,
        summary["drift_jsd_median"],
        lake.relative(root, uri),
        tracking.artifact_link(run_id, "plots"),
    )
    return ProfilesLayer(
        uri=uri, run_id=run_id, summary=summary, exploration=tuple(table), figures=tuple(sorted(figures))
    )


def _user_reviews(reviews: ReviewsLayer, dataset: DatasetLayer, n_users: int) -> profiles_.UserReviews:
    """The reviews stage's scored reviews and their vectors, per user."""
    scored = storage.read_parquet(lake.file(reviews.uri, "scored.parquet"))
    vectors = storage.read_parquet(lake.file(dataset.features.review_uri, "reviews.parquet"), columns=["embedding"])
    table = storage.read_parquet(lake.file(reviews.uri, "topics.parquet"))
    labels = [""] * (int(table["topic"].max()) + 1 if len(table) else 0)
    for t, label in zip(table["topic"], table["label"], strict=True):
        labels[int(t)] = str(label)
    return profiles_.UserReviews.from_frames(n_users, scored, np.stack(vectors["embedding"].to_numpy()), labels)


def build_profiles(
    dataset: DatasetLayer,
    root: str,
    overrides: dict | None = None,
    model_uri: str | None = None,
    test_recommendations: dict[str, str] | None = None,
    tags: dict | None = None,
    reviews: ReviewsLayer | None = None,
) -> ProfilesLayer:
    """07_profiles, with the serving model's exploration table when there is a model and the
    review columns when the log has reviews (``reviews``: the reviews stage's layer)."""
    cfg = ProfileConfig(**(overrides or {}))
    data = Dataset.load(dataset)
    scorer, max_len = None, 512
    if model_uri:
        rec = pyfunc.load(model_uri)
        scorer, max_len = rec.scorer_for(data), rec.max_len
    return write_profiles(dataset, root, cfg, scorer, max_len, test_recommendations, tags, data, reviews)


def report(
    results: list[FamilyResult],
    recommendations: RecommendationsLayer | None,
    data_hash: str,
    profiles=None,
    reviews: ReviewsLayer | None = None,
    root: str = "",
) -> str:
    """The run summary (markdown, lake URIs relative to ``root``); the flow also publishes it
    and the leaderboard as artifacts."""
    from components import report as report_

    return report_.markdown(results, recommendations, data_hash, profiles, reviews, root)


# -- the path --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilyResult:
    """One family's night: its test report, the version it registered, the promotion decision."""

    report: TestReport
    registered: Registered | None = None
    decision: Decision | None = None

    @property
    def family(self) -> str:
        return self.report.family


@dataclass(frozen=True)
class NightlyResult:
    data_hash: str
    results: tuple[FamilyResult, ...]
    recommendations: RecommendationsLayer | None
    profiles: ProfilesLayer | None
    summary: str
    reviews: ReviewsLayer | None = None
    """What the reviews say (None: the log has no review text)."""


# -- tuning trials (the study: tune(), below) -------------------------------------------------------
def tune_trial(
    dataset: DatasetLayer,
    s: tuning.TuneSettings,
    root: str,
    parent_run_id: str,
    tags: dict,
    deadline: float | None = None,
    on_epoch: Log | None = None,
) -> dict | None:
    """One trial: the sampler's settings, one fold's training (a child run of the study's run,
    ended by the pruner when its curve falls below the median), its best validation NDCG@10
    told to the study. None when the deadline has passed (no trial started). A failed
    training fails its trial, not the study; a stopped run leaves it running (recover())."""
    if deadline is not None and time.time() > deadline:
        return None
    study = tuning.open_study(tuning.study_name(dataset.spec, s.family), s.study)
    trial = study.ask(tuning.distributions(s.family, s.model))
    overrides = {**trial.params, **s.model}
    trial.set_user_attr(tuning.MODEL_ATTR, overrides)
    where = f"tune {s.family} trial {trial.number}"
    try:
        MODELS[s.family].Config(**overrides)
    except ValueError as e:  # a combination the family refuses (the space should not allow it)
        study.tell(trial, state=tuning.TrialState.FAIL)
        log.warning("%s: settings refused (%s): %s", where, e, trial.params)
        return {"trial": trial.number, "state": "FAIL"}
    log.info("%s: %s", where, json.dumps(trial.params, sort_keys=True))
    pruning = tuning.Pruning(trial)
    try:
        result = train(
            dataset,
            s.family,
            "fold",
            replace(s.train, model=overrides),
            root,
            fold=s.fold,
            tags={**tags, "interestflow.study": study.study_name, "interestflow.trial": trial.number},
            parent_run_id=parent_run_id,
            on_epoch=on_epoch,
            stop_if=pruning,  # with --no-prune the study's NopPruner never stops it; the curve is reported live
            run_name=f"{s.family}-trial{trial.number}",
        )
    except training.TrainingPruned as e:
        study.tell(trial, state=tuning.TrialState.PRUNED)
        log.info("%s: pruned after epoch %d (below the median curve)", where, e.epoch)
        return {"trial": trial.number, "state": "PRUNED", "epoch": e.epoch}
    except training.TrainingStopped:
        raise
    except Exception as e:  # noqa: BLE001 - one failed trial (an out-of-memory size) does not end the study
        study.tell(trial, state=tuning.TrialState.FAIL)
        log.warning("%s failed: %s", where, e)
        return {"trial": trial.number, "state": "FAIL"}
    for row in result.history:  # a reused or resumed training: the epochs this process did not see
        pruning.report(row)
    value = float(result.metrics["ndcg10"])
    study.tell(trial, value)
    log.info("%s: val NDCG@10 %.4f at epoch %s", where, value, result.best_epoch)
    return {"trial": trial.number, "state": "COMPLETE", "val_ndcg10": value}


def tune_trials(
    dataset: DatasetLayer, s: tuning.TuneSettings, root: str, parent_run_id: str, tags: dict, deadline, n: int
) -> list[dict | None]:
    """``n`` trials one after the other (the tune flow runs them as tasks on its task runner)."""
    return [tune_trial(dataset, s, root, parent_run_id, tags, deadline) for _ in range(n)]


@dataclass(frozen=True)
class Stages:
    """The callables the path runs, in the order it runs them. :data:`PLAIN` = this module's
    functions; flows/nightly.py builds one of Prefect tasks with the same signatures."""

    ingest: Callable = ingest
    check_batches: Callable = check_batches
    validate: Callable = validate
    features: Callable = build_features
    item_text: Callable = embed_items
    review_text: Callable = embed_reviews
    datasets: Callable = build_datasets
    reviews: Callable = analyse_reviews
    train_folds: Callable = train_folds
    train_final: Callable = train_final
    evaluate: Callable = evaluate
    register: Callable = register
    promote: Callable = promote
    recommend: Callable = recommend
    profiles: Callable = build_profiles
    report: Callable = report
    tune_trials: Callable = tune_trials


PLAIN = Stages()


def data_path(spec: str, root: str, folds: int, seed: int, stages: Stages = PLAIN) -> DatasetLayer:
    """01_raw -> 02_validated -> 03_features (+ item and review text) -> 04_datasets; finished
    layers are reused."""
    raw = stages.ingest(spec, root)
    validated = stages.validate(raw, root, stages.check_batches(raw, root))
    feats = stages.item_text(stages.features(validated, root), root)
    if raw.review_columns:  # a log with review text (no empty task in a run without)
        feats = stages.review_text(feats, root)
    return stages.datasets(feats, root, folds, seed)


def _has_reviews(dataset: DatasetLayer) -> bool:
    return dataset.features.review_uri is not None


@dataclass(frozen=True)
class NightlySettings:
    """What a nightly run is asked to do beside the data (the flow's parameters, typed)."""

    families: tuple[str, ...] = ("mf",)
    folds: int = 3
    train: TrainConfig = TrainConfig()
    model: dict = field(default_factory=dict)
    """Per-family config overrides, e.g. {"mf": {"dim": 64}}."""
    gate: GateConfig = GateConfig()
    k: int = 10
    serve_family: str | None = None
    explore_share: float = 0.0
    profiles: bool = True
    profile: dict = field(default_factory=dict)
    reviews: dict = field(default_factory=dict)
    """Overrides of components.reviews.ReviewConfig (logs with review text only)."""
    dry_run: bool = False
    warm_start: bool | None = None
    """Final fits start from the champion's weights (None: when a compatible one exists)."""
    tuned: bool = True
    """Train each family with its tuned settings for the spec (09_settings) where there are some."""


def nightly(
    spec: str, root: str, settings: NightlySettings = NightlySettings(), tags: dict | None = None, stages=PLAIN
) -> NightlyResult:
    """The nightly retrain, stage by stage (DESIGN.md §2): data, then per family CV, final fit,
    test, registry and promotion, then recommendations, profiles and the summary."""
    s = settings
    dataset = data_path(spec, root, s.folds, s.train.seed, stages)
    tags = {"interestflow.spec": dataset.spec, "interestflow.dry_run": s.dry_run, **(tags or {})}
    reviews = stages.reviews(dataset, root, s.reviews, s.gate, tags, not s.dry_run) if _has_reviews(dataset) else None
    results = []
    for family in s.families:
        tuned = tuning.read_settings(root, dataset.spec, family) if s.tuned else None
        # the tuned settings (interestflow tune), then the run's own overrides field by field
        cfg = replace(s.train, model={**(tuned.model if tuned else {}), **s.model.get(family, {})})
        if tuned:
            log.info("%s: tuned settings %s: %s", family, tuned.label, json.dumps(tuned.model, sort_keys=True))
        night = _family_night(dataset, family, cfg, s, tags, root)
        family_tags = {**tags, "mlflow.parentRunId": night}  # folds and final fit: children of the night
        if tuned:
            family_tags["interestflow.tuned_settings"] = tuned.label
        try:
            folds = stages.train_folds(dataset, family, cfg, root, family_tags)
            final = stages.train_final(dataset, family, folds, cfg, root, family_tags, warm_start=s.warm_start)
            test = stages.evaluate(dataset, final, folds, root)
            result = FamilyResult(test)
            if not s.dry_run:
                registered = stages.register(test)
                if tuned:
                    tracking.set_version_tags(registered.name, registered.version, {"tuned_settings": tuned.label})
                result = FamilyResult(test, registered, stages.promote(registered, test, dataset, s.gate))
        except BaseException:
            tracking.end_run(night, "FAILED")
            raise
        _end_family_night(night, result)
        results.append(result)
    recs = (
        None if s.dry_run else stages.recommend(dataset, list(s.families), root, s.k, s.serve_family, s.explore_share)
    )
    prof = None
    if s.profiles:  # the serving champion, or in a dry run this run's best final model, re-ranks
        best = max(results, key=lambda r: r.report.test["ndcg10"]).report.model_uri if results else None
        test_recs = {r.family: r.report.test_recommendations_uri for r in results}
        model = recs.model_uri if recs else best
        prof = stages.profiles(dataset, root, s.profile, model, test_recs, tags, reviews)
    summary = stages.report(results, recs, dataset.data_hash, prof, reviews, root)
    return NightlyResult(dataset.data_hash, tuple(results), recs, prof, summary, reviews)


def _family_night(
    dataset: DatasetLayer, family: str, cfg: TrainConfig, s: NightlySettings, tags: dict, root: str
) -> str:
    """The MLflow parent run of one family's night: its folds and final fit are its children,
    and it ends with the family's test figures and the promotion decision. A re-run of the same
    night (same data, family and settings: its trainings are reused) reopens that run."""
    settings = {**asdict(cfg), "protocol": PROTOCOL["version"], "warm_start": s.warm_start, "dry_run": s.dry_run}
    key = lake.model_uri(root, dataset, family, settings, "night")  # the whole URI: one lake's nights
    run_id = tracking.find_run({"interestflow.night": key})
    if run_id is None:
        run_id = tracking.create_run(
            f"{family}-{dataset.spec}-{time.strftime('%Y-%m-%d')}",
            {"family": family, "data_hash": dataset.data_hash, "folds": s.folds, "dry_run": s.dry_run},
            {
                **tags,
                "interestflow.family": family,
                "interestflow.stage": "night",
                "interestflow.data_hash": dataset.data_hash,
                "interestflow.night": key,
            },
        )
    log.info("%s: MLflow runs of this night under %s", family, tracking.run_link(run_id))
    return run_id


def _end_family_night(run_id: str, result: FamilyResult) -> None:
    r, d = result.report, result.decision
    tracking.log_metrics(run_id, _test_metrics(r.test, r.popularity, r.recent, r.cv))
    if "promotion.decision" not in tracking.run_tags(run_id):  # a re-run keeps the night's first decision
        decision = d.outcome if d else "dry run"
        tags = {"promotion.decision": decision, "promotion.reason": d.reason if d else "dry run: nothing registered"}
        if result.registered:
            tags["interestflow.model_version"] = f"{result.registered.name} v{result.registered.version}"
        tracking.set_tags(run_id, tags)
    tracking.end_run(run_id)


# -- tuning (DESIGN.md §11) -----------------------------------------------------------------------
@dataclass(frozen=True)
class TuneResult:
    study: str
    finished: int
    """Trials finished (completed or pruned) in the study, earlier runs' included."""
    ran: int
    """Trials this run started."""
    best: dict | None
    """The best trial: number, val_ndcg10, params (None: none completed)."""
    settings: tuning.Tuned | None
    run_id: str


def tune(spec: str, root: str, s: tuning.TuneSettings, tags: dict | None = None, stages=PLAIN) -> TuneResult:
    """An Optuna study of ``s.family`` on the spec's data (components/tuning.py): the trials
    the study still lacks, each one fold's training scored on its validation targets, under
    one MLflow ``tune`` run; then the best trial's settings as a new settings version.

    Call it holding the study's lock (the flow does): trials a killed run left running are
    taken for dead and queued again."""
    dataset = data_path(spec, root, s.folds, s.train.seed, stages)
    if not 0 <= s.fold < s.folds:
        raise ValueError(f"tune: fold {s.fold} is not one of the dataset's {s.folds} folds")
    name = tuning.study_name(dataset.spec, s.family)
    study = tuning.open_study(name, s.study)
    if again := tuning.recover(study):
        log.info("tune %s: trials %s were left running by a stopped run: their settings run again", name, again)
    for p in tuning.enqueue(study, s.family, s.enqueue, s.model):
        log.info("tune %s: queued %s", name, json.dumps(p, sort_keys=True))
    run_id = tracking.find_run({"interestflow.study": name, "interestflow.stage": "tune"}) or tracking.create_run(
        f"tune-{name}",
        {
            "family": s.family,
            "spec": dataset.spec,
            "fold": s.fold,
            "folds": s.folds,
            "search_space": {k: asdict(v) for k, v in MODELS[s.family].search_space.items()},
            **{f"train.{k}": v for k, v in asdict(s.train).items() if k != "model"},
            **{f"model.{k}": v for k, v in s.model.items()},
            **{f"study.{k}": v for k, v in asdict(s.study).items()},
            "storage": tracking.redacted(tuning.storage_url()),
        },
        {
            **(tags or {}),
            "interestflow.study": name,
            "interestflow.stage": "tune",
            "interestflow.family": s.family,
            "interestflow.data_hash": dataset.data_hash,
        },
    )
    left = max(0, s.trials - tuning.finished(study))
    log.info(
        "tune %s: %d of %d trials finished, %d to run: %s",
        name,
        s.trials - left,
        s.trials,
        left,
        tracking.run_link(run_id),
    )
    deadline = time.time() + s.timeout_s if s.timeout_s else None
    try:
        outcomes = stages.tune_trials(dataset, s, root, run_id, tags or {}, deadline, left)
    except BaseException:
        tracking.end_run(run_id, "KILLED")
        raise
    tuned = tuning.write_settings(root, dataset.spec, s.family, study, dataset.data_hash, run_id)
    tuning.log_study(run_id, study)
    if tuned:
        tracking.set_tags(run_id, {"interestflow.settings": tuned.label})
        log.info(
            "tune %s: best trial %d, val NDCG@10 %.4f -> settings %s", name, tuned.trial, tuned.val_ndcg10, tuned.uri
        )
    tracking.end_run(run_id)
    best = tuning.best_trial(study)
    return TuneResult(
        study=name,
        finished=tuning.finished(study),
        ran=sum(1 for o in outcomes if o is not None),
        best={"trial": best.number, "val_ndcg10": best.value, "params": best.params} if best else None,
        settings=tuned,
        run_id=run_id,
    )


def recommend_path(
    spec: str,
    root: str,
    families: list[str],
    k: int = 10,
    serve_family: str | None = None,
    explore_share: float = 0.0,
    profiles: bool = True,
    profile: dict | None = None,
    stages=PLAIN,
    reviews: dict | None = None,
) -> tuple[DatasetLayer, RecommendationsLayer, ProfilesLayer | None]:
    """Top-k for every user of today's log from the current champions, then their profiles
    (with what the reviews say: ``reviews``, the nightly run's ReviewConfig overrides, finds
    its reviews layer; nothing is registered here)."""
    dataset = data_path(spec, root, 1, 0, stages)  # one fold: only the serving view is read
    recs = stages.recommend(dataset, list(families), root, k, serve_family, explore_share)
    prof = None
    if profiles:
        tags = {"interestflow.spec": dataset.spec, "interestflow.flow": "recommend"}
        found = stages.reviews(dataset, root, reviews, GateConfig(), tags, False) if _has_reviews(dataset) else None
        prof = stages.profiles(dataset, root, profile or {}, recs.model_uri, {}, tags, found)
    return dataset, recs, prof
