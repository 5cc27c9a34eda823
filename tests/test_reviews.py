"""Review text: JSON Lines ingest, sentiment beside VADER on a time split, topics, the review
columns of the profiles, and review text in bert's item vectors without leakage.

One lake is built per module from the shipped review sample (data/reviews: 200 reviewers of
Amazon Musical Instruments, 1,346 reviews) with a marker display name injected, so the
privacy scan has something to look for."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import events, lake, pipeline, promotion, reviews, storage, tracking
from components.config import home
from components.datasets import Dataset

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "reviews" / "reviews.json.gz"
NAME = "Jane-Q-Reviewer-5518"  # a display name no other file holds


def _lines() -> list[str]:
    return gzip.open(SAMPLE, "rt", encoding="utf-8").read().splitlines()


def _spec(folder: Path, data_file: str, name: str = "reviews_slice") -> Path:
    text = (ROOT / "specs" / "reviews_sample.yaml").read_text()
    text = text.replace("../data/reviews/reviews.json.gz", data_file).replace("name: reviews_sample", f"name: {name}")
    spec = folder / "spec.yaml"
    spec.write_text(text)
    return spec


def _write(folder: Path, lines: list[str], gz: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("reviews.json.gz" if gz else "reviews.jsonl")
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path.name


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The real nightly flow on the marked sample, as a dry run with no family to train (the
    recommenders' path has its own flow tests): ingest of the JSON Lines file, the review-text
    and reviews tasks, the profiles and the summary; then the reviews stage once more, plainly,
    registering the sentiment model (a dry run registers nothing)."""
    from flows.nightly import nightly

    folder = tmp_path_factory.mktemp("reviews")
    rows = [json.loads(line) for line in _lines()]
    for r in rows[::7]:
        r["reviewerName"] = NAME
    spec = _spec(folder, _write(folder, [json.dumps(r) for r in rows], gz=True))
    root = str(folder / "lake")
    out = nightly(spec=str(spec), lake=root, families=[], folds=1, dry_run=True, profile={"churn_window_days": 180})
    ds = pipeline.data_path(str(spec), root, 1, 0)  # the flow's layers, reused
    rev = pipeline.analyse_reviews(ds, root)  # the flow's reviews layer, now registered
    return {"root": root, "ds": ds, "rev": rev, "prof": out.profiles, "spec": spec, "out": out}


# -- ingest -------------------------------------------------------------------------------------
def test_json_lines_plain_and_gzip_give_the_same_events(tmp_path):
    lines = _lines()[:200]
    a = events.load_spec(_spec(tmp_path / "a", _write(tmp_path / "a", lines, gz=False)))
    b = events.load_spec(_spec(tmp_path / "b", _write(tmp_path / "b", lines, gz=True)))
    assert a.events.format == b.events.format == "jsonl"
    ea, eb = events.read_events(a.events), events.read_events(b.events)
    pd.testing.assert_frame_equal(ea, eb)
    first = json.loads(lines[0])
    assert ea.loc[0, "item_id"] == first["asin"]  # an id of digits stays text ("1384719342")
    assert ea.loc[0, "text"] == first["reviewText"].strip() and ea.loc[0, "summary"] == first["summary"]
    assert ea.loc[0, "value"] == first["overall"]
    assert ea.attrs["ignored_columns"] == ["reviewerName", "helpful", "reviewTime"]


def test_a_malformed_line_is_named_with_its_line_number(tmp_path):
    lines = _lines()[:10]
    lines[3] = lines[3][:40]  # cut short: not JSON
    spec = _spec(tmp_path, _write(tmp_path, lines, gz=True))
    where = r"(?s)reviews.json.gz: line 4 is not JSON \(Expecting value at column 41\).*Report: "
    with pytest.raises(events.SpecError, match=where) as bad:
        events.ingest(spec, str(tmp_path / "lake"))
    assert json.loads(_lines()[3])["reviewerID"] not in str(bad.value)  # the line's content is never quoted
    lines = _lines()[:10]
    lines[6] = "[1, 2, 3]"
    spec = _spec(tmp_path, _write(tmp_path, lines, gz=False))
    with pytest.raises(events.SpecError, match=r"line 7 is not a JSON object"):
        events.ingest(spec, str(tmp_path / "lake"))


