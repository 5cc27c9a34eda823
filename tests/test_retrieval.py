"""Scoring a large catalogue: users scored a chunk at a time, and candidates from an HNSW index
re-ranked exactly (components/retrieval.py).

The model is a real mf Recommender whose item and user vectors are set by hand (clusters of
items, users near one cluster each: what a trained factorisation looks like, without the
training); the data is a View and the few Dataset fields retrieval reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from components import evaluation, recommend, retrieval
from components.datasets import View
from components.models import MODELS
from components.recommender import Recommender

N_ITEMS, N_USERS, DIM = 4000, 300, 16


def mf_recommender(seed: int = 0) -> Recommender:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    items = centres[rng.integers(0, 40, N_ITEMS)] + 0.5 * rng.normal(size=(N_ITEMS, DIM))
    items *= rng.uniform(0.5, 1.5, size=(N_ITEMS, 1))  # unequal norms: inner product is not cosine
    users = centres[rng.integers(0, 40, N_USERS)] + 0.3 * rng.normal(size=(N_USERS, DIM))
    model = MODELS["mf"](MODELS["mf"].Config(dim=DIM), N_ITEMS, N_USERS)
    state = model.state_dict()
    state["items.weight"] = torch.as_tensor(items, dtype=torch.float32)
    state["users.weight"][:N_USERS] = torch.as_tensor(users, dtype=torch.float32)
    item_ids = np.array([f"i{j}" for j in range(N_ITEMS)])
    user_ids = np.array([f"u{j}" for j in range(N_USERS)])
    return Recommender("mf", {**model.config.__dict__}, state, item_ids, user_ids)


def data_for(rec: Recommender, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    hists = [rng.choice(N_ITEMS, size=int(rng.integers(1, 30)), replace=False) for _ in range(N_USERS)]
    view = View(
        train_seqs=hists,
        eval_users=np.arange(N_USERS),
        eval_hist=hists,
        eval_targets=np.full(N_USERS, -1),
    )
    return SimpleNamespace(
        n_items=N_ITEMS, item_ids=rec.item_ids, user_ids=rec.user_ids, view=lambda name: view, serve=view
    )


def exact(rec, data, k=10):
    return evaluation.rank_view(rec.scorer_for(data), data.serve, N_ITEMS, k=k, max_len=rec.max_len)[1:]


def test_with_every_item_a_candidate_the_index_gives_the_exact_top_k():
    rec = mf_recommender()
    data = data_for(rec)
    ann = retrieval.ann_rank(rec, data, data.serve, 10, candidates=N_ITEMS)
    items, scores = exact(rec, data)
    assert (ann.top_items == items).all()
    np.testing.assert_allclose(ann.top_scores, scores, rtol=1e-5, atol=1e-5)
    assert ann.recall10 == 1.0


def test_a_model_on_yesterdays_ids_gets_the_exact_top_k_through_the_index_too():
    """Today's catalogue in another order and with new items the model never saw: the index
    holds the known items only, and with every item a candidate the answer is exact scoring's."""
    rec = mf_recommender(2)
    today = np.concatenate([rec.item_ids[::-1], ["new-1", "new-2", "new-3"]])
    n = len(today)
    rng = np.random.default_rng(2)
    hists = [rng.choice(n, size=int(rng.integers(1, 30)), replace=False) for _ in range(N_USERS)]
    view = View(train_seqs=hists, eval_users=np.arange(N_USERS), eval_hist=hists, eval_targets=np.full(N_USERS, -1))
    data = SimpleNamespace(n_items=n, item_ids=today, user_ids=rec.user_ids, view=lambda name: view)
    assert rec.ids_for(data) is not None  # mapped, not the model's own ids
    ann = retrieval.ann_rank(rec, data, view, 10, candidates=n)
    items, _ = evaluation.rank_view(rec.scorer_for(data), view, n, k=10, max_len=rec.max_len)[1:]
    assert (ann.top_items == items).all() and (ann.top_items < N_ITEMS).all()  # no unknown item ranked


def test_index_recall_against_exact_scoring_and_exact_exclusion():
    rec = mf_recommender(1)
    data = data_for(rec, 1)
    ann = retrieval.ann_rank(rec, data, data.serve, 10, candidates=50, recall_users=N_USERS)
    items, _ = exact(rec, data)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ann.top_items, items, strict=True)])
    assert ann.recall10 == pytest.approx(recall) and recall >= 0.95
    for hist, top in zip(data.serve.eval_hist, ann.top_items, strict=True):
        assert not set(hist) & set(top)  # every history item excluded, as exact scoring does
    # Where both lists agree on an item, they agree on its score (re-ranked exactly).
    assert ann.recall_users == N_USERS


def test_recommend_ranks_through_the_index_above_the_threshold_and_says_so(monkeypatch):
    rec = mf_recommender(2)
    data = data_for(rec, 2)
    below = recommend.recommend(rec, data, 10)
    assert "ann_recall10" not in below.attrs
    monkeypatch.setenv(retrieval.MIN_ITEMS_ENV, str(N_ITEMS))
    monkeypatch.setattr(retrieval, "CANDIDATES", N_ITEMS)  # every item a candidate: the same lists
    above = recommend.recommend(rec, data, 10)
    assert above.attrs["ann_recall10"] == 1.0 and above.attrs["ann_recall_users"] == N_USERS
    assert (above["item_id"].to_numpy() == below["item_id"].to_numpy()).all()


def test_only_dot_product_families_use_the_index(monkeypatch):
    monkeypatch.setenv(retrieval.MIN_ITEMS_ENV, "1")
    assert retrieval.applies(mf_recommender(), N_ITEMS)
    cls = MODELS["lstm"]
    model = cls(cls.Config(dim=8), 20, 5)
    lstm = Recommender("lstm", {**model.config.__dict__}, model.state_dict(), np.arange(20).astype(str), np.arange(5))
    assert not retrieval.applies(lstm, 20)


def test_chunked_scoring_equals_scoring_every_user_at_once():
    rec = mf_recommender(3)
    data = data_for(rec, 3)
    scorer = rec.scorer_for(data)
    whole = evaluation.rank_view(scorer, data.serve, N_ITEMS, k=10, batch_size=N_USERS)
    chunked = evaluation.rank_view(scorer, data.serve, N_ITEMS, k=10, batch_size=7)
    np.testing.assert_array_equal(whole[1], chunked[1])  # the same top-10 lists
    np.testing.assert_allclose(whole[2], chunked[2], rtol=1e-6)  # a matrix product of another shape rounds apart
    for n_items in (12_101, 605_050, 10**8):
        assert evaluation.chunk_users(n_items) * n_items <= max(evaluation.SCORES_PER_CHUNK, n_items)
    assert evaluation.chunk_users(12_101) == 1024  # Beauty: the chunks of before
