"""The lake (DESIGN.md §2): every layer's path and key, the records that name them, and the one
pattern "reuse the layer if it is complete, else compute it, write it, mark it complete".

No other module builds a layer path or writes a completion marker. A layer is a folder
(local or ``s3://``) whose files are each written atomically (components/storage.py); its
``_SUCCESS`` marker is written last, so a run that dies half-way never leaves a layer that
looks complete, and a re-run with the same input reuses it.

Layers and their keys (``<key>`` = ``<spec name>-<data hash>``, the hash of the spec and
its source files)::

    01_raw/<key>                         events/ (by event day: day=YYYY-MM-DD/part-0.parquet, or month), items.parquet
    02_validated/<key>                   events/ (as in 01_raw), items.parquet, warnings.json
    03_features/<key>                    items.parquet (vocabulary), users.parquet (sequences)
    03_features/<key>/text-<model>       item_text.parquet (MiniLM vectors per item)
    03_features/<key>/reviews-<model>    reviews.parquet (review texts, MiniLM vectors, per event)
    03_features/_text_cache/<model>      embeddings.parquet (by text hash, grows)
    04_datasets/<key>-k<K>-s<seed>       splits.parquet (folds, targets)
    05_models/<dataset>/<family>-<cfg>/<fold N | final-eE>   checkpoints, result.json
    05_models/<key>/reviews-<cfg>        review sentiment and topics (scored.parquet, topics.parquet)
    06_recommendations/                  test_recommendations_<family>.parquet, recommendations.parquet
    07_profiles/<key>                    profiles, transitions, exploration, summary
    08_catalogue/<spec>                  the published item table the served champions read
    09_settings/<spec>/<family>          tuned settings: v0001.json, v0002.json, ... and current.json
    quarantine/<key>                     what a failed validation rejected, with its report

Each stage returns a small frozen record of the layer it wrote (:class:`RawLayer`,
:class:`ValidatedLayer`, :class:`FeatureLayer`, :class:`DatasetLayer`, :class:`ModelResult`,
...): its URI, its key and the few facts the next stage needs. Records are plain frozen
dataclasses, so Prefect passes and persists them as task results.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from components import storage
from components.behaviour import Behaviour

MARKER = "_SUCCESS"
EVENTS = "events"
"""01_raw's and 02_validated's event table: a folder of day (or month) partitions (storage.write_partitioned)."""
EVENTS_LAYOUT = 2
"""Their layout's version (1: one events.parquet): a layer of layout 1 is built again."""
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


# -- the pattern --------------------------------------------------------------------------------
def is_complete(uri: str) -> bool:
    """True when the layer at ``uri`` was completed (its marker exists)."""
    return storage.exists(storage.join(uri, MARKER))


def facts(uri: str) -> dict:
    """What the layer recorded in its marker when it was completed."""
    return storage.read_json(storage.join(uri, MARKER))


def mark_complete(uri: str, info: dict | None = None) -> None:
    """Write the layer's marker last: only now does the layer count as complete."""
    storage.write_json(info or {}, storage.join(uri, MARKER))


def build(uri: str, compute: Callable[[str], dict | None], layout: int = 1) -> tuple[dict, bool]:
    """Reuse the layer at ``uri`` if it is complete; else ``compute(uri)`` writes its files
    and returns the facts to record, and the layer is marked complete.

    ``layout``: the version of the layer's file layout. A layer completed under another
    layout (an older release wrote it: e.g. user sequences without event types) is computed
    again, never read with the wrong columns. Returns (facts, reused)."""
    if done(uri, layout):
        return facts(uri), True
    info = {**(compute(uri) or {}), **({"layout": layout} if layout != 1 else {})}
    mark_complete(uri, info)
    return info, False


def done(uri: str, layout: int = 1) -> bool:
    """True when :func:`build` would reuse the layer at ``uri``: complete, in this layout."""
    return is_complete(uri) and facts(uri).get("layout", 1) == layout


def file(uri: str, name: str) -> str:
    """A file inside a layer."""
    return storage.join(uri, name)


def key(uri: str) -> str:
    """A layer's key: the last part of its URI."""
    return storage.name(uri)


