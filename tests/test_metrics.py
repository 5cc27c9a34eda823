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
    """The candidate-only path gives exactly what sorting every score gives (ties by index)."""
    import torch

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        B, N, k = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 30), (20, 2000), (1, 20)))
        s = torch.randint(0, int(torch.randint(2, 50, (1,), generator=g)), (B, N), generator=g).float()
        if trial % 3 == 0:
            s[s < 5] = -torch.inf  # excluded items, as evaluation sets them
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        v, i = metrics.top_k(s, k)
        assert torch.equal(i, order) and torch.equal(v, s.gather(1, order)), trial


def test_top_k_with_a_nan_score_falls_back_to_the_full_sort():
    import torch

    s = torch.arange(100, dtype=torch.float32).repeat(3, 1)
    s[1, 7] = float("nan")
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(metrics.top_k(s, 5)[1], order)