def test_the_unmapped_personal_column_never_reaches_the_lake_or_mlflow(built, caplog):
    root, ds = Path(built["root"]), built["ds"]
    warnings = " ".join(ds.features.validated.warnings)
    assert "reviewerName" in warnings and "dropped at ingest" in warnings
    for path in [p for p in root.rglob("*") if p.is_file()]:
        assert NAME.encode() not in path.read_bytes(), path
    store = [home() / "mlflow.db", *(p for p in (home() / "mlartifacts").rglob("*") if p.is_file())]
    assert store and not any(NAME.encode() in p.read_bytes() for p in store)
    text = storage.read_partitioned(lake.file(built["ds"].features.validated.uri, lake.EVENTS))
    assert "text" in text and "summary" in text and "reviewerName" not in text


def test_json_ids_that_became_numbers_stay_whole():
    ids, _ = events.clean_ids(pd.Series([123.0, np.nan, 7.0]), strip=True)
    assert ids.tolist()[0] == "123" and ids.isna().tolist() == [False, True, False] and ids.tolist()[2] == "7"


# -- sentiment ---------------------------------------------------------------------------------
def _frame(stars: list[float]) -> pd.DataFrame:
    n, rng = len(stars), np.random.default_rng(0)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    return pd.DataFrame(
        {
            "user_idx": np.zeros(n, dtype=np.int64),
            "pos": np.arange(n),
            "item_idx": np.arange(n),
            "ts": np.arange(n) * 86400,
            "stars": stars,
            "text": ["fine strings"] * n,
            "embedding": list(vectors),
            "summary_embedding": list(vectors),
        }
    )


def test_a_tiny_or_mislabelled_review_log_is_skipped_with_reasons_not_a_crash():
    report, scored, table, clf, tm = reviews.analyse(_frame([5.0, 4.0, 5.0, np.nan, 1.0]), reviews.ReviewConfig())
    assert clf is None and tm is None and table.empty and (scored["topic"] == -1).all()
    assert "three star classes" in report["sentiment_skipped"] and "fewer than" in report["topics_skipped"]
    report, *_ = reviews.analyse(_frame([0.0, 10.0, 3.0] * 20), reviews.ReviewConfig())
    assert "outside" in report["sentiment_skipped"] and report["n_topics"] == 3


def test_time_split_keeps_every_later_review_out_of_training():
    ts = np.array([5, 1, 9, 9, 3, 7, 9, 2, 8, 4])
    train, test = reviews.time_split(ts, 0.3)
    assert not (train & test).any() and (train | test).all()
    assert ts[train].max() < ts[test].min()


def test_sentiment_is_tested_on_later_reviews_beside_vader(built):
    rev = built["rev"]
    r = rev.report
    scored = storage.read_parquet(lake.file(rev.uri, "scored.parquet"))
    test = scored["sentiment_test"].to_numpy()
    labelled = scored["stars"].notna().to_numpy()
    assert scored.loc[~test & labelled, "ts"].max() < scored.loc[test, "ts"].min()  # no later review in training
    assert r["sentiment_test_reviews"] == int((test & labelled).sum()) > 100
    for k in ("sentiment_auc", "vader_auc", "sentiment_macro_f1", "vader_macro_f1"):
        assert 0 < r[k] <= 1
    assert r["sentiment_auc"] > 0.75  # MiniLM beats chance by far even on 1,346 reviews
    assert scored["sentiment"].between(-1, 1).all()
    # the classifier is a registered model with its own gate
    assert rev.registered.name == tracking.model_name(pipeline.SENTIMENT)
    assert rev.decision.promote and rev.decision.metric == "auc"
    assert tracking.alias_version(rev.registered.name, tracking.CHAMPION) == rev.registered.version