# -- paths --------------------------------------------------------------------------------------
def raw_uri(root: str, spec: str, data_hash: str) -> str:
    return storage.join(root, "01_raw", f"{_SAFE.sub('_', spec)}-{data_hash}")


def validated_uri(root: str, raw: RawLayer) -> str:
    return storage.join(root, "02_validated", key(raw.uri))


def features_uri(root: str, validated: ValidatedLayer) -> str:
    return storage.join(root, "03_features", key(validated.uri))


def text_uri(features_layer_uri: str, model_version: str) -> str:
    return storage.join(features_layer_uri, f"text-{model_version}")


def reviews_uri(features_layer_uri: str, model_version: str) -> str:
    return storage.join(features_layer_uri, f"reviews-{model_version}")


TEXT_CACHE_ENV = "INTERESTFLOW_TEXT_CACHE"
"""A text cache shared by several lakes (a folder or s3:// URI): vectors are keyed by the
text's hash and the encoder version, so any lake may reuse them (the test suite shares one
per session; a team may share one across its lakes)."""


def text_cache_uri(root: str, model_version: str) -> str:
    """The text cache of ``root`` (``03_features/_text_cache/<version>``), or of $INTERESTFLOW_TEXT_CACHE."""
    shared = os.environ.get(TEXT_CACHE_ENV)
    if shared:
        return storage.join(shared, model_version, "embeddings.parquet")
    return storage.join(root, "03_features", "_text_cache", model_version, "embeddings.parquet")


def dataset_uri(root: str, features: FeatureLayer, folds: int, seed: int) -> str:
    return storage.join(root, "04_datasets", f"{key(features.uri)}-k{folds}-s{seed}")


def model_uri(root: str, dataset: DatasetLayer, family: str, config: dict, name: str) -> str:
    """05_models/<dataset>/<family>-<config hash>/<name>: one place per distinct training."""
    cfg = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return storage.join(root, "05_models", key(dataset.uri), f"{family}-{cfg}", name)


def review_models_uri(root: str, features: FeatureLayer, config: dict) -> str:
    """05_models/<features key>/reviews-<config hash>: the sentiment classifier and topics."""
    cfg = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return storage.join(root, "05_models", key(features.uri), f"reviews-{cfg}")


def test_recommendations_uri(root: str, family: str) -> str:
    return storage.join(root, "06_recommendations", f"test_recommendations_{family}.parquet")


def recommendations_uri(root: str) -> str:
    return storage.join(root, "06_recommendations", "recommendations.parquet")


def profiles_uri(root: str, features: FeatureLayer) -> str:
    return storage.join(root, "07_profiles", key(features.uri))


def catalogue_uri(root: str, spec: str) -> str:
    """08_catalogue/<spec>: the item table the served champions read between nights
    (components/catalogue.py publishes it, recommender.CatalogueWatch reads it)."""
    return storage.join(root, "08_catalogue", _SAFE.sub("_", spec))


def catalogue_pointer(folder: str) -> str:
    """The published catalogue's ``current.json``: which items file is current."""
    return storage.join(folder, "current.json")


def settings_uri(root: str, spec: str, family: str) -> str:
    """09_settings/<spec>/<family>: the versions of a family's tuned settings for a spec
    (components/tuning.py writes them, the nightly run reads ``current.json``)."""
    return storage.join(root, "09_settings", _SAFE.sub("_", spec), family)


def quarantine_uri(root: str, name: str, stamped: bool = False) -> str:
    """quarantine/<name> (a rejected validation), or quarantine/<name>-<UTC time> (a rejected ingest)."""
    name = _SAFE.sub("_", name)
    return storage.join(root, "quarantine", f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}" if stamped else name)


