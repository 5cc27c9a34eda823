"""Model tests, parametrised over the registry: shapes, learning, full coverage, round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from components.datasets import Dataset
from components.models import MODELS
from components.models.base import pad_left
from components.recommender import Recommender

N_ITEMS, N_USERS = 40, 30


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(N_ITEMS, size=rng.integers(2, 8), replace=False) for _ in range(N_USERS)]
    return seqs, {"users": torch.arange(N_USERS), "seq": pad_left(seqs, 16, N_ITEMS)}


def build(family, **overrides):
    cls = MODELS[family]
    torch.manual_seed(0)
    text = {}
    if getattr(cls, "uses_text", False):  # unit-length stand-ins for MiniLM vectors
        text = {"item_text": torch.nn.functional.normalize(torch.randn(N_ITEMS, 384), dim=1)}
    return cls(cls.Config(**{"dim": 8, **overrides}), N_ITEMS, N_USERS, **text)


def test_registry_names_are_the_families():
    assert set(MODELS) >= {"mf"}
    for name, cls in MODELS.items():
        assert hasattr(cls, "Config") and callable(cls.loss) and callable(cls.score), name
        assert cls.__module__ == f"components.models.{name}"


@pytest.mark.parametrize("family", MODELS)
def test_score_covers_every_item(family):
    _, batch = tiny_batch()
    scores = build(family).score(batch)
    assert scores.shape == (N_USERS, N_ITEMS) and torch.isfinite(scores).all()


@pytest.mark.parametrize("family", MODELS)
def test_loss_falls_within_a_few_steps(family):
    _, batch = tiny_batch()
    model = build(family)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = model.loss(batch)
    for _ in range(20):
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first.item()


@pytest.mark.parametrize("family", MODELS)
def test_unknown_user_still_gets_finite_scores(family):
    _, batch = tiny_batch()
    batch["users"] = torch.full((N_USERS,), N_USERS)
    assert torch.isfinite(build(family).score(batch)).all()


def _recommender(family):
    model = build(family)
    items = np.array([f"i{j:03d}" for j in range(N_ITEMS)])
    users = np.array([f"u{j:03d}" for j in range(N_USERS)])
    return Recommender(family, {**model.config.__dict__}, model.state_dict(), items, users)


@pytest.mark.parametrize("family", MODELS)
def test_recommender_bytes_round_trip_gives_the_same_scores(family):
    rec = _recommender(family)
    again = Recommender.from_bytes(rec.to_bytes())
    _, batch = tiny_batch()
    assert torch.equal(rec.model.score(batch), again.model.score(batch))


@pytest.mark.parametrize("family", MODELS)
def test_scorer_maps_a_model_onto_new_ids(family):
    """Yesterday's model on today's catalogue: known items keep their scores, new ones are -inf."""
    rec = _recommender(family)
    seqs, batch = tiny_batch()
    today_items = np.concatenate([rec.item_ids[::-1], ["new-item"]])  # reordered + one new
    data = Dataset(
        n_items=N_ITEMS + 1,
        n_users=N_USERS,
        seqs=seqs,
        fold=np.zeros(N_USERS, dtype=np.int64),
        item_ids=today_items,
        user_ids=rec.user_ids,
    )
    today_seq = pad_left([N_ITEMS - 1 - s for s in seqs], 16, N_ITEMS + 1)
    scores = rec.scorer_for(data)({"users": batch["users"], "seq": today_seq})
    ref = rec.model.score(batch).detach()
    assert torch.allclose(scores[:, :N_ITEMS], ref.flip(1))
    assert torch.isinf(scores[:, N_ITEMS]).all()


@pytest.mark.parametrize("family", MODELS)
def test_pyfunc_predict_returns_top_k_without_history(family):
    from components.pyfunc import RecommenderModel

    rec = _recommender(family)
    frame = pd.DataFrame({"user_id": ["u001", "nobody"], "history": [["i001", "i002"], ["i003"]]})
    out = RecommenderModel().predict_with(rec.to_bytes(), frame, k=5)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score"] and len(out) == 10
    assert not set(out[out.user_id == "u001"].item_id) & {"i001", "i002"}
    assert out.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()


@pytest.mark.parametrize("family", [f for f in MODELS if "sampled" in MODELS[f].Config.__dataclass_fields__])
def test_sampled_softmax_option_also_learns(family):
    _, batch = tiny_batch()
    model = build(family, sampled=10, dropout=0.0)

    def loss_with_fixed_negatives():
        torch.manual_seed(1)
        return model.loss(batch)

    first = loss_with_fixed_negatives().item()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert loss_with_fixed_negatives().item() < 0.8 * first


@pytest.mark.parametrize("family", MODELS)
def test_mlflow_pyfunc_round_trip_gives_the_same_top10(family):
    import mlflow

    from components import tracking
    from components.pyfunc import RecommenderModel

    rec = _recommender(family)
    frame = pd.DataFrame({"user_id": ["u001", "u007"], "history": [["i001", "i002", "i010"], ["i003"]]})
    direct = RecommenderModel().predict_with(rec.to_bytes(), frame, k=10)
    run_id = tracking.create_run(f"roundtrip-{family}", {}, {"test": "pyfunc"})
    uri = tracking.log_model(run_id, rec.to_bytes(), frame)
    loaded = mlflow.pyfunc.load_model(uri)
    again = loaded.predict(frame)
    assert again["item_id"].tolist() == direct["item_id"].tolist()
    assert loaded.metadata.signature is not None
    assert np.allclose(again["score"], direct["score"], rtol=1e-6)


@pytest.mark.parametrize("with_bias", ["learned", "fixed", None])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_fused_cross_entropy_equals_torch_value_and_gradients(monkeypatch, with_bias, chunk_rows):
    """LinearCrossEntropy gives F.cross_entropy's loss and gradients, whatever the chunking."""
    from torch.nn import functional as F

    from components.models import base

    n_items = 50
    monkeypatch.setitem(base._CHUNK_ELEMS, "cpu", chunk_rows * n_items)
    g = torch.Generator().manual_seed(0)
    leaf_q = torch.randn(23, 6, generator=g, requires_grad=True)
    table = torch.randn(n_items, 6, generator=g, requires_grad=True)
    bias = torch.randn(n_items, generator=g, requires_grad=with_bias == "learned") if with_bias else None
    target = torch.randint(0, n_items, (23,), generator=g)

    def grads(loss_fn):
        for t in (leaf_q, table, bias):
            if t is not None:
                t.grad = None
        q = leaf_q * 2.0  # a non-leaf query, as the models pass
        loss = loss_fn(q)
        loss.backward()
        return loss.detach(), [None if t is None else t.grad for t in (leaf_q, table, bias)]

    ref, ref_g = grads(lambda q: F.cross_entropy(q @ table.T + (0 if bias is None else bias), target))
    got, got_g = grads(lambda q: base.full_ce(q, target, table, bias))
    torch.testing.assert_close(got, ref)
    for a, b in zip(got_g, ref_g, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_fused_cross_entropy_under_bf16_autocast_stays_close_and_fp32():
    """bf16 matmuls (Lightning's bf16-mixed), softmax and gradients in fp32."""
    from torch.nn import functional as F

    from components.models import base

    g = torch.Generator().manual_seed(1)
    q = torch.randn(300, 32, generator=g, requires_grad=True)
    table = torch.randn(2000, 32, generator=g, requires_grad=True)
    target = torch.randint(0, 2000, (300,), generator=g)
    ref = F.cross_entropy(q @ table.T, target)
    ref_gq, ref_gw = torch.autograd.grad(ref, (q, table))
    with torch.autocast("cpu", torch.bfloat16):
        got = base.full_ce(q, target, table, None)
    gq, gw = torch.autograd.grad(got, (q, table))
    assert got.dtype == gq.dtype == gw.dtype == torch.float32
    assert abs(got.item() - ref.item()) < 1e-2 * ref.item()
    for a, b in ((gq, ref_gq), (gw, ref_gw)):
        assert ((a - b).norm() / b.norm()).item() < 3e-2
    with torch.no_grad():  # no gradients wanted: the loss alone
        assert abs(base.full_ce(q, target, table, None).item() - ref.item()) < 1e-5


def test_cnn_convolutions_as_matmuls_equal_the_conv_layers():
    """cnn computes Caser's convolutions with matmuls over its Conv2d weights: same numbers."""
    from torch.nn import functional as F

    model = build("cnn", dropout=0.0).eval()
    window = torch.randint(0, N_ITEMS + 1, (9, model.config.window))
    users = torch.randint(0, N_USERS + 1, (9,))
    e = model.embed(window).unsqueeze(1)
    v = model.vertical(e).flatten(1)
    h = [F.relu(conv(e).squeeze(3)).amax(dim=2) for conv in model.horizontal]
    z = F.relu(model.fc(torch.cat([v, *h], dim=1)))
    torch.testing.assert_close(model(window, users), torch.cat([z, model.user(users)], dim=1))
