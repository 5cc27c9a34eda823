"""Exploration: re-rank a top-K so a share of it goes to relevant items outside the user's
usual categories, and measure what that costs and buys (DESIGN.md §8).

``rerank`` keeps the model's best ``K - m`` items (m = round(share · K)) and fills the last
m slots with candidates from the model's own top-N (so relevant to the user) whose
category the user has never bought from, preferring the least exposed ones so that
exploration widens the catalogue's reach. Share 0 is the plain ranking, exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from components import evaluation, metrics

if TYPE_CHECKING:
    from components.datasets import Dataset


def rerank(candidates: np.ndarray, usual: list[set[int]], item_cat: np.ndarray, k: int, share: float) -> np.ndarray:
    """(U, N) candidates in score order -> (U, k): the first k - m kept, m explorers appended.

    Explorers are candidates (so: relevant to the user by the model's own ranking) from
    categories the user never bought from; among them the least exposed so far win
    (exposure = how often an item already sits in the users' lists, counted greedily user
    by user), so exploration spreads over the catalogue instead of sending everybody the
    same popular novelty; equal exposure goes to the better-scored one. A user with too few
    out-of-category candidates gets the next plain items instead.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"exploration share must be in [0, 1], got {share}")
    m = int(round(share * k))
    if m == 0:
        return candidates[:, :k].copy()
    exposure = np.bincount(candidates[:, : k - m].ravel(), minlength=len(item_cat))
    out = np.empty((len(candidates), k), dtype=candidates.dtype)
    for u, row in enumerate(candidates):
        rest = row[k - m :]
        pool = [i for i in rest if item_cat[i] not in usual[u]]
        novel = sorted(pool, key=lambda i: exposure[i])[:m]  # stable: score order among equals
        exposure[novel] += 1
        taken = set(novel)
        fill = [i for i in rest if i not in taken][: m - len(novel)]
        out[u] = list(row[: k - m]) + novel + fill
    return out


def usual_categories(hists: list[np.ndarray], item_cat: np.ndarray) -> list[set[int]]:
    """The categories each user has bought from (what ``rerank`` explores away from)."""
    return [set(item_cat[h].tolist()) for h in hists]


def intra_list_diversity(lists: np.ndarray, item_cat: np.ndarray) -> float:
    """Mean over users of the share of item pairs in the list from different categories."""
    cats = item_cat[lists]  # (U, k)
    k = cats.shape[1]
    diff = (cats[:, :, None] != cats[:, None, :]).sum((1, 2)) / (k * (k - 1))
    return float(diff.mean())


def novelty(lists: np.ndarray, counts: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(share of users who interacted with the item) of recommended items."""
    share = np.maximum(counts[lists], 1) / max(n_users, 1)
    return float(-np.log2(share).mean())


def exploration_table(
    scorer,
    data: Dataset,
    item_cat: np.ndarray,
    shares=(0.0, 0.1, 0.2, 0.3),
    k: int = 10,
    candidates: int = 100,
    max_len=512,
) -> list[dict]:
    """NDCG@k, HR@k, coverage@k, intra-list category diversity and novelty on the test
    holdout for each exploration share (the same candidates for every share)."""
    view = data.view("final")
    _, top, _ = evaluation.rank_view(scorer, view, data.n_items, k=candidates, max_len=max_len)
    usual = usual_categories(view.eval_hist, item_cat)
    counts = evaluation.item_counts(view, data.n_items)
    rows = []
    for share in shares:
        lists = rerank(top, usual, item_cat, k, share)
        hit = lists == view.eval_targets[:, None]
        ranks = np.where(hit.any(1), hit.argmax(1), k)  # k = not in the list
        m = metrics.rank_metrics(ranks, ks=(k,))
        rows.append(
            {
                "share": share,
                f"ndcg{k}": m[f"ndcg{k}"],
                f"hr{k}": m[f"hr{k}"],
                f"coverage{k}": metrics.coverage(lists, data.n_items),
                "diversity": intra_list_diversity(lists, item_cat),
                "novelty": novelty(lists, counts, data.n_users),
            }
        )
    return rows
