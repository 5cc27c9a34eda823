"""Behaviour (components/behaviour.py): event-type mapping, target-type leave-one-out, the
exclusion policies, the recent-interaction baseline, and one-type logs unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components import datasets, evaluation, events, features, lake, storage
from components.behaviour import PAD_TYPE, TYPE_CODES, Behaviour
from components.datasets import Dataset
from components.models import MODELS, SideInputs

SPEC = """name: shop
events:
  uri: events.csv
  columns: {{user_id: user, item_id: item, ts: t, event_type: kind}}
  ts_unit: s
  event_types: {{pv: view, fav: favorite, cart: cart, buy: purchase}}
items:
  from_events: true
  columns: {{item_id: item, categories: cat}}
behaviour: {behaviour}
"""


def write_shop(tmp_path: Path, rows: list[tuple], behaviour: str = "{target: [purchase], exclude: target}") -> Path:
    frame = pd.DataFrame(rows, columns=["user", "item", "cat", "kind", "t"])
    frame["t"] += 1_600_000_000  # September 2020
    frame.to_csv(tmp_path / "events.csv", index=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(behaviour=behaviour))
    return spec


ROWS = [  # user, item, category, kind, unix seconds
    ("u1", "a", "c1", "pv", 100),
    ("u1", "b", "c1", "buy", 200),
    ("u1", "c", "c2", "pv", 300),
    ("u1", "d", "c2", "cart", 350),
    ("u1", "d", "c2", "buy", 400),
    ("u1", "e", "c3", "pv", 500),  # after u1's last purchase: never in the test history
    ("u2", "a", "c1", "pv", 100),
    ("u2", "b", "c1", "buy", 150),  # u2's only purchase: trained on, not evaluated
    ("u2", "c", "c2", "fav", 160),
    ("u3", "b", "c1", "buy", 100),
    ("u3", "a", "c1", "pv", 110),
    ("u3", "b", "c1", "buy", 120),
    ("u3", "c", "c2", "pv", 130),
    ("u3", "b", "c1", "buy", 140),  # a repeat purchase
]


def test_unmapped_event_types_are_rejected_with_counts(tmp_path):
    spec = write_shop(tmp_path, [*ROWS, ("u1", "a", "c1", "clk", 600), ("u2", "a", "c1", "clk", 610)])
    lake_root = str(tmp_path / "lake")
    with pytest.raises(events.SpecError) as e:
        events.ingest(spec, lake_root)
    msg = str(e.value)
    assert "events.csv" in msg and "'kind'" in msg and "'clk': 2" in msg and "2 of 16 rows" in msg
    reports = list((tmp_path / "lake" / "quarantine").glob("*/report.md"))
    assert reports and "'clk': 2" in reports[0].read_text()


def test_a_mapping_onto_no_contract_type_is_a_spec_error(tmp_path):
    spec = write_shop(tmp_path, ROWS)
    spec.write_text(spec.read_text().replace("buy: purchase", "buy: order"))
    with pytest.raises(events.SpecError, match="'order'"):
        events.load_spec(spec)


def test_the_catalogue_is_derived_from_the_events(tmp_path):
    raw = events.ingest(write_shop(tmp_path, ROWS), str(tmp_path / "lake"))
    items = storage.read_parquet(lake.file(raw.uri, "items.parquet")).sort_values("item_id")
    assert items["item_id"].tolist() == list("abcde")
    assert items["categories"].tolist() == ["c1", "c1", "c2", "c2", "c3"]
    assert raw.behaviour == Behaviour(target=("purchase",), exclude="target")
    ev = storage.read_partitioned(lake.file(raw.uri, lake.EVENTS))
    assert set(ev["event_type"]) == {"view", "favorite", "cart", "purchase"}
    assert raw.ignored_columns["events"] == []  # the category column is used, by the catalogue


def shop_dataset(tmp_path, behaviour="{target: [purchase], exclude: target}") -> Dataset:
    from components import pipeline

    return Dataset.load(pipeline.build_datasets(_features(tmp_path, behaviour), str(tmp_path / "lake"), 2, 0))


def _features(tmp_path, behaviour):
    from components import validation

    root = str(tmp_path / "lake")
    raw = events.ingest(write_shop(tmp_path, ROWS, behaviour), root)
    return features.build_features(validation.validate(raw, root), root)


def ids(data: Dataset, idx) -> list[str]:
    return [str(data.item_ids[i]) for i in idx]


def test_targets_are_the_last_two_purchases_and_histories_stop_before_them(tmp_path):
    data = shop_dataset(tmp_path)
    u = {str(x): i for i, x in enumerate(data.user_ids)}
    final = data.view("final")
    by_user = {str(data.user_ids[x]): p for p, x in enumerate(final.eval_users)}
    assert set(by_user) == {"u1", "u3"}  # u2 has one purchase: not evaluated
    p1 = by_user["u1"]
    assert ids(data, [final.eval_targets[p1]]) == ["d"]
    assert ids(data, final.eval_hist[p1]) == ["a", "b", "c", "d"]  # the cart of d, not the later view of e
    assert ids(data, final.train_seqs[u["u2"]]) == ["a", "b", "c"]  # u2 trains on everything
    assert ids(data, final.train_seqs[u["u1"]]) == ["a", "b", "c", "d"]
    fold = data.fold[u["u1"]]
    v = data.view("fold", fold)
    p = list(v.eval_users).index(u["u1"])
    assert ids(data, [v.eval_targets[p]]) == ["b"] and ids(data, v.eval_hist[p]) == ["a"]
    assert ids(data, v.train_seqs[u["u1"]]) == ["a"]


class FixedScores:
    """A scorer that ranks items a > b > c > d > e for everybody."""

    def __call__(self, batch):
        return torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]).expand(len(batch["users"]), -1).clone()


@pytest.mark.parametrize(
    "exclude, u3_rank, u3_top",
    [
        ("interacted", 3, ["d", "e"]),  # u3 touched a, b, c: all excluded, b (the target) too: a miss
        ("target", 4, ["a", "c", "d"]),  # only bought items excluded: b is a miss, viewed a and c come back
        ("none", 1, ["a", "b", "c"]),  # repeat purchases allowed: b is recommended and hit
    ],
)
def test_each_exclusion_policy_ranks_what_serving_ranks(tmp_path, exclude, u3_rank, u3_top):
    from components.recommender import Recommender

    data = shop_dataset(tmp_path, f"{{target: [purchase], exclude: {exclude}}}")
    final = data.view("final")
    ranks, top, scores = evaluation.rank_view(FixedScores(), final, data.n_items, k=3)
    p3 = [str(data.user_ids[x]) for x in final.eval_users].index("u3")
    assert ids(data, [final.eval_targets[p3]]) == ["b"]  # u3 buys b again
    assert ranks[p3] == u3_rank
    assert ids(data, top[p3][np.isfinite(scores[p3])]) == u3_top
    # Serving u3 from the same typed history leaves out exactly the same items.
    mf = MODELS["mf"](MODELS["mf"].Config(dim=4), data.n_items, data.n_users)
    rec = Recommender("mf", {"dim": 4}, mf.state_dict(), data.item_ids, data.user_ids, data.behaviour)
    hist, types = final.eval_hist[p3], final.eval_types[p3]
    names = [list(TYPE_CODES)[t] for t in types]
    served = rec.recommend(["u3"], [ids(data, hist)], k=5, types=[names])
    excluded = set(ids(data, data.behaviour.excluded(hist, types)))
    assert set(served.item_id[np.isfinite(served.score)]) == set(data.item_ids) - excluded


def test_the_recent_interaction_baseline_by_hand():
    b = Behaviour(target=("purchase",), weights={"view": 1, "favorite": 2, "cart": 3, "purchase": 4}, exclude="none")
    v = datasets.View(
        train_seqs=[np.array([3, 3, 4])],  # popularity among purchases: only d (3) ... see types
        eval_users=np.array([0]),
        eval_hist=[np.array([0, 1, 2, 0])],  # a (view), b (cart), c (view), a (favorite)
        eval_targets=np.array([1]),
        train_types=[np.array([TYPE_CODES["purchase"], TYPE_CODES["purchase"], TYPE_CODES["view"]])],
        eval_types=[np.array([TYPE_CODES[t] for t in ("view", "cart", "view", "favorite")])],
        behaviour=b,
    )
    ranks, top, _ = evaluation.rank_view(evaluation.recent_scorer(v, 5), v, 5, k=5, max_len=10)
    # b (cart, 3) > a (favorite, 2; its latest strong event) > c (view, 1), then by purchases: d, then e.
    assert top[0].tolist() == [1, 0, 2, 3, 4]
    assert ranks[0] == 0


def test_a_one_type_log_keeps_todays_splits(tmp_path):
    from conftest import sample_frames, write_slice

    from components import pipeline

    ev, items = sample_frames(80)
    spec = write_slice(tmp_path / "src", ev, items)
    ds = pipeline.data_path(str(spec), str(tmp_path / "lake"), 2, 0)
    data = Dataset.load(ds)
    lengths = np.array([len(s) for s in data.seqs])
    eligible = lengths >= datasets.MIN_EVENTS_FOR_TARGETS
    assert ((data.fold >= 0) == eligible).all()
    assert (data.test_pos[eligible] == lengths[eligible] - 1).all() and (
        data.val_pos[eligible] == lengths[eligible] - 2
    ).all()
    final = data.view("final")  # the old rule: history = all but the last event, targets = the last events
    assert [h.tolist() for h in final.eval_hist] == [data.seqs[u][:-1].tolist() for u in final.eval_users]
    assert final.eval_targets.tolist() == [data.seqs[u][-1] for u in final.eval_users]
    fold = data.view("fold", 0)
    assert [s.tolist() for s in fold.train_seqs] == [
        (s[:-2] if f == 0 else s[:-1] if f >= 0 else s).tolist() for s, f in zip(data.seqs, data.fold, strict=True)
    ]


@pytest.mark.parametrize("family", ["mf", "lstm", "cnn", "bert"])
def test_a_one_type_log_trains_exactly_as_without_behaviours(family):
    """One event type: the behaviour embedding stays zero and frozen, weights are 1, every next
    event is a target, so the loss and every gradient are those of an untyped model."""
    cls, n_items, n_users = MODELS[family], 12, 4
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, n_items, (n_users, 6), generator=g)
    seq[0, :2] = n_items  # padding
    batch = {"users": torch.arange(n_users), "seq": seq, "types": torch.where(seq == n_items, PAD_TYPE, 5)}
    text = torch.randn(n_items, 384, generator=g)
    b = Behaviour()
    side = SideInputs(
        item_text=text,
        item_counts=torch.ones(n_items),
        type_weights=torch.as_tensor(b.weight_table()),
        target_types=torch.as_tensor(b.target_table()),
        typed=False,
    )
    grads = []
    for behaviours in (True, False):
        torch.manual_seed(0)
        cfg = cls.Config(**({"dim": 8} if family != "bert" else {"dim": 8, "heads": 2}), behaviours=behaviours)
        model = cls(cfg, n_items, n_users, side if behaviours else dataclasses.replace(side, typed=True))
        torch.manual_seed(1)
        loss = model.loss(batch if behaviours else {k: v for k, v in batch.items() if k != "types"})
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (l1, g1), (l2, g2) = grads
    assert l1 == l2 and g1.keys() == g2.keys()
    assert all(torch.equal(g1[n], g2[n]) for n in g1)


def test_several_types_train_the_behaviour_embedding():
    cls = MODELS["lstm"]
    b = Behaviour(target=("purchase",))
    side = SideInputs(
        type_weights=torch.as_tensor(b.weight_table()), target_types=torch.as_tensor(b.target_table()), typed=True
    )
    model = cls(cls.Config(dim=8, hidden=8), 10, 3, side)
    seq = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [1, 3, 5, 7]])
    types = torch.tensor([[0, 3, 4, 4], [0, 0, 4, 0], [2, 4, 0, 4]])
    model.loss({"users": torch.arange(3), "seq": seq, "types": types}).backward()
    assert model.behaviour.weight.requires_grad and model.behaviour.weight.grad.abs().sum() > 0
    assert model.behaviour.weight.grad[PAD_TYPE].abs().sum() == 0  # padding has no vector


def test_mf_confidences_follow_the_behaviour_weights():
    cls = MODELS["mf"]
    b = Behaviour(weights={"view": 1, "purchase": 4})
    side = SideInputs(type_weights=torch.as_tensor(b.weight_table()))
    model = cls(cls.Config(dim=4, alpha=1.0, reg=0.0), 3, 1, side)
    with torch.no_grad():
        model.users.weight.zero_()  # every score 0: the loss is the sum of the confidences / batch
    batch = {"users": torch.tensor([0]), "seq": torch.tensor([[0, 1, 1]]), "types": torch.tensor([[0, 0, 4]])}
    # item 0 viewed (1 + 1*1), item 1 viewed and bought (1 + 1*4): (2 + 5) / 1
    assert model.loss(batch).item() == pytest.approx(7.0)


def test_the_fused_cross_entropy_with_sparse_logits_matches_autograd(monkeypatch):
    """The repeat term enters the fused loss as sparse logits; loss and every gradient equal
    ``F.cross_entropy`` on the dense logits, across chunks."""
    from torch.nn import functional as F

    from components.models import loss as loss_

    monkeypatch.setattr(loss_, "_CHUNK_ELEMS", {"cpu": 22})  # two rows per chunk
    g = torch.Generator().manual_seed(0)
    n, d, m = 7, 4, 11
    q, w, b = (torch.randn(*s, generator=g).requires_grad_() for s in ((n, d), (m, d), (m,)))
    t = torch.randint(0, m, (n,), generator=g)
    rows = torch.tensor([0, 0, 2, 2, 2, 5, 6])
    cols = torch.tensor([1, 1, 3, 4, int(t[2]), 0, int(t[6])])  # a duplicate pair, and targets among them
    v = torch.randn(7, generator=g).requires_grad_()
    ours = loss_.full_ce(q, t, w, b, (rows, cols, v))
    ours.backward()
    mine = [x.grad.clone() for x in (q, w, b, v)]
    for x in (q, w, b, v):
        x.grad = None
    ref = F.cross_entropy((q @ w.T + b).index_put((rows, cols), v, accumulate=True), t)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    assert all(torch.allclose(a, x.grad, atol=1e-5) for a, x in zip(mine, (q, w, b, v), strict=True))


@pytest.mark.parametrize("family", ["lstm", "cnn", "bert"])
def test_the_repeat_term_learns_only_where_history_items_can_be_ranked(family):
    cls = MODELS[family]
    b = Behaviour(target=("purchase",), exclude="target")
    side = SideInputs(
        item_text=torch.zeros(10, 384),
        item_counts=torch.ones(10),
        type_weights=torch.as_tensor(b.weight_table()),
        target_types=torch.as_tensor(b.target_table()),
        typed=True,
        repeats=True,
    )
    seq = torch.tensor([[1, 2, 3, 2], [5, 6, 5, 8], [1, 3, 5, 3]])
    types = torch.tensor([[0, 3, 0, 4], [0, 0, 4, 4], [2, 4, 0, 4]])
    batch = {"users": torch.arange(3), "seq": seq, "types": types}
    model = cls(cls.Config(dim=8), 10, 3, side)
    model.loss(batch).backward()
    assert model.repeat.raw_weight.grad.abs().sum() > 0  # the carts and views before the purchases
    with torch.no_grad():
        model.repeat.raw_weight[TYPE_CODES["cart"]] = 5.0 / model.repeat.SPEED  # a cart, whatever is asked for
    model.eval()
    s = model.score(batch)
    assert s[0, 2] - s[0, 4] > 3  # item 2 was carted two steps ago: 5 · exp(-0.13 · 2) more
    frozen = cls(cls.Config(dim=8), 10, 3, dataclasses.replace(side, repeats=False))
    assert not frozen.repeat.raw_weight.requires_grad and not frozen.repeat.active


def test_shop_log_checks_window_bursts_and_no_target_events(tmp_path):
    from components import validation

    root = str(tmp_path / "lake")
    spec = write_shop(tmp_path, ROWS)
    text = spec.read_text().replace(
        "  event_types:",
        '  window: {start: "2020-09-13T12:28:00", end: "2020-09-13T12:33:00"}\n'
        "  max_user_events_per_hour: 4\n  event_types:",
    )
    spec.write_text(text)
    warnings = validation.validate(events.ingest(spec, root), root).warnings
    window = next(w for w in warnings if "ts_within_declared_window" in w)
    assert "events.csv" in window and "column 'ts'" in window and "2 of 14 rows" in window
    assert "user u1: ts 1600000400" in window and "user u1: ts 1600000500" in window
    burst = next(w for w in warnings if "user_events_per_hour_at_most_4" in w)
    assert "user u1: 6 events in the hour" in burst  # u1 has 6 events within the hour, u3 5
    assert "1 of 3 rows" in next(w for w in warnings if "user_target_events_at_least_2" in w)  # u2

    (tmp_path / "nobuy").mkdir()
    spec = write_shop(tmp_path / "nobuy", [r for r in ROWS if r[3] != "buy"])
    root2 = str(tmp_path / "lake2")
    with pytest.raises(validation.DataValidationError, match="target_behaviour_share_above_0") as e:
        validation.validate(events.ingest(spec, root2), root2)
    assert "view: 6" in str(e.value) and "predicts purchase events but the log has none" in str(e.value)


def test_a_layer_of_an_older_layout_is_built_again(tmp_path):
    """A lake written before event types were kept (same data, same key) is not read with
    missing columns: its features and datasets layers are computed again."""
    feats = _features(tmp_path, "{target: [purchase], exclude: target}")
    marker = lake.facts(feats.uri)
    assert marker["layout"] == features.FEATURES_LAYOUT
    users = storage.read_parquet(lake.file(feats.uri, "users.parquet"))
    storage.write_parquet(users.drop(columns=["types", "values"]), lake.file(feats.uri, "users.parquet"))
    lake.mark_complete(feats.uri, {k: v for k, v in marker.items() if k != "layout"})  # as the old code did
    again = features.build_features(feats.validated, str(tmp_path / "lake"))
    assert "types" in storage.read_parquet(lake.file(again.uri, "users.parquet")).columns


def test_weights_order_the_recent_baseline_by_rank_not_size():
    """Weights 1 and 1.5 order a cart before a view as 1 and 4 would: weight first, recency second."""
    b = Behaviour(weights={"view": 1, "cart": 1.5}, exclude="none")
    v = datasets.View(
        train_seqs=[np.array([4])],
        eval_users=np.array([0]),
        eval_hist=[np.array([0, 1, 2, 3])],  # a cart long ago, then three views
        eval_targets=np.array([0]),
        train_types=[np.array([0])],
        eval_types=[np.array([TYPE_CODES["cart"], 0, 0, 0])],
        behaviour=b,
    )
    _, top, _ = evaluation.rank_view(evaluation.recent_scorer(v, 5), v, 5, k=5, max_len=10)
    assert top[0].tolist()[:4] == [0, 3, 2, 1]


def test_targets_are_kept_in_contract_order():
    assert Behaviour(target=("purchase", "cart")).target == ("cart", "purchase")