def test_the_served_sentiment_model_scores_text(built):
    out = tracking.predict(
        built["rev"].model_uri,
        pd.DataFrame({"text": ["Great strings, bright tone, stay in tune.", "Broke after two days. Junk."]}),
    )
    assert list(out.columns) == ["p_negative", "p_neutral", "p_positive", "sentiment", "label"]
    assert out.loc[0, "sentiment"] > out.loc[1, "sentiment"]


def test_a_second_night_is_gated_against_the_champion(built):
    rev = pipeline.analyse_reviews(built["ds"], built["root"], {"c_grid": (1.0,)})  # another config, a challenger
    assert rev.registered.version != built["rev"].registered.version
    assert rev.decision.champion is not None and set(rev.decision.champion) == {"auc", "macro_f1"}
    tags = tracking.version_tags(rev.registered.name, rev.registered.version)
    assert tags["promotion.decision"] in ("promoted", "rejected") and "promotion.champion_auc" in tags
    again = pipeline.analyse_reviews(built["ds"], built["root"], {"c_grid": (1.0,)})  # the same night again
    assert again.registered.version == rev.registered.version and again.registered.reused
    # by hand, as for the recommenders (interestflow promote --family sentiment ...)
    first = built["rev"].registered.version
    promotion.promote_version("sentiment", first, "the first model reads better")
    assert tracking.alias_version(rev.registered.name, tracking.CHAMPION) == first


# -- topics ------------------------------------------------------------------------------------
def test_identical_texts_get_the_same_topic_and_a_refit_the_same_assignment(built):
    frame = storage.read_parquet(lake.file(built["ds"].features.review_uri, "reviews.parquet"))
    texts = frame["text"].tolist()[:400]
    vectors = np.stack(frame["embedding"].to_numpy()[:400])
    texts += texts[:50]
    vectors = np.vstack([vectors, vectors[:50]])
    cfg = reviews.ReviewConfig(n_topics=8)
    _, a, table = reviews.topics(texts, vectors, cfg)
    assert (a[:50] == a[-50:]).all()
    _, b, _ = reviews.topics(texts, vectors, cfg)
    assert (a == b).all()
    assert len(table) == 8 and table["label"].is_unique
    assert len({tuple(k) for k in table["keywords"]}) == 8


def test_topics_have_distinct_keyword_labels(built):
    topics = built["rev"].topics
    assert len(topics) >= 10
    assert len({label for label, _ in topics}) == len(topics)
    assert len({words for _, words in topics}) == len(topics)


# -- profiles ----------------------------------------------------------------------------------
def test_profiles_carry_sentiment_topics_and_a_review_vector(built):
    prof = built["prof"]
    frame = storage.read_parquet(lake.file(prof.uri, "profiles.parquet"))
    for col in (
        "reviews",
        "sentiment_mean",
        "review_topics",
        "review_topic_weights",
        "topic_sentiment",
        "praises",
        "complains",
        "review_summary",
        "review_vector",
        "interest_vector",
    ):
        assert col in frame, col
    assert (frame["reviews"] > 0).all()  # every event of this log is a review
    assert frame["sentiment_mean"].between(-1, 1).all()
    v = np.stack(frame["review_vector"].to_numpy())
    assert v.shape[1] == 384 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    weights = frame["review_topic_weights"].map(lambda w: float(np.sum(w)))
    assert (weights > 0).all() and (weights <= 1 + 1e-6).all()
    summaries = frame["review_summary"][frame["review_summary"] != ""]
    assert summaries.str.match(r"^(praises: [^;]+)?(; )?(complains: .+)?$").all() and len(summaries)
    s = prof.summary
    assert "churn_auc_no_sentiment" in s and s["review_users"] == len(frame)


