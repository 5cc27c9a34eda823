"""Model tests, parametrised over the registry: shapes, learning, full coverage, round trips."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.batches import pad_left
from components.models import MODELS, Family, FamilyConfig, SideInputs

N_ITEMS, N_USERS = 40, 30


def tiny_batch(seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(N_ITEMS, size=rng.integers(2, 8), replace=False) for _ in range(N_USERS)]
    return seqs, {"users": torch.arange(N_USERS), "seq": pad_left(seqs, 16, N_ITEMS)}


def side_inputs(seed=0) -> SideInputs:
    """Unit-length stand-ins for MiniLM vectors, item strings and training counts."""
    g = torch.Generator().manual_seed(seed)
    return SideInputs(
        item_text=torch.nn.functional.normalize(torch.randn(N_ITEMS, 384, generator=g), dim=1),
        item_strings=[f"item {i}" for i in range(N_ITEMS)],
        item_counts=torch.randint(0, 20, (N_ITEMS,), generator=g).float(),
    )


def build(family, **overrides):
    cls = MODELS[family]
    torch.manual_seed(0)
    side, config = None, cls.Config(**{"dim": 8, **overrides})
    if cls.reads_text(config):
        side = SideInputs(item_text=torch.nn.functional.normalize(torch.randn(N_ITEMS, 384), dim=1))
    return cls(config, N_ITEMS, N_USERS, side)


TEXT_OPTIONAL = [f for f in MODELS if "text" in MODELS[f].Config.__dataclass_fields__]
"""Families whose item text is an option (``text: true``)."""


def test_registry_names_are_the_families():
    assert set(MODELS) >= {"mf"}
    for name, cls in MODELS.items():
        assert hasattr(cls, "Config") and callable(cls.loss) and callable(cls.score), name
        assert cls.__module__ == f"components.models.{name}"


# Each family's own defaults for the shared fields: the figures in bench/RESULTS.md were
# trained with these, so a change here is a change of results, not a refactor.
SHARED_DEFAULTS = {
    "mf": {"max_len": 512, "lr": 1e-2, "weight_decay": 0.0},
    "lstm": {"max_len": 50, "lr": 5e-3, "weight_decay": 0.0},
    "cnn": {"max_len": 50, "lr": 5e-3, "weight_decay": 0.3},
    "bert": {"max_len": 50, "lr": 1e-3, "weight_decay": 0.0},
}


@pytest.mark.parametrize("family", MODELS)
def test_every_family_follows_the_one_contract(family):
    cls = MODELS[family]
    assert issubclass(cls, Family) and issubclass(cls.Config, FamilyConfig)
    assert cls.Config.__dataclass_params__.frozen
    params = list(inspect.signature(cls.__init__).parameters.values())
    assert [p.name for p in params] == ["self", "config", "n_items", "n_users", "side"]
    assert params[-1].default is None
    assert {k: getattr(cls.Config(), k) for k in SHARED_DEFAULTS[family]} == SHARED_DEFAULTS[family]


@pytest.mark.parametrize("bad", [{"max_len": 0}, {"lr": 0.0}, {"weight_decay": -0.1}])
@pytest.mark.parametrize("family", MODELS)
def test_shared_config_fields_are_checked_for_every_family(family, bad):
    with pytest.raises(ValueError):
        MODELS[family].Config(**bad)


@pytest.mark.parametrize("family", MODELS)
def test_every_family_takes_side_inputs_positionally_or_by_keyword(family):
    cls, cfg = MODELS[family], MODELS[family].Config(dim=8)
    torch.manual_seed(0)
    by_position = cls(cfg, N_ITEMS, N_USERS, side_inputs())
    torch.manual_seed(0)
    by_keyword = cls(config=cfg, n_items=N_ITEMS, n_users=N_USERS, side=side_inputs())
    a, b = by_position.state_dict(), by_keyword.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (by_position.config, by_position.n_items, by_position.n_users) == (cfg, N_ITEMS, N_USERS)
    assert by_position.max_len == cfg.max_len


@pytest.mark.parametrize("family", MODELS)
def test_a_model_is_rebuilt_from_config_sizes_and_weights_alone(family):
    """What a family learns from its side inputs lives in its state dict (SideInputs' rule)."""
    cls, cfg = MODELS[family], MODELS[family].Config(dim=8)
    torch.manual_seed(0)
    trained = cls(cfg, N_ITEMS, N_USERS, side_inputs()).eval()
    served = cls(cfg, N_ITEMS, N_USERS)
    served.load_state_dict(trained.state_dict())
    _, batch = tiny_batch()
    with torch.no_grad():
        assert torch.equal(served.eval().score(batch), trained.score(batch))
        assert torch.equal(served.fit_score(batch), trained.fit_score(batch))


def test_family_defaults_fit_score_is_score_and_max_len_is_the_config_s():
    class Constant(Family):
        Config = FamilyConfig

        def score(self, batch):
            return torch.ones(len(batch["users"]), self.n_items)

    model = Constant(FamilyConfig(max_len=7), N_ITEMS, N_USERS)
    _, batch = tiny_batch()
    assert torch.equal(model.fit_score(batch), model.score(batch)) and model.max_len == 7
    with pytest.raises(NotImplementedError):
        model.loss(batch)
    for name, cls in MODELS.items():  # only a family with a ranking-time adjustment overrides it
        assert (cls.fit_score is Family.fit_score) == (name != "bert"), name


def test_loading_and_scoring_a_model_does_not_import_lightning():
    """Evaluation and serving pad and score without the training stack (components/models/system.py)."""
    code = """
import sys
import torch
from components.batches import pad_left
from components.models import MODELS
seq = pad_left([[1, 2, 3], [4]], 50, 10)
for cls in MODELS.values():
    model = cls(cls.Config(), 10, 3).eval()
    with torch.no_grad():
        assert model.score({"users": torch.tensor([0, 3]), "seq": seq}).shape == (2, 10)
print(sorted(m for m in ("lightning", "lightning.pytorch", "components.models.system") if m in sys.modules))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("family", MODELS)
def test_score_covers_every_item(family):
    _, batch = tiny_batch()
    scores = build(family).score(batch)
    assert scores.shape == (N_USERS, N_ITEMS) and torch.isfinite(scores).all()


def fall(model, batch, steps: int = 20) -> float:
    """The loss after ``steps`` Adam steps on ``batch`` as a share of the first."""
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = model.loss(batch)
    for _ in range(steps):
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
    return loss.item() / first.item()


@pytest.mark.parametrize("family", MODELS)
def test_loss_falls_within_a_few_steps(family):
    _, batch = tiny_batch()
    assert fall(build(family), batch) < 0.8


@pytest.mark.parametrize("family", TEXT_OPTIONAL)
def test_an_optional_text_input_is_read_when_asked_trained_and_saved_with_the_weights(family):
    """``text: true``: the items' text is a side input (read by training, not otherwise), its
    projection learns with the rest, the scores follow the text, and the model is rebuilt from
    its config and weights alone."""
    cls = MODELS[family]
    assert not cls.reads_text(cls.Config()) and cls.reads_text(cls.Config(text=True))
    assert not any(k.startswith("text.") for k in build(family).state_dict())
    _, batch = tiny_batch()
    model = build(family, text=True)
    assert fall(model, batch) < 0.8 and model.text.proj.weight.grad.abs().sum() > 0
    served = cls(model.config, N_ITEMS, N_USERS)  # no side inputs: the text comes with the weights
    served.load_state_dict(model.state_dict())
    other = model.state_dict() | {"text.text": side_inputs(seed=1).item_text}
    with torch.no_grad():
        assert torch.equal(served.eval().score(batch), model.eval().score(batch))
        served.load_state_dict(other)
        assert not torch.allclose(served.score(batch), model.score(batch))


@pytest.mark.parametrize("family", TEXT_OPTIONAL)
def test_with_text_a_new_item_is_scored_by_its_text_and_without_it_cannot_be(family):
    """New catalogue items (``Recommender.with_items``): rows for every item-indexed entry, put
    after the known items; a model of the larger catalogue loads them and scores the new
    items; the same model without text refuses."""
    with pytest.raises(NotImplementedError, match="ids alone"):
        build(family).new_item_rows(side_inputs().item_text[:2])
    model = build(family, text=True).eval()
    new_text = side_inputs(seed=3).item_text[:2]
    rows = model.new_item_rows(new_text)
    state = model.state_dict()
    assert set(rows) == set(MODELS[family].ITEM_ROWS) & set(state)
    n = N_ITEMS
    bigger = {k: torch.cat([v[:n], rows[k].to(v.dtype), v[n:]]) if k in rows else v for k, v in state.items()}
    grown = MODELS[family](model.config, n + 2, N_USERS)
    grown.load_state_dict(bigger)
    _, batch = tiny_batch()
    padded = {**batch, "seq": batch["seq"].masked_fill(batch["seq"] == n, n + 2)}  # the padding index moves
    with torch.no_grad():
        scores = grown.eval().score(padded)
        assert scores.shape == (N_USERS, n + 2) and torch.isfinite(scores).all()
        assert torch.allclose(scores[:, :n], model.score(batch), atol=1e-5)  # the known items score as before


@pytest.mark.parametrize("family", MODELS)
def test_unknown_user_still_gets_finite_scores(family):
    _, batch = tiny_batch()
    batch["users"] = torch.full((N_USERS,), N_USERS)
    assert torch.isfinite(build(family).score(batch)).all()


def _recommender(family):
    from components.recommender import Recommender

    model = build(family)
    items = np.array([f"i{j:03d}" for j in range(N_ITEMS)])
    users = np.array([f"u{j:03d}" for j in range(N_USERS)])
    return Recommender(family, {**model.config.__dict__}, model.state_dict(), items, users)


@pytest.mark.parametrize("family", MODELS)
def test_recommender_bytes_round_trip_gives_the_same_scores(family):
    from components.recommender import Recommender

    rec = _recommender(family)
    again = Recommender.from_bytes(rec.to_bytes())
    _, batch = tiny_batch()
    assert torch.equal(rec.model.score(batch), again.model.score(batch))


@pytest.mark.parametrize("family", MODELS)
def test_scorer_maps_a_model_onto_new_ids(family):
    """Yesterday's model on today's catalogue: known items keep their scores, new ones are -inf."""
    from components.datasets import Dataset

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
    from components.recommender import CatalogueWatch
    from components.serving import OUTPUT_COLUMNS

    model = RecommenderModel()
    model.recommender = _recommender(family)  # what load_context restores from the artifact
    model.catalogue = CatalogueWatch(model.recommender)
    frame = pd.DataFrame({"user_id": ["u001", "nobody"], "history": [["i001", "i002"], ["i003"]]})
    out = model.predict(None, frame, {"k": 5})
    assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == 10
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
    opt = torch.optim.Adam(model.parameters(), lr=0.01)  # bert's transformer diverges at 0.05 here
    for _ in range(40):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert loss_with_fixed_negatives().item() < 0.8 * first


@pytest.mark.parametrize("family", MODELS)
def test_mlflow_pyfunc_round_trip_gives_the_same_top10(family):
    import mlflow

    from components import pyfunc, serving, tracking

    rec = _recommender(family)
    frame = pd.DataFrame({"user_id": ["u001", "u007"], "history": [["i001", "i002", "i010"], ["i003"]]})
    direct = rec.recommend(frame["user_id"], list(frame["history"]), k=10)
    run_id = tracking.create_run(f"roundtrip-{family}", {}, {"test": "pyfunc"})
    uri = pyfunc.log(run_id, rec, frame)
    loaded = mlflow.pyfunc.load_model(uri)
    again = loaded.predict(frame)
    assert again["item_id"].tolist() == direct["item_id"].tolist()
    signature = loaded.metadata.signature  # the answer and the params; the request's columns the model checks
    assert signature.inputs is None and list(signature.outputs.input_names()) == list(serving.OUTPUT_COLUMNS)
    assert {p.name for p in signature.params.params} == {"k", "stored_history"}
    assert np.allclose(again["score"], direct["score"], rtol=1e-6)


@pytest.mark.parametrize("with_bias", ["learned", "fixed", None])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_fused_cross_entropy_equals_torch_value_and_gradients(monkeypatch, with_bias, chunk_rows):
    """LinearCrossEntropy gives F.cross_entropy's loss and gradients, whatever the chunking."""
    from torch.nn import functional as F

    from components.models import loss as fused

    n_items = 50
    monkeypatch.setitem(fused._CHUNK_ELEMS, "cpu", chunk_rows * n_items)
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
    got, got_g = grads(lambda q: fused.full_ce(q, target, table, bias))
    torch.testing.assert_close(got, ref)
    for a, b in zip(got_g, ref_g, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_fused_cross_entropy_under_bf16_autocast_stays_close_and_fp32():
    """bf16 matmuls (Lightning's bf16-mixed), softmax and gradients in fp32."""
    from torch.nn import functional as F

    from components.models.loss import full_ce

    g = torch.Generator().manual_seed(1)
    q = torch.randn(300, 32, generator=g, requires_grad=True)
    table = torch.randn(2000, 32, generator=g, requires_grad=True)
    target = torch.randint(0, 2000, (300,), generator=g)
    ref = F.cross_entropy(q @ table.T, target)
    ref_gq, ref_gw = torch.autograd.grad(ref, (q, table))
    with torch.autocast("cpu", torch.bfloat16):
        got = full_ce(q, target, table, None)
    gq, gw = torch.autograd.grad(got, (q, table))
    assert got.dtype == gq.dtype == gw.dtype == torch.float32
    assert abs(got.item() - ref.item()) < 1e-2 * ref.item()
    for a, b in ((gq, ref_gq), (gw, ref_gw)):
        assert ((a - b).norm() / b.norm()).item() < 3e-2
    with torch.no_grad():  # no gradients wanted: the loss alone
        assert abs(full_ce(q, target, table, None).item() - ref.item()) < 1e-5


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


def _champion_and_fresh(family: str):
    """Yesterday's model, today's freshly initialised one, and a copy of today's state."""
    torch.manual_seed(0)
    old = build(family)
    torch.manual_seed(1)
    new = build(family)
    return old, new, {k: v.clone() for k, v in new.state_dict().items()}


@pytest.mark.parametrize("family", MODELS)
def test_warm_start_takes_the_champions_rows_for_known_ids_and_keeps_new_rows_fresh(family):
    """Yesterday's model -> today's: items 0..N-3 and users 0..U-2 carry over (today's index
    = yesterday's + 2 / + 1), two new items and one new user keep their fresh initialisation."""
    cls = MODELS[family]
    old, new, fresh = _champion_and_fresh(family)
    item_map = torch.tensor([-1, -1] + list(range(N_ITEMS - 2)))
    user_map = torch.tensor([-1] + list(range(N_USERS - 1)))
    info = new.warm_start(old.state_dict(), item_map, user_map)
    assert info["items_carried"] == N_ITEMS - 2 and info["items_new"] == 2 and info["users_new"] == 1
    state, before = new.state_dict(), old.state_dict()
    params = dict(new.named_parameters())
    for name in params:
        if name in cls.ITEM_ROWS:
            assert torch.equal(state[name][2:N_ITEMS], before[name][: N_ITEMS - 2]), name
            assert torch.equal(state[name][:2], fresh[name][:2]), name  # new items: fresh rows
            assert torch.equal(state[name][N_ITEMS:], before[name][N_ITEMS:]), name  # padding rows
        elif name in cls.USER_ROWS:
            assert torch.equal(state[name][1:N_USERS], before[name][: N_USERS - 1]), name
            assert torch.equal(state[name][0], fresh[name][0]), name
        else:
            assert torch.equal(state[name], before[name]), name
    for name in set(state) - set(params):  # buffers are today's data
        assert torch.equal(state[name], fresh[name]), name


@pytest.mark.parametrize("family", MODELS)
def test_a_shrunk_warm_start_is_the_champion_and_a_fresh_start_mixed(family):
    """shrink 0.3: every carried value is 0.3 x the champion's + 0.7 x the fresh one; new
    rows stay fresh; buffers stay today's."""
    cls = MODELS[family]
    old, new, fresh = _champion_and_fresh(family)
    item_map = torch.tensor([-1] + list(range(N_ITEMS - 1)))
    user_map = torch.arange(N_USERS)
    assert new.warm_start(old.state_dict(), item_map, user_map, shrink=0.3)["shrink"] == 0.3
    state, before, params = new.state_dict(), old.state_dict(), dict(new.named_parameters())
    for name in params:
        if name in cls.ITEM_ROWS:
            mixed = 0.3 * before[name][: N_ITEMS - 1] + 0.7 * fresh[name][1:N_ITEMS]
            assert torch.allclose(state[name][1:N_ITEMS], mixed), name
            assert torch.equal(state[name][:1], fresh[name][:1]), name  # the new item: fresh
        elif name not in cls.USER_ROWS:
            assert torch.allclose(state[name], 0.3 * before[name] + 0.7 * fresh[name]), name
    for name in set(state) - set(params):
        assert torch.equal(state[name], fresh[name]), name
    with pytest.raises(ValueError, match="shrink"):
        new.warm_start(old.state_dict(), item_map, user_map, shrink=0)


def test_warm_start_refuses_other_shapes_and_changes_nothing():
    small, big = build("mf", dim=4), build("mf", dim=8)
    fresh = {k: v.clone() for k, v in big.state_dict().items()}
    with pytest.raises(ValueError, match="warm start"):
        big.warm_start(small.state_dict(), torch.arange(N_ITEMS), torch.arange(N_USERS))
    assert all(torch.equal(v, fresh[k]) for k, v in big.state_dict().items())


def test_the_sampled_softmax_with_logq_pushes_negatives_down_as_the_full_softmax_does():
    """logQ correction (Yi et al. 2019): negatives drawn from a skewed popularity proposal, each
    logit minus the log of its probability. The gradient on the non-target logits then follows
    the full softmax over them (∝ e^z), not the proposal (∝ p·e^z), and the target's own
    draws are left out."""
    from components.models.loss import sampled_ce

    n, t = 30, 4
    torch.manual_seed(0)
    z = torch.randn(n)
    p = 1.0 / torch.arange(1, n + 1).float() ** 1.2  # Zipf: the first items drawn far more often
    log_q = (p / p.sum()).log()

    def grad(log_q):
        bias = z.clone().requires_grad_(True)
        q, table = torch.zeros(1, 2), torch.zeros(n, 2)
        sampled_ce(q, torch.tensor([t]), table, bias, 200_000, log_q).backward()
        return bias.grad

    others = torch.arange(n) != t
    for proposal in (log_q, None):  # popularity with the correction, and uniform
        g = grad(proposal)
        assert g[t] < 0 and (g[others] > 0).all()
        push = g[others] / g[others].sum()
        assert torch.allclose(push, torch.softmax(z[others], 0), atol=0.01)


def test_a_large_catalogue_switches_the_sequence_families_to_the_sampled_softmax():
    from components.models.contract import NEGATIVES

    _, batch = tiny_batch()
    for family in ("lstm", "cnn", "bert"):
        full, large = build(family), build(family, sampled_above=N_ITEMS - 1)
        assert full.negatives == 0 and large.negatives == NEGATIVES, family
        assert build(family, sampled=7, sampled_above=N_ITEMS - 1).negatives == 7
        assert torch.isfinite(large.loss(batch))
    assert build("mf", sampled_above=1).negatives == 0  # mf has its own losses
