"""Top-K over a large catalogue from an approximate nearest-neighbour index (faiss HNSW).

Scoring every item for every user costs users x items; above ``INTERESTFLOW_ANN_MIN_ITEMS``
catalogue items (default :data:`MIN_ITEMS`), batch recommendations from a family whose
score is a dot product (``Family.query_vectors``: mf) instead retrieve each user's
:data:`CANDIDATES` best items from an index of the item vectors (plus as many as the
user's excluded items, so that exclusion never leaves fewer than K), score those
candidates exactly, apply the exclusion policy exactly and keep the top K. Every such run
measures its recall@10 against exact scoring on a fixed random sample of users (seed 0,
:data:`RECALL_USERS`) and reports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from components import evaluation, metrics

if TYPE_CHECKING:
    from components.datasets import Dataset, View
    from components.recommender import Recommender

MIN_ITEMS_ENV = "INTERESTFLOW_ANN_MIN_ITEMS"
MIN_ITEMS = 200_000
"""Catalogues of at least this many items are ranked through the index (where the family allows)."""
CANDIDATES = 200
"""Items retrieved per user before the exact re-ranking (beyond the user's excluded items)."""
RECALL_USERS = 2_000
"""Users on whom each run compares its top-10 with exact scoring."""


def min_items() -> int:
    return int(os.environ.get(MIN_ITEMS_ENV, MIN_ITEMS))


def applies(rec: Recommender, n_items: int) -> bool:
    """Whether ``rec`` ranks a catalogue of ``n_items`` through the index."""
    return n_items >= min_items() and rec.model.query_vectors({"users": torch.zeros(0, dtype=torch.long)}) is not None


class ItemIndex:
    """An HNSW index of item vectors, searched by inner product (faiss's
    ``METRIC_INNER_PRODUCT``). The textbook reduction to nearest neighbours (one more
    coordinate, sqrt(R² - |v|²): Bachrach et al., RecSys 2014) was tried first: on mf's
    Beauty vectors it put every item at nearly the same distance from every query, and
    HNSW found 0.47 of the exact top-10 even among 200 candidates, against 0.99-1.0 searching
    inner products directly (bench/RESULTS.md, 2026-12-07)."""

    def __init__(self, vectors: np.ndarray, m: int = 32, ef_construction: int = 100, ef_search: int = 256):
        import faiss

        v = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ef_search = ef_search
        self.index = faiss.IndexHNSWFlat(v.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(v)

    def search(self, queries: np.ndarray, n: int) -> np.ndarray:
        """(B, n) rows of the ``n`` items with the largest inner products (-1 past the end)."""
        self.index.hnsw.efSearch = max(self.ef_search, n)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), n)[1]


@dataclass
class AnnRanking:
    top_items: np.ndarray
    """(users, k) today's item indices, in view order."""
    top_scores: np.ndarray
    recall10: float
    """Mean share of the exact top-10 that the index's top-10 holds, on ``recall_users`` users."""
    recall_users: int
    candidates: int


@torch.no_grad()
def ann_rank(
    rec: Recommender, data: Dataset, view: View, k: int, candidates: int = CANDIDATES, recall_users: int = RECALL_USERS
) -> AnnRanking:
    """Top-``k`` of every user of ``view`` (``data``'s indices) through an index of ``rec``'s
    item vectors: the candidates' scores are exact, and so is the exclusion policy."""
    ids = rec.ids_for(data)
    vectors = rec.model.item_vectors().detach().float()
    if ids is None:
        today = torch.arange(data.n_items)
    else:  # only the items the model knows can be ranked (the exact path scores the others -inf)
        today = torch.nonzero(ids.known).flatten()
        vectors = vectors[ids.item_map[:-1][ids.known]]
    index = ItemIndex(vectors.numpy())
    n, n_items = len(view.eval_users), data.n_items
    top_items = np.zeros((n, k), dtype=np.int64)
    top_scores = np.zeros((n, k), dtype=np.float32)
    for pos, batch in evaluation.eval_batches(view, n_items, rec.max_len):
        q = rec.model.query_vectors(batch if ids is None else ids.batch(batch)).float()
        excluded = torch.bincount(batch["seen_rows"], minlength=len(pos))
        width = min(len(vectors), candidates + k + int(excluded.max()))
        found = torch.as_tensor(index.search(q.numpy(), width))
        valid = found >= 0
        rows = found.clamp(min=0)
        scores = (q[:, None, :] * vectors[rows]).sum(-1)  # (B, width): exact, as the family scores them
        items = today[rows]
        seen = batch["seen_rows"] * n_items + batch["seen_cols"]
        scores[~valid | torch.isin(torch.arange(len(pos))[:, None] * n_items + items, seen)] = -torch.inf
        # In item order, so that top_k's tie rule (the lower column) is the exact path's (the lower item).
        items, order = items.sort(1)
        vals, cols = metrics.top_k(scores.gather(1, order), k)
        top_items[pos], top_scores[pos] = items.gather(1, cols).numpy(), vals.numpy()
    return AnnRanking(top_items, top_scores, *_recall10(rec, data, view, top_items, recall_users), candidates)


def _recall10(rec: Recommender, data: Dataset, view: View, top_items: np.ndarray, users: int) -> tuple[float, int]:
    """Recall@10 of ``top_items`` against exact scoring on a fixed random sample of ``view``'s users."""
    n = len(view.eval_users)
    sample = np.sort(np.random.default_rng(0).choice(n, size=min(users, n), replace=False))
    sub = replace(
        view,
        eval_users=view.eval_users[sample],
        eval_hist=[view.eval_hist[i] for i in sample],
        eval_targets=view.eval_targets[sample],
        eval_types=[view.eval_types[i] for i in sample],
    )
    k = min(10, top_items.shape[1])
    _, exact, _ = evaluation.rank_view(rec.scorer_for(data), sub, data.n_items, k=k, max_len=rec.max_len)
    hits = [len(np.intersect1d(a, b)) / k for a, b in zip(top_items[sample, :k], exact, strict=True)]
    return float(np.mean(hits)) if hits else 1.0, len(sample)