# -- review text in bert's item vectors ----------------------------------------------------------
def test_no_validation_or_test_review_reaches_an_item_vector(built):
    data = Dataset.load(built["ds"])
    assert data.review_vectors is None and data.review_uri  # read on first use only
    data.load_reviews()
    targets = {(u, int(p)) for u in range(data.n_users) for p in (data.val_pos[u], data.test_pos[u]) if p >= 0}
    target_rows = [int(data.review_rows[u][p]) for u, p in targets if data.review_rows[u][p] >= 0]
    assert target_rows
    views = [data.view("fold", 0), data.view("final")]
    before = [data.item_text_with_reviews(v) for v in views]
    rng = np.random.default_rng(0)
    data.review_vectors[target_rows] = rng.normal(size=(len(target_rows), data.review_vectors.shape[1]))
    after = [data.item_text_with_reviews(v) for v in views]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    # ...and the training rows do count: changing one moves its item's vector
    train_row = next(int(r) for r in data.review_rows[0] if r >= 0 and int(r) not in target_rows)
    data.review_vectors[train_row] += 1.0
    assert not np.array_equal(data.item_text_with_reviews(views[-1]), after[-1])


def test_bert_reads_the_review_mixed_item_vectors(built):
    from components.models import MODELS
    from components.training import side_inputs

    data = Dataset.load(built["ds"])
    view = data.view("final")
    cls = MODELS["bert"]
    plain = side_inputs(cls, data, view, cls.Config())
    mixed = side_inputs(cls, data, view, cls.Config(review_text=True))
    np.testing.assert_array_equal(plain.item_text.numpy(), data.item_text)
    np.testing.assert_array_equal(mixed.item_text.numpy(), data.item_text_with_reviews(view))
    model = cls(cls.Config(review_text=True), data.n_items, data.n_users, mixed)
    np.testing.assert_array_equal(model.text.numpy(), data.item_text_with_reviews(view))
    with pytest.raises(ValueError, match="review_text"):
        cls.Config(review_text=True, fusion="id")
    mf = MODELS["mf"]
    with pytest.raises(ValueError, match="review_text needs bert, or lstm or cnn with text: true"):
        side_inputs(mf, data, view, mf.Config(review_text=True))


def test_the_nightly_flow_ran_the_review_path(built):
    """The flow's tasks made the layers, the summary has the review section, and the flow's
    stage table holds the review tasks."""
    from prefect import Task

    from flows.nightly import TASKS

    out = built["out"]
    assert isinstance(TASKS.review_text, Task) and isinstance(TASKS.reviews, Task)
    assert out.reviews is not None and out.reviews.registered is None  # a dry run registers nothing
    assert out.reviews.uri == built["rev"].uri  # the plain call found the flow's layer
    assert "## What the reviews say" in out.summary and "VADER" in out.summary


def test_churn_reads_only_the_sentiment_of_reviews_before_its_cut():
    from components import profiles

    r = profiles.UserReviews(
        ts=[np.array([10, 20, 30])],
        sentiment=[np.array([0.8, -0.6, -1.0])],
        topic=[np.array([0, 0, 1])],
        vectors=[np.eye(3, 384, dtype=np.float32)],
        topic_labels=["strings", "tuner"],
    )
    seqs, tss, text = [np.array([0, 1, 2])], [np.array([10, 20, 30])], np.eye(3, 8, dtype=np.float32)
    cfg = profiles.ProfileConfig()
    _, x = profiles.activity_features(seqs, tss, 25, np.zeros(3, np.int64), 1, text, cfg, r)
    mean, last, negative = x[0, -3:]
    assert np.isclose(mean, 0.1) and np.isclose(last, -0.6) and np.isclose(negative, 0.5)  # the review at 30 unseen
    row = profiles.review_profile(r, 0, 30, cfg)
    assert row["praises"] == [] and row["complains"] == ["tuner"] and row["review_summary"] == "complains: tuner"
