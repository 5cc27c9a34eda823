"""What is particular to the text-aware transformer (the shared contract is in test_models.py)."""

from __future__ import annotations

import pytest
import torch

from components.models import SideInputs
from components.models.bert import BERT, BERTConfig

N = 30


def model(**overrides) -> BERT:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N, 384), dim=1)
    return BERT(BERTConfig(**{"dim": 16, "dropout": 0.0, **overrides}), N, 5, SideInputs(item_text=text)).eval()


def test_causal_objective_never_reads_later_items():
    m = model(objective="causal")
    seq = torch.randint(0, N, (3, 9))
    later = seq.clone()
    later[:, -1] = (seq[:, -1] + 1) % N
    table = m.item_table()
    a, b = m(seq, table), m(later, table)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5) and not torch.allclose(a[:, -1], b[:, -1])


def test_masked_objective_reads_both_directions():
    m = model(objective="masked")
    seq = torch.randint(0, N, (3, 9))
    later = seq.clone()
    later[:, -1] = (seq[:, -1] + 1) % N
    table = m.item_table()
    assert not torch.allclose(m(seq, table)[:, 0], m(later, table)[:, 0], atol=1e-5)


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_padding_width_does_not_change_scores(objective):
    """Positions count back from the newest item, so a batch's width does not matter."""
    m = model(objective=objective)
    short = torch.tensor([[4, 7, 9]])
    padded = torch.tensor([[N, N, N, 4, 7, 9]])
    assert torch.allclose(m.score({"seq": short}), m.score({"seq": padded}), atol=1e-5)


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_the_served_encoder_scores_as_the_eager_one_and_is_not_a_weight(objective, monkeypatch):
    """for_serving traces the encoder (the model server's workers): same scores at every
    width, padding and batch size; the trace is used for requests, never in training, and
    never saved."""
    m = model(objective=objective, max_len=12)
    rng = torch.Generator().manual_seed(1)
    batches = [
        {"seq": torch.tensor([[N, N, 4, 7, 9]]), "types": torch.tensor([[0, 0, 2, 1, 2]])},
        {"seq": torch.randint(0, N, (3, 12), generator=rng), "types": torch.randint(1, 4, (3, 12), generator=rng)},
        {"seq": torch.tensor([[5]]), "types": torch.tensor([[3]])},
    ]
    with torch.no_grad():
        eager = [m.score(b) for b in batches]
        keys = set(m.state_dict())
        m.for_serving()
        assert "_served_encoder" in m.__dict__ and set(m.state_dict()) == keys
        for b, before in zip(batches, eager, strict=True):
            assert torch.allclose(m.score(b), before, atol=1e-5)
        calls = []
        monkeypatch.setattr(type(m), "_encode", lambda self, *a: calls.append(1) or _eager(self, *a))
        m.score(batches[0])
        assert not calls  # requests go through the trace
    m.train()
    m.loss(batches[1])
    assert calls  # training does not


def _eager(self, *args):
    from components.models.bert import _Encoder

    return _Encoder.encode(self.encoder, *args)


def test_text_only_fusion_scores_items_by_their_text_alone():
    """Two items with the same text get the same score, whatever their (absent) interactions."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N, 384), dim=1)
    text[N - 1] = text[2]  # item N-1: never interacted with, same text as item 2
    m = BERT(BERTConfig(dim=16, fusion="text", dropout=0.0), N, 5, SideInputs(item_text=text)).eval()
    scores = m.score({"seq": torch.tensor([[5, 6, 7]])})
    assert m.ids is None and torch.allclose(scores[0, N - 1], scores[0, 2])


def test_id_shrink_scores_an_item_never_trained_on_by_its_text_alone():
    """With id_shrink an item without training interactions has weight 0 on its id and its
    offset: trained ids or not, it scores like another untrained item with the same text."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N, 384), dim=1)
    text[N - 1] = text[N - 2]
    counts = torch.full((N,), 10.0)
    counts[N - 2 :] = 0
    m = BERT(BERTConfig(dim=16, id_shrink=5.0, dropout=0.0), N, 5, SideInputs(item_text=text, item_counts=counts))
    with torch.no_grad():
        m.ids.weight.normal_()  # as if trained: every id differs
        m.bias.normal_()
    scores = m.eval().score({"seq": torch.tensor([[5, 6, 7]])})
    assert torch.allclose(scores[0, N - 1], scores[0, N - 2])
    assert torch.allclose(m.id_weight()[:3], torch.tensor(10 / 15))
    served = BERT(BERTConfig(dim=16, id_shrink=5.0, dropout=0.0), N, 5)  # rebuilt from the state dict
    served.load_state_dict(m.state_dict())
    assert torch.equal(served.eval().score({"seq": torch.tensor([[5, 6, 7]])}), scores)


