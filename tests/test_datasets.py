"""Code tests: the leave-one-out protocol, folds, and the views training reads."""

import numpy as np
import pandas as pd
import pytest

from components import datasets, features, storage
from components.behaviour import TYPE_CODES
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
    items, users = features.build_vocab_and_sequences(ev, items)
    return items, users.to_pandas()


def test_vocab_is_sorted_and_sequences_follow_time_then_source_order():
    items, users = hand_made()
    assert items["item_id"].tolist() == list("abcde") and items["item_idx"].tolist() == [0, 1, 2, 3, 4]
    u1 = users.set_index("user_id").loc["u1", "items"].tolist()
    assert u1 == [2, 1, 0, 3, 4]  # c, then b before a (same day, source order), d, e


def test_sequences_from_a_partitioned_layer_equal_those_from_the_frame(tmp_path):
    """03_features reads the rows of 02_validated's partitions in file order, with their source
    positions (Polars); the sequences are those of the frame in source order."""
    ts = pd.to_datetime([1, 2, 2, 3, 40, 1, 2, 35, 1, 2], unit="D", utc=True)
    ev = pd.DataFrame(
        {
            "user_id": pd.array(["u2", "u1", "u1", "u1", "u1", "u3", "u2", "u2", "u1", "u3"], dtype="string"),
            "item_id": pd.array(["c", "a", "b", "d", "e", "a", "b", "c", "a", "e"], dtype="string"),
            "ts": ts,
            "event_type": pd.array(["view", "cart", "view", "purchase", "view"] * 2, dtype="string"),
            "value": [1.0, np.nan, 2.0, 3.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
            "seq": np.zeros(10),  # every tie left to the source order
        }
    )
    items = pd.DataFrame({"item_id": list("edcba"), "title": None, "categories": None, "brand": None, "price": np.nan})
    _, expected = features.build_vocab_and_sequences(ev, items)
    layer = str(tmp_path / "events")
    storage.write_partitioned(ev, layer, "month")  # two months: rows leave their source order
    _, got = features.build_vocab_and_sequences(storage.read_partitioned_rows(layer), items)
    assert got.schema == expected.schema
    pd.testing.assert_frame_equal(got.to_pandas(), expected.to_pandas())
    u1 = expected.to_pandas().set_index("user_id").loc["u1"]
    assert u1["items"].tolist() == [0, 0, 1, 3, 4]  # a (day 1), a then b (day 2, source order), d, e
    assert np.isnan(u1["values"][1]) and u1["types"].tolist()[1:3] == [TYPE_CODES["cart"], TYPE_CODES["view"]]


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


def _random_dataset(n_users: int, n_items: int = 40, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, n_items, size=int(rng.integers(3, 9))) for _ in range(n_users)]
    return Dataset(
        n_items=n_items,
        n_users=n_users,
        seqs=seqs,
        fold=np.zeros(n_users, dtype=np.int64),
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
        user_ids=np.array([f"user-{u}" for u in range(n_users)]),
    )


def test_above_a_size_the_test_figures_come_from_a_fixed_sample_of_users(monkeypatch):
    """Up to $INTERESTFLOW_TEST_SAMPLE_ABOVE test users every one counts; above, a sample of
    $INTERESTFLOW_TEST_SAMPLE_USERS drawn by a keyed hash of the user id: the same users
    whatever the order or the other users, and the figures are exactly those of that subset."""
    from components import evaluation

    data = _random_dataset(600)
    monkeypatch.setattr(evaluation, "TEST_SAMPLE_MIN", 10)  # the floor is 50,000: a small log can't reach it
    monkeypatch.setenv(evaluation.TEST_SAMPLE_ABOVE_ENV, "1000")
    monkeypatch.setenv(evaluation.TEST_SAMPLE_USERS_ENV, "200")
    assert evaluation.final_view(data)[1] is None  # 600 test users: all of them
    monkeypatch.setenv(evaluation.TEST_SAMPLE_ABOVE_ENV, "500")
    view, n = evaluation.final_view(data)
    assert n == 200 == len(view.eval_users) and len(set(view.eval_users.tolist())) == 200
    chosen = set(data.user_ids[view.eval_users])

    # Fixed: another order of the users, and 100 more of them, keep the chosen ones chosen.
    more = _random_dataset(700, seed=1)
    keep = evaluation.test_sample(more.user_ids[::-1])
    picked = set(more.user_ids[::-1][keep])
    assert len(picked) == 200 and len(picked & chosen) > 150  # 200 of 700 now: most of the 200 of 600 stay
    assert picked & set(more.user_ids[:600]) <= chosen  # and none of the first 600 enters that was out

    # Exactly the subset's figures: the popularity baseline through the sample equals it on the subset.
    full = data.view("final")
    ranks, top, _ = evaluation.rank_view(evaluation.popularity_scorer(full, 40), full, 40)
    pos = np.flatnonzero(np.isin(full.eval_users, view.eval_users))
    by_hand = evaluation.full_report(ranks[pos], top[pos], full.subset(pos), 40)
    assert evaluation.popularity_report(data) == pytest.approx(by_hand)


@pytest.mark.parametrize("target", [(), ("purchase",)])
def test_target_positions_for_every_user_at_once_are_each_users_own(target):
    """The vectorised leave-one-out positions equal Behaviour.targets user by user: users with
    no events, one target, targets too early, and many; with every event a target (its own,
    per-user path) and with one target type among three."""
    from components.batches import flatten
    from components.behaviour import TYPE_CODES, Behaviour

    rng = np.random.default_rng(0)
    codes = np.array([TYPE_CODES[t] for t in ("view", "cart", "purchase")], dtype=np.int8)
    types = [codes[rng.integers(0, 3, size=int(rng.integers(0, 12)))] for _ in range(500)]
    behaviour = Behaviour(target=target)
    val, test = behaviour.target_positions(*flatten(types), datasets.MIN_EVENTS_FOR_TARGETS - 2)
    expected = [behaviour.targets(t, datasets.MIN_EVENTS_FOR_TARGETS - 2) for t in types]
    assert list(zip(val.tolist(), test.tolist(), strict=True)) == expected
    assert (test >= 0).any() and (test < 0).any()
