"""Full-ranking metrics for leave-one-out (one target per user).

Rank rule (exact, deterministic): the target's 0-based rank is the number of items with
a strictly higher score plus the number of items with an equal score and a lower item
index. Top-K lists use the same order (a stable descending sort), so the metrics can be
recomputed from the written top-K. The items the exclusion policy keeps out of a user's
ranking (components/behaviour.py: by default every item in their history) score -inf
before ranking, exactly as when serving: a target the policy excludes is a miss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

KS = (5, 10, 20)


def seen_pairs(hists: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) index pairs of each batch row's history, for :func:`exclude_seen`."""
    rows = torch.as_tensor(np.repeat(np.arange(len(hists)), [len(h) for h in hists]), dtype=torch.long)
    cols = torch.as_tensor(np.concatenate(hists) if hists else np.array([], dtype=np.int64), dtype=torch.long)
    return rows, cols


def exclude_seen(scores: torch.Tensor, seen_rows: torch.Tensor, seen_cols: torch.Tensor) -> torch.Tensor:
    """Set the scores of the excluded (row, item) pairs to -inf, in place; (B, N) -> (B, N).

    Evaluation and serving exclude the same pairs; a target among them is a miss (its rank
    counts every finite score above it)."""
    scores[seen_rows.to(scores.device), seen_cols.to(scores.device)] = -math.inf
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target under the rule above; (B, N), (B,) -> (B,)."""
    t = scores.gather(1, targets[:, None])  # (B, 1)
    higher = _count(scores, t, torch.gt)
    # Ties with the target are rare in a model's scores: count them (two more passes over the
    # row) only in the rows that have one besides the target itself.
    tied = torch.nonzero(_count(scores, t, torch.eq) > 1).flatten()
    if len(tied):
        cols = torch.arange(scores.shape[1], device=scores.device)[None, :]
        higher[tied] += torch.count_nonzero((scores[tied] == t[tied]) & (cols < targets[tied, None]), dim=1)
    return higher


def _count(scores: torch.Tensor, t: torch.Tensor, op) -> torch.Tensor:
    """Per row, how many scores ``op`` (torch.gt / torch.eq) the row's ``t``; (B, N), (B, 1) -> (B,).

    On CPU numpy counts: torch's reduction of a boolean tensor is 6x slower there (a (110,
    605,050) chunk: 288 ms against 47 ms, bench/RESULTS.md), and this count is the larger part
    of a full-ranking evaluation."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        ufunc = {torch.gt: np.greater, torch.eq: np.equal}[op]
        return torch.from_numpy(ufunc(scores.numpy(), t.numpy()).sum(1, dtype=np.int64))
    return torch.count_nonzero(op(scores, t), dim=1)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, indices) with ties broken by lower index; (B, N) -> (B, k), (B, k)."""
    # torch.topk does not promise an order among equal scores. Where a row's k-th largest
    # score is strictly above its (k+1)-th, the top k+1 values already fix which k items come
    # first: only their order among themselves is left, a stable sort of k. The other rows
    # (a tie across the k-th place, a NaN, -inf filling the list) go the exact long way.
    B, N = scores.shape
    if not B or not 1 <= k < N:
        return _stable_top_k(scores, k)
    vals, idx = torch.topk(scores, k + 1, dim=1)
    clear = (vals[:, k - 1] > vals[:, k]) & ~torch.isnan(vals).any(1)
    idx, vals = idx[:, :k], vals[:, :k]
    by_index = torch.sort(idx, dim=1).indices  # equal values: the lower index first
    idx, vals = idx.gather(1, by_index), vals.gather(1, by_index)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    rest = torch.nonzero(~clear).flatten()
    if len(rest):
        vals[rest], idx[rest] = _stable_top_k(scores[rest], k)
    return vals, idx


def _stable_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_k` of rows with ties across the k-th place: a stable descending sort.

    Sorting only the candidates (every score >= each row's k-th largest, ties included, in
    index order) gives the same answer as sorting the whole row, several times faster."""
    B, N = scores.shape
    if B and 1 <= k and 8 * k < N:
        kth = torch.topk(scores, k, dim=1, sorted=False).values.amin(1, keepdim=True)
        cand = scores >= kth
        counts = cand.sum(1)
        width = int(counts.max())
        if width <= 8 * k and int(counts.min()) >= k:  # (a NaN score leaves fewer: sort it all)
            rows, cols = cand.nonzero(as_tuple=True)  # row-major: each row's columns ascending
            slot = torch.arange(len(rows), device=scores.device) - (torch.cumsum(counts, 0) - counts)[rows]
            idx = torch.zeros(B, width, dtype=torch.long, device=scores.device)
            val = torch.full((B, width), -torch.inf, dtype=scores.dtype, device=scores.device)
            idx[rows, slot], val[rows, slot] = cols, scores[rows, cols]
            pick = torch.sort(val, dim=1, descending=True, stable=True).indices[:, :k]
            return val.gather(1, pick), idx.gather(1, pick)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K, NDCG@K and MRR from 0-based target ranks (one target per user)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"ndcg{k}"] = float((hit / np.log2(ranks + 2)).mean()) if len(ranks) else 0.0
    out["mrr"] = float((1.0 / (ranks + 1)).mean()) if len(ranks) else 0.0
    return out


def coverage(topk_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in anybody's top-K; (U, K) -> float."""
    return float(len(np.unique(topk_items)) / n_items) if n_items else 0.0


def mean_std(values: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean and (population) std over folds: {name_mean, name_std}."""
    out = {}
    for name in values[0]:
        arr = np.array([v[name] for v in values], dtype=np.float64)
        out[f"{name}_mean"] = float(arr.mean())
        out[f"{name}_std"] = float(arr.std())
    return out