def test_popularity_adjust_lowers_each_score_by_tau_log_count_and_is_served():
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N, 384), dim=1)
    counts = torch.arange(N, dtype=torch.float32)
    plain = BERT(BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.0), N, 5, SideInputs(item_text=text))
    torch.manual_seed(0)
    adjusted = BERT(
        BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.7, popularity_cap=0),
        N,
        5,
        SideInputs(item_text=text, item_counts=counts),
    )
    adjusted.load_state_dict({**plain.state_dict(), "counts": counts})
    batch = {"seq": torch.tensor([[5, 6, 7]])}
    diff = plain.eval().score(batch) - adjusted.eval().score(batch)
    assert torch.allclose(diff[0], 0.7 * torch.log1p(counts), atol=1e-5)
    assert torch.equal(plain.loss(batch), adjusted.loss(batch))  # training is unchanged
    served = BERT(BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.7, popularity_cap=0), N, 5)
    served.load_state_dict(adjusted.state_dict())
    assert torch.equal(served.eval().score(batch), adjusted.score(batch))
    older = BERT(BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.7, popularity_cap=0), N, 5)
    older.load_state_dict(plain.state_dict())  # saved before counts were kept: ranks as then
    assert torch.equal(older.eval().score(batch), plain.score(batch))


def test_popularity_cap_keeps_the_order_of_items_seen_cap_times_or_more():
    """With popularity_cap c, an item's penalty is tau * log(1 + min(n, c)): items seen c
    times or more are lowered alike (their order is tau = 0's), rarer ones by less."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N, 384), dim=1)
    counts = torch.arange(N, dtype=torch.float32)
    side = SideInputs(item_text=text, item_counts=counts)
    torch.manual_seed(0)
    plain = BERT(BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.0), N, 5, side).eval()
    torch.manual_seed(0)
    capped = BERT(BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.7, popularity_cap=4), N, 5, side).eval()
    batch = {"seq": torch.tensor([[5, 6, 7]])}
    diff = (plain.score(batch) - capped.score(batch))[0]
    assert torch.allclose(diff, 0.7 * torch.log1p(counts.clamp(max=4)), atol=1e-5)
    assert torch.allclose(diff[4:], diff[4]) and bool((diff[:4] < diff[4]).all())


def test_a_model_saved_before_the_cap_ranks_as_it_did():
    """A registered bert's config is saved whole; one saved before ``popularity_cap`` existed
    (tau 0.75, no cap) is rebuilt uncapped, a new one with today's defaults."""
    from dataclasses import asdict

    old = {k: v for k, v in asdict(BERTConfig(popularity_adjust=0.75)).items() if k != "popularity_cap"}
    assert BERTConfig.from_saved(old).popularity_cap == 0
    assert BERTConfig.from_saved(asdict(BERTConfig())) == BERTConfig()
    assert BERTConfig().popularity_cap == 10


