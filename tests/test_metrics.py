"""Code tests: metrics against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from components import metrics


def test_ranks_count_higher_scores_and_break_ties_by_item_index():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5, 0.2]])
    # item 3 ties with item 2 (lower index) -> rank 2; item 2 -> rank 1; item 1 -> rank 0
    assert metrics.target_ranks(scores, torch.tensor([3])).tolist() == [2]
    assert metrics.target_ranks(scores, torch.tensor([2])).tolist() == [1]
    assert metrics.target_ranks(scores, torch.tensor([1])).tolist() == [0]


def test_ranks_in_a_batch_with_and_without_ties_follow_the_rule_row_by_row():
    """Rows with ties (rounded scores, -inf) and rows without, in one batch: each rank is the
    rule's count, computed here one row at a time in Python."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 50, generator=g)
    scores[:3] = scores[:3].round()  # many ties
    scores[4, ::3] = -math.inf
    targets = torch.tensor([0, 7, 49, 3, 6, 20])
    expected = [
        sum(1 for j in range(50) if s[j] > s[t] or (s[j] == s[t] and j < t))
        for s, t in zip(scores.tolist(), targets.tolist(), strict=True)
    ]
    assert metrics.target_ranks(scores, targets).tolist() == expected


def test_top_k_uses_the_same_tie_rule_as_the_ranks():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    vals, idx = metrics.top_k(scores, 4)
    assert idx.tolist() == [[1, 2, 4, 3]]
    for pos, item in enumerate(idx[0].tolist()):
        assert metrics.target_ranks(scores, torch.tensor([item])).item() == pos


def test_an_excluded_target_is_a_miss():
    # Evaluation ranks what serving ranks: an item the policy excludes stays excluded when it is
    # the target (the old rule kept the target's score and removed its competitors).
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    metrics.exclude_seen(scores, torch.tensor([0, 0]), torch.tensor([0, 2]))
    assert scores[0, 0] == -math.inf and scores[0, 2] == -math.inf
    assert metrics.target_ranks(scores, torch.tensor([2])).item() == 3  # behind both finite scores and item 0
    assert metrics.target_ranks(scores, torch.tensor([3])).item() == 1


def test_hr_ndcg_mrr_by_hand():
    ranks = np.array([0, 1, 4, 9, 30])  # 0-based
    m = metrics.rank_metrics(ranks, ks=(5, 10))
    assert m["hr5"] == pytest.approx(3 / 5)
    assert m["hr10"] == pytest.approx(4 / 5)
    ndcg10 = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5
    assert m["ndcg10"] == pytest.approx(ndcg10)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 31) / 5)


def test_coverage_and_mean_std():
    assert metrics.coverage(np.array([[0, 1], [1, 2]]), 10) == pytest.approx(0.3)
    s = metrics.mean_std([{"a": 1.0}, {"a": 3.0}])
    assert s == {"a_mean": 2.0, "a_std": 1.0}


def test_top_k_equals_a_stable_sort_of_the_whole_row_with_ties_and_minus_inf():
    """The top k+1 path and the candidate-only path give exactly what sorting every score
    gives (ties by index)."""
    import torch

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        B, N, k = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 30), (20, 2000), (1, 20)))
        s = torch.randint(0, int(torch.randint(2, 50, (1,), generator=g)), (B, N), generator=g).float()
        if trial % 3 == 0:
            s[s < 5] = -torch.inf  # excluded items, as evaluation sets them
        if trial % 3 == 1:  # a model's scores (no ties: the top k+1 fix the list) beside rows with ties
            s[::2] = torch.randn(len(s[::2]), N, generator=g)
            s[::4, :: max(1, N // (2 * k))] = 9.0  # ties within the top k
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        v, i = metrics.top_k(s, k)
        assert torch.equal(i, order) and torch.equal(v, s.gather(1, order)), trial


def test_top_k_with_a_nan_score_falls_back_to_the_full_sort():
    import torch

    s = torch.arange(100, dtype=torch.float32).repeat(3, 1)
    s[1, 7] = float("nan")
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(metrics.top_k(s, 5)[1], order)


@pytest.mark.parametrize("exclude", ["interacted", "target", "none"])
def test_the_baselines_rank_exactly_as_the_dense_path_without_a_users_x_items_matrix(exclude, monkeypatch):
    """popularity and recent interactions (evaluation.SharedScorer): ranks, top-10 items and
    scores equal to scoring every item (the same scorer called densely), with ties in the
    shared scores, several behaviours and each exclusion policy."""
    from components import evaluation
    from components.behaviour import TYPE_CODES, Behaviour
    from components.datasets import View

    rng = np.random.default_rng(0)
    n_items, n_users = 300, 200
    behaviour = Behaviour(target=("purchase",), weights={"view": 1, "cart": 2, "purchase": 3}, exclude=exclude)
    codes = np.array([TYPE_CODES[t] for t in ("view", "cart", "purchase")])
    hist = [rng.integers(0, n_items // 3, size=int(rng.integers(1, 30))) for _ in range(n_users)]  # repeats
    kinds = [codes[rng.integers(0, 3, size=len(h))] for h in hist]
    targets = np.array(
        [int(rng.choice(h)) if u % 4 == 0 else int(rng.integers(0, n_items)) for u, h in enumerate(hist)]
    )
    view = View(
        train_seqs=hist,
        eval_users=np.arange(n_users),
        eval_hist=hist,
        eval_targets=targets,
        train_types=kinds,
        eval_types=kinds,
        behaviour=behaviour,
    )
    answered = []  # batches the shared path answered (not handed back to the dense one)
    rank = evaluation._SharedOrder.rank
    monkeypatch.setattr(evaluation._SharedOrder, "rank", lambda *a: answered.append(rank(*a)) or answered[-1])
    for make in (evaluation.popularity_scorer, evaluation.recent_scorer):
        shared = make(view, n_items)
        assert isinstance(shared, evaluation.SharedScorer)
        fast = evaluation.rank_view(shared, view, n_items, k=10, max_len=64, batch_size=64)
        dense = evaluation.rank_view(lambda b, s=shared: s(b), view, n_items, k=10, max_len=64, batch_size=64)
        for a, b in zip(fast, dense, strict=True):
            np.testing.assert_array_equal(a, b)
        assert (fast[0] < 10).any() and len(np.unique(shared.base.numpy())) < n_items  # hits, and ties
    assert len(answered) == 2 * 4 and all(a is not None for a in answered)  # 200 users in batches of 64