def relative(root: str, uri: str) -> str:
    """A lake URI relative to the lake root (for summaries); other URIs, and any URI when
    ``root`` is empty (no root known), unchanged."""
    if not root:
        return uri
    prefix = root.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawLayer:
    """01_raw: the spec's sources mapped onto the data contract."""

    uri: str
    spec: str
    """The dataset spec's name."""
    data_hash: str
    """Hash of the spec and its source files: the key of every layer made from them."""
    events_source: str
    """The event file as the spec names it (for reports)."""
    items_source: str
    """The catalogue file as the spec names it."""
    ignored_columns: dict = field(default_factory=dict)
    """Per table, the source columns the spec does not map."""
    behaviour: Behaviour = Behaviour()
    """The spec's behaviour: target types, weights, exclusion policy (components/behaviour.py)."""
    window: dict | None = None
    """The spec's declared time window {start, end} (validation warns outside it)."""
    max_user_events_per_hour: int = 1000
    """Validation warns about users with more events within one hour (bots)."""
    max_user_share: float = 0.2
    """Validation warns about users with a larger share of all events."""
    ts_unit: str | None = None
    """The spec's unit of numeric timestamps (validation names the unit that would fit)."""
    id_whitespace: str = "strip"
    """Ids with surrounding whitespace: stripped with a warning, or rejected."""
    id_fixes: dict = field(default_factory=dict)
    """Per ``<table>.<column>``, what ingest found in the ids (components/events.py:clean_ids)."""
    review_columns: tuple[str, ...] = ()
    """The optional review columns the events carry (``text``, ``summary``): the review
    stages run only when there are some."""


@dataclass(frozen=True)
class ValidatedLayer:
    """02_validated: what passed the expectation suites."""

    uri: str
    raw: RawLayer
    warnings: tuple[str, ...] = ()
    """Messages of the warning expectations that failed (the run went on)."""

    @property
    def data_hash(self) -> str:
        return self.raw.data_hash


@dataclass(frozen=True)
class FeatureLayer:
    """03_features: vocabularies and user sequences, and (after the item-text stage) the text layer."""

    uri: str
    validated: ValidatedLayer
    n_users: int
    n_items: int
    text_uri: str | None = None
    """03_features/<key>/text-<model>: MiniLM vectors per item, once the item-text stage ran."""
    text_stats: dict | None = None
    """Items, embedded, cached, seconds of the item-text stage."""
    review_uri: str | None = None
    """03_features/<key>/reviews-<model>: review texts and vectors, once the review-text stage
    ran on a log with review text (None: no review text)."""
    review_stats: dict | None = None
    """Reviews, embedded, seconds of the review-text stage."""

    @property
    def data_hash(self) -> str:
        return self.validated.data_hash

    @property
    def spec(self) -> str:
        return self.validated.raw.spec


@dataclass(frozen=True)
class DatasetLayer:
    """04_datasets: leave-one-out targets and user folds over a feature layer."""

    uri: str
    features: FeatureLayer
    folds: int
    seed: int
    n_eval_users: int

    @property
    def data_hash(self) -> str:
        return self.features.data_hash

    @property
    def spec(self) -> str:
        return self.features.spec

    @property
    def behaviour(self) -> Behaviour:
        return self.features.validated.raw.behaviour


@dataclass(frozen=True)
class ModelResult:
    """05_models: one training (a cross-validation fold or the final fit) and where it lives."""

    family: str
    stage: str
    """fold or final."""
    fold: int | None
    checkpoint_uri: str
    """05_models/... folder: checkpoints, result.json, recommender.pt (final)."""
    run_id: str | None
    """The MLflow run of this training."""
    train_s: float
    epochs_run: int
    history: tuple = ()
    """Per epoch: train_loss, val_ndcg10, val_hr10, train_epoch_s."""
    best_epoch: int | None = None
    """fold: the epoch with the best validation NDCG@10."""
    metrics: dict = field(default_factory=dict)
    """fold: validation figures of the best epoch."""
    model_uri: str | None = None
    """final: the logged MLflow model (runs:/...)."""
    resumed_from_epoch: int | None = None
    sampler: dict | None = None
    world_size: int = 1
    train_users: int = 0
    train_samples: int = 0
    reused: bool = False
    """True when the same data and config trained before and nothing was trained now."""
    warm_start: dict | None = None
    """What the training started from (a champion's weights: which, ids carried and new)."""