def test_a_champion_saved_before_the_cap_warm_starts_tonight():
    """The nightly warm start compares the champion's saved config with today's: a bert
    saved before popularity_cap (tau 0.75) has the same weights as today's, and so does
    one with another tau; another width does not."""
    from dataclasses import asdict

    from components.pipeline import same_model

    old = {k: v for k, v in asdict(BERTConfig(popularity_adjust=0.75)).items() if k != "popularity_cap"}
    assert same_model("bert", old, {})
    assert same_model("bert", old, {"lr": 3e-3, "popularity_adjust": 0.0})
    assert not same_model("bert", old, {"dim": 128})
    assert not same_model("bert", {**old, "fusion": "concat"}, {})


def test_early_stopping_reads_scores_before_popularity_adjust():
    """Validation (what early stopping and the best checkpoint read) ranks by fit_score, so
    popularity_adjust never changes what is trained; the served score is adjusted."""
    from components.models.system import RecSystem

    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(N, 384), dim=1)
    counts = torch.arange(N, dtype=torch.float32) ** 2
    plain = BERT(BERTConfig(dim=16, dropout=0.0, popularity_adjust=0.0), N, 5, SideInputs(item_text=text)).eval()
    adjusted = BERT(
        BERTConfig(dim=16, dropout=0.0, popularity_adjust=3.0), N, 5, SideInputs(item_text=text, item_counts=counts)
    )
    adjusted.load_state_dict({**plain.state_dict(), "counts": counts})
    adjusted.eval()
    empty = torch.zeros(0, dtype=torch.long)
    batch = {"users": torch.arange(4), "seq": torch.randint(0, N, (4, 6)), "target": torch.tensor([1, 8, 20, 29])}
    batch |= {"seen_rows": empty, "seen_cols": empty}
    ranks = []
    for m in (plain, adjusted):
        system = RecSystem(m)
        with torch.no_grad():
            system.validation_step(batch, 0)
        ranks.append(system._val[0])
    assert torch.equal(ranks[0], ranks[1])
    assert torch.equal(adjusted.fit_score(batch), plain.score(batch))
    assert not torch.allclose(adjusted.score(batch), plain.score(batch))


@pytest.mark.parametrize("fusion", ["sum", "concat", "gate", "text", "id"])
def test_every_fusion_learns(fusion):
    m = model(fusion=fusion).train()
    batch = {"seq": torch.randint(0, N, (16, 8))}
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    first = m.loss(batch).item()
    for _ in range(25):
        opt.zero_grad()
        m.loss(batch).backward()
        opt.step()
    assert m.loss(batch).item() < 0.8 * first


def test_finetuning_trains_the_top_text_layer_and_serves_without_the_encoder_inputs():
    strings = [f"item {i} | Acme | Beauty > Skin Care" for i in range(N)]
    torch.manual_seed(0)
    m = BERT(
        BERTConfig(dim=16, finetune_layers=1), N, 5, SideInputs(item_text=torch.zeros(N, 384), item_strings=strings)
    )
    before = m.text_top[0].output.dense.weight.detach().clone()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        m.loss({"seq": torch.randint(0, N, (8, 6))}).backward()
        opt.step()
    assert not torch.equal(before, m.text_top[0].output.dense.weight)
    m.eval()  # re-pools the fine-tuned text vectors into the saved ``text`` buffer
    assert torch.allclose(m.text.norm(dim=1), torch.ones(N), atol=1e-4)
    served = BERT(BERTConfig(dim=16, finetune_layers=1), N, 5)  # as Recommender rebuilds it
    served.load_state_dict(m.state_dict())
    batch = {"seq": torch.tensor([[1, 2, 3], [N, 4, 5]])}
    assert torch.allclose(m.score(batch), served.eval().score(batch), atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        {"objective": "mlm"},
        {"fusion": "add"},
        {"dim": 10, "heads": 3},
        {"mask_prob": 0.0},
        {"id_shrink": -1.0},
        {"id_shrink": 5.0, "fusion": "text"},
        {"id_dropout": 1.0},
        {"id_dropout": 0.5, "fusion": "id"},
        {"popularity_adjust": -0.5},
        {"popularity_cap": -1},
    ],
)
def test_bad_configs_are_rejected(bad):
    with pytest.raises(ValueError):
        BERTConfig(**bad)
