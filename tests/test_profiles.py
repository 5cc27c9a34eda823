"""Interest profiles: drift on hand-made users, no leakage into churn, exploration, the schema."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import sample_frames, write_slice

from components import evaluation, exploration, features, pipeline, profiles
from components.datasets import Dataset
from components.profiles import DAY, ProfileConfig

CATS = np.array([0, 0, 1, 1, 2, 2])  # item -> category


def test_drift_is_zero_for_identical_windows_and_ln2_nats_for_disjoint_ones():
    cfg = ProfileConfig(drift_by="events", drift_recent=2, min_window_events=2)
    ts = np.arange(4) * DAY
    same = profiles.drift(np.array([0, 2, 1, 3]), ts, CATS, 3, cfg, now=int(ts[-1]))
    disjoint = profiles.drift(np.array([0, 1, 4, 5]), ts, CATS, 3, cfg, now=int(ts[-1]))
    assert same == pytest.approx(0.0, abs=1e-12)
    assert disjoint == pytest.approx(math.log(2))  # nats; = 1 bit


def test_drift_by_days_uses_the_time_window_and_needs_enough_events():
    cfg = ProfileConfig(drift_by="days", drift_recent=10, min_window_events=2)
    ts = np.array([0, 1, 50, 51]) * DAY
    assert profiles.drift(np.array([0, 1, 4, 5]), ts, CATS, 3, cfg, now=int(ts[-1])) == pytest.approx(math.log(2))
    one_recent = np.array([0, 1, 2, 51]) * DAY
    assert math.isnan(profiles.drift(np.array([0, 1, 4, 5]), one_recent, CATS, 3, cfg, now=int(one_recent[-1])))


def test_transitions_count_consecutive_categories():
    t = profiles.transitions([np.array([0, 2, 4]), np.array([1, 0])], CATS, 3)
    assert t[0, 1] == 1 and t[1, 2] == 1 and t[0, 0] == 1 and t.sum() == 3


def test_churn_features_never_read_events_after_the_split():
    cfg = ProfileConfig(churn_window_days=30)
    rng = np.random.default_rng(0)
    text = rng.normal(size=(6, 8)).astype(np.float32)
    seqs = [np.array([0, 1, 2, 3, 4]), np.array([5, 4, 3])]
    tss = [np.array([0, 10, 20, 40, 60]) * DAY, np.array([5, 15, 45]) * DAY]
    as_of = 30 * DAY
    has, x = profiles.activity_features(seqs, tss, as_of, CATS, 3, text, cfg)
    # Change everything at or after the split: other items, other times.
    later = [np.array([0, 1, 2, 5, 5]), np.array([5, 4, 0])]
    later_ts = [np.array([0, 10, 20, 31, 33]) * DAY, np.array([5, 15, 30]) * DAY]
    has2, x2 = profiles.activity_features(later, later_ts, as_of, CATS, 3, text, cfg)
    assert has.tolist() == has2.tolist() == [True, True]
    assert np.array_equal(x, x2, equal_nan=True)
    assert x[0, profiles.FEATURES.index("recency_days")] == 10  # last event before the split: day 20
    # Labels read only their own window.
    assert profiles.churned(tss, as_of, as_of + 30 * DAY).tolist() == [0, 0]
    assert profiles.churned(tss, 61 * DAY, 90 * DAY).tolist() == [1, 1]


def test_exploration_share_zero_is_the_plain_ranking_and_explorers_come_last():
    cand = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    usual = [{0}, {2}]
    assert np.array_equal(exploration.rerank(cand, usual, CATS, 4, 0.0), cand[:, :4])
    out = exploration.rerank(cand, usual, CATS, 4, 0.5)
    assert out[0].tolist() == [0, 1, 2, 3]  # first 2 kept; explorers 2, 3 (category 1) are next anyway
    assert out[1].tolist() == [5, 4, 3, 2]  # user 1 knows category 2: explorers 3, 2 (category 1)
    out = exploration.rerank(np.array([[0, 1, 4, 5, 2, 3]]), [{0}], CATS, 4, 0.5)
    assert out[0].tolist() == [0, 1, 4, 5]
    out = exploration.rerank(np.array([[4, 5, 0, 1, 2]]), [{0, 2}], CATS, 4, 0.5)
    assert out[0].tolist() == [4, 5, 2, 0]  # one novel candidate (2); the other slot: the next plain item


def test_explorers_spread_over_the_catalogue():
    """Two users with the same candidates: the second gets the next novel item, not the same one."""
    cand = np.array([[0, 2, 3, 4], [0, 2, 3, 4]])
    out = exploration.rerank(cand, [{0}, {0}], CATS, 2, 0.5)
    assert out[:, 0].tolist() == [0, 0] and out[0, 1] != out[1, 1]
    assert set(out[:, 1]) <= {2, 3, 4}


@pytest.fixture(scope="module")
def slice_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("profiles")
    spec = write_slice(root / "src", *sample_frames(400), name="profslice")
    lake = str(root / "lake")
    return pipeline.data_path(str(spec), lake, 2, 0), lake


def test_exploration_table_share_zero_matches_the_plain_evaluation(slice_dataset):
    ds, _ = slice_dataset
    data = Dataset.load(ds)
    view = data.view("final")
    pop = evaluation.popularity_scorer(view, data.n_items)
    plain = evaluation.popularity_report(data)
    items = pd.read_parquet(ds.features.uri + "/items.parquet")
    item_cat, _ = features.item_categories(items, 3)
    table = exploration.exploration_table(pop, data, item_cat, shares=(0.0, 0.3))
    assert table[0]["ndcg10"] == pytest.approx(plain["ndcg10"]) and table[0]["coverage10"] == pytest.approx(
        plain["coverage10"]
    )
    assert table[1]["coverage10"] > table[0]["coverage10"]


def test_profile_stage_writes_the_documented_schema(slice_dataset):
    from components import storage, tracking

    ds, lake = slice_dataset
    data = Dataset.load(ds)
    scorer = evaluation.popularity_scorer(data.view("final"), data.n_items)
    out = pipeline.write_profiles(ds, lake, ProfileConfig(churn_window_days=120), scorer=scorer)
    frame = storage.read_parquet(storage.join(out.uri, "profiles.parquet"))
    assert list(frame.columns) == [
        "user_id", "top_categories", "top_weights", "interest_vector", "n_events", "first_ts", "last_ts",
        "recency_days", "span_days", "events_per_30d", "drift_jsd", "churn_risk",
    ]  # fmt: skip
    assert len(frame) == data.n_users and frame["user_id"].is_unique
    assert all(len(v) == 384 for v in frame["interest_vector"])
    assert np.allclose([np.linalg.norm(v) for v in frame["interest_vector"]], 1, atol=1e-4)
    assert frame["churn_risk"].between(0, 1).all()
    assert all(abs(sum(w) - 1) < 1e-6 or len(w) == 3 for w in frame["top_weights"])
    assert frame["drift_jsd"].dropna().between(0, math.log(2) + 1e-9).all()
    s = out.summary
    assert 0 <= s["churn_auc"] <= 1 and 0 <= s["churn_auc_recency_baseline"] <= 1
    assert [r["share"] for r in out.exploration] == [0.0, 0.1, 0.2, 0.3]
    arts = {a.path for a in tracking.client().list_artifacts(out.run_id, "plots")}
    assert arts == {"plots/drift_distribution.png", "plots/churn_roc.png", "plots/exploration_tradeoff.png"}