@dataclass(frozen=True)
class TestReport:
    """A final model's test figures beside popularity, and the 06 top-K they came from."""

    __test__ = False  # not a pytest class
    family: str
    data_hash: str
    test: dict
    popularity: dict
    cv: dict
    """Cross-validation mean and std per metric, and the epoch budget chosen."""
    fold_metrics: tuple
    epochs: int
    final_train_s: float
    run_id: str
    model_uri: str
    test_recommendations_uri: str
    reused_training: bool = False
    recent: dict = field(default_factory=dict)
    """The recent-interaction baseline on the same targets (components/evaluation.py)."""
    n_users: int = 0
    """Users in the data; those without two target events train but are not evaluated."""
    n_eval_users: int = 0
    n_test_sample: int | None = None
    """The test figures' users where they are a fixed sample of the test users (evaluation.test_sample); None: all."""
    behaviour: dict = field(default_factory=dict)
    """The behaviour the figures follow (target, weights, exclude)."""
    spec: str = ""
    """The dataset spec's name (what the model was trained on)."""


@dataclass(frozen=True)
class Registered:
    """A registered model version (alias challenger)."""

    name: str
    version: str
    reused: bool = False


@dataclass(frozen=True)
class ReviewsLayer:
    """05_models/<key>/reviews-<cfg>: what the log's reviews say (components/reviews.py)."""

    uri: str
    run_id: str
    """The MLflow run ``reviews``: figures, topic table, topic model, sentiment model."""
    report: dict
    """Sentiment figures beside VADER's, topics, seconds (NaN figures with the reason when skipped)."""
    topics: tuple = ()
    """(label, keywords) per topic."""
    model_uri: str | None = None
    """The logged sentiment pyfunc (runs:/...); None when the classifier could not be fitted."""
    registered: Registered | None = None
    decision: object | None = None
    """The promotion gate's Decision for the sentiment model (None: not registered)."""


@dataclass(frozen=True)
class RecommendationsLayer:
    """06_recommendations/recommendations.parquet from a champion."""

    uri: str
    family: str
    version: str
    rows: int
    users: int
    explore_share: float
    model_uri: str


@dataclass(frozen=True)
class ProfilesLayer:
    """07_profiles: interest profiles, drift, churn risk, exploration table."""

    uri: str
    run_id: str
    summary: dict
    exploration: tuple = ()
    figures: tuple = ()


def dataset_from_dict(d: dict) -> DatasetLayer:
    """A DatasetLayer back from ``dataclasses.asdict`` (the training request crosses a process)."""
    f, v = d["features"], d["features"]["validated"]
    raw = RawLayer(
        **{
            **v["raw"],
            "behaviour": Behaviour(**v["raw"]["behaviour"]),
            "review_columns": tuple(v["raw"].get("review_columns", ())),
        }
    )
    validated = ValidatedLayer(**{**v, "raw": raw, "warnings": tuple(v["warnings"])})
    return DatasetLayer(**{**d, "features": FeatureLayer(**{**f, "validated": validated})})


def open_dataset(root: str, dataset_key: str, text_model: str | None = None) -> DatasetLayer:
    """The record of a finished 04_datasets layer (key ``<spec>-<hash>-k<K>-s<seed>``), rebuilt
    from the facts its layers recorded, for tools that start from a lake rather than a spec.
    ``text_model``: the encoder version whose item-text layer to attach, when it is complete."""
    uri = storage.join(root, "04_datasets", dataset_key)
    key_ = dataset_key.rsplit("-k", 1)[0]  # <spec>-<data hash>, the key of 01_raw .. 03_features
    raw_uri_ = storage.join(root, "01_raw", key_)
    r = facts(raw_uri_)
    raw = RawLayer(
        uri=raw_uri_,
        spec=r["spec"],
        data_hash=key_.rsplit("-", 1)[1],
        events_source=r["events_uri"],
        items_source=r["items_uri"],
        ignored_columns=r.get("ignored_columns", {}),
        behaviour=Behaviour(**r.get("behaviour", {})),
        review_columns=tuple(r.get("review_columns", ())),
    )
    validated = ValidatedLayer(uri=validated_uri(root, raw), raw=raw)
    feats = storage.join(root, "03_features", key_)
    f, d = facts(feats), facts(uri)
    text = text_uri(feats, text_model) if text_model else None
    features = FeatureLayer(
        uri=feats,
        validated=validated,
        n_users=f["n_users"],
        n_items=f["n_items"],
        text_uri=text if text and is_complete(text) else None,
    )
    return DatasetLayer(uri=uri, features=features, folds=d["folds"], seed=d["seed"], n_eval_users=d["n_eval_users"])
