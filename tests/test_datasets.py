"""Code tests: the leave-one-out protocol, folds, and the views training reads."""

import numpy as np
import pandas as pd
import pytest

from components import datasets, features
from components.datasets import Dataset


def hand_made():
    ts = pd.to_datetime([1, 2, 2, 3, 4, 1, 2, 3, 1, 2], unit="D", utc=True)
    ev = pd.DataFrame(
        {
            "user_id": ["u1"] * 5 + ["u2"] * 3 + ["u3"] * 2,
            "item_id": ["c", "a", "b", "d", "e", "a", "b", "c", "a", "e"],
            "ts": ts,
            "event_type": "review",
            "value": np.nan,
            "seq": [0, 2, 1, 3, 4, 5, 6, 7, 8, 9],  # u1's a/b share a day: source order says b first
        }
    )
    items = pd.DataFrame({"item_id": list("edcba"), "title": None, "categories": None, "brand": None, "price": np.nan})
    return features.build_vocab_and_sequences(ev, items)


def test_vocab_is_sorted_and_sequences_follow_time_then_source_order():
    items, users = hand_made()
    assert items["item_id"].tolist() == list("abcde") and items["item_idx"].tolist() == [0, 1, 2, 3, 4]
    u1 = users.set_index("user_id").loc["u1", "items"].tolist()
    assert u1 == [2, 1, 0, 3, 4]  # c, then b before a (same day, source order), d, e


@pytest.fixture
def data():
    _, users = hand_made()
    eligible = users["items"].map(len).to_numpy() >= datasets.MIN_EVENTS_FOR_TARGETS
    fold = datasets.assign_folds(len(users), eligible, 2, seed=0)
    return Dataset(
        n_items=5,
        n_users=3,
        seqs=list(users["items"]),
        fold=fold,
        item_ids=np.array(list("abcde")),
        user_ids=users["user_id"].to_numpy(),
    )


def test_users_without_three_events_have_no_targets(data):
    assert data.fold[2] == -1 and set(data.fold[:2]) <= {0, 1}


def test_final_view_holds_out_exactly_the_test_targets(data):
    v = data.view("final")
    assert v.eval_users.tolist() == [0, 1]
    assert v.eval_targets.tolist() == [4, 2]  # last items of u1, u2
    assert v.train_seqs[0].tolist() == [2, 1, 0, 3] and v.train_seqs[2].tolist() == [0, 4]
    assert [h.tolist() for h in v.eval_hist] == [[2, 1, 0, 3], [0, 1]]


def test_fold_view_holds_out_its_users_validation_targets_only(data):
    k = int(data.fold[0])
    v = data.view("fold", k)
    assert 0 in v.eval_users.tolist()
    pos = v.eval_users.tolist().index(0)
    assert v.eval_targets[pos] == 3 and v.eval_hist[pos].tolist() == [2, 1, 0]
    assert v.train_seqs[0].tolist() == [2, 1, 0]  # no validation or test target
    other = 1
    if data.fold[other] != k:  # users of other folds train on their validation target too
        assert v.train_seqs[other].tolist() == [0, 1]


def test_folds_partition_the_eligible_users():
    eligible = np.array([True] * 10 + [False] * 3)
    fold = datasets.assign_folds(13, eligible, 3, seed=1)
    assert (fold[10:] == -1).all()
    counts = np.bincount(fold[:10], minlength=3)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1
