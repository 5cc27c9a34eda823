"""Evaluation: full ranking of every catalogue item for each user of a view.

One loop serves validation, test, champion re-scoring and batch recommendations: it
takes any ``scorer(batch) -> (B, n_items)`` (a trained family, a registered model
mapped onto today's ids, or the popularity baseline).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from components import metrics
from components.batches import pad_left, topk_table
from components.behaviour import PAD_TYPE

if TYPE_CHECKING:  # types only: evaluation works on any object with these fields
    from components.datasets import Dataset, View

Scorer = Callable[[dict], torch.Tensor]


class SharedScorer:
    """A scorer whose scores are one vector ``base`` shared by every user, except at a few
    (row, item) pairs per batch (``overrides(batch) -> (rows, cols, values)``): the
    baselines. Called, it gives the dense (B, n_items) scores like any scorer;
    :func:`rank_view` ranks it without them (:class:`_SharedOrder`)."""

    def __init__(
        self,
        base: torch.Tensor,
        overrides: Callable[[dict], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    ):
        self.base = base.float()
        empty = torch.zeros(0, dtype=torch.long)
        self.overrides = overrides or (lambda batch: (empty, empty, torch.zeros(0)))

    def __call__(self, batch: dict) -> torch.Tensor:
        out = self.base.expand(len(batch["users"]), -1).clone()
        rows, cols, vals = self.overrides(batch)
        out[rows, cols] = vals
        return out


TEST_SAMPLE_ABOVE_ENV = "INTERESTFLOW_TEST_SAMPLE_ABOVE"
TEST_SAMPLE_USERS_ENV = "INTERESTFLOW_TEST_SAMPLE_USERS"
TEST_SAMPLE_MIN = 50_000
_TEST_SAMPLE_KEY = "interestflow-tst"  # 16 characters: the hash key that draws the sample (fixed)


def test_sample_size(n_test_users: int) -> int | None:
    """How many of ``n_test_users`` the test metrics are computed on: all (None) up to
    $INTERESTFLOW_TEST_SAMPLE_ABOVE users (default 100,000); above, a sample of
    $INTERESTFLOW_TEST_SAMPLE_USERS (default and least 50,000). Exact full ranking costs
    users x items; 50,000 users put the standard error of a test NDCG@10 below 0.001 (per-user
    std 0.10 on Beauty x10), and a challenger and its champion are ranked on the same users."""
    above = int(os.environ.get(TEST_SAMPLE_ABOVE_ENV, "100000"))
    size = max(TEST_SAMPLE_MIN, int(os.environ.get(TEST_SAMPLE_USERS_ENV, str(TEST_SAMPLE_MIN))))
    return None if n_test_users <= max(above, size) else size


def test_sample(user_ids: np.ndarray) -> np.ndarray | None:
    """Which test users the test metrics are computed on: all (None), or where
    :func:`test_sample_size` draws a sample, the positions of that many users with the
    smallest keyed hash of their id. A fixed random sample: the same users for every family,
    for a champion re-scored beside its challenger, and every night while they are in the data."""
    size = test_sample_size(len(user_ids))
    if size is None:
        return None
    h = pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=_TEST_SAMPLE_KEY)
    return np.sort(np.argpartition(h, size)[:size])


def final_view(data: Dataset) -> tuple[View, int | None]:
    """The test view (history before each test target) and, where :func:`test_sample` draws
    one, its sample's size (None: every test user)."""
    view = data.view("final")
    keep = test_sample(data.user_ids[view.eval_users])
    return (view, None) if keep is None else (view.subset(keep), len(keep))


SCORES_PER_CHUNK = 2**26
"""Scores held at once (256 MiB of float32): users are scored in chunks of this many over the catalogue."""


def chunk_users(n_items: int, most: int = 1024) -> int:
    """Users scored at once over a catalogue of ``n_items``: at most ``most``, and never more
    than :data:`SCORES_PER_CHUNK` scores (a large catalogue gets smaller chunks)."""
    return max(1, min(most, SCORES_PER_CHUNK // max(1, n_items)))


def eval_batches(view: View, n_items: int, max_len: int, batch_size: int | None = None):
    """Batches of (users, seq, types, seen pairs, target), users sorted by history length;
    ``batch_size`` users each (default :func:`chunk_users`: a batch's scores stay bounded).

    ``seq`` and ``types`` carry the last ``max_len`` events (what the model reads); the seen
    pairs are the items of the whole history that the view's exclusion policy keeps out
    of the ranking. Sorting by length keeps padding small (3-6 s instead of 17 s over
    Beauty, ../shared/STACK.md).
    """
    batch_size = batch_size or chunk_users(n_items)
    order = np.argsort([len(h) for h in view.eval_hist], kind="stable")
    for start in range(0, len(order), batch_size):
        pos = order[start : start + batch_size]
        hists = [view.eval_hist[p] for p in pos]
        types = [view.eval_types[p] for p in pos]
        rows, cols = metrics.seen_pairs([view.behaviour.excluded(h, t) for h, t in zip(hists, types, strict=True)])
        yield (
            pos,
            {
                "users": torch.as_tensor(view.eval_users[pos], dtype=torch.long),
                "seq": pad_left(hists, max_len, n_items),
                "types": pad_left(types, max_len, PAD_TYPE),
                "seen_rows": rows,
                "seen_cols": cols,
                "target": torch.as_tensor(view.eval_targets[pos], dtype=torch.long),
            },
        )


@torch.no_grad()
def rank_view(
    scorer: Scorer, view: View, n_items: int, k: int = 20, max_len: int = 512, batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (target ranks (U,), top-k items (U, k), their scores (U, k)), in view order.

    Ranks are -1 where a user has no target (serving). Users are scored a chunk at a time
    (``batch_size``, default :func:`chunk_users`): only (chunk, n_items) scores are held.
    """
    n = len(view.eval_users)
    ranks = np.full(n, -1, dtype=np.int64)
    top_items = np.zeros((n, k), dtype=np.int64)
    top_scores = np.zeros((n, k), dtype=np.float32)
    bar = tqdm(total=n, desc="scoring users", unit="user", disable=n < 20_000 or not sys.stderr.isatty())
    shared = _SharedOrder(scorer.base) if isinstance(scorer, SharedScorer) else None
    for pos, batch in eval_batches(view, n_items, max_len, batch_size):
        bar.update(len(pos))
        if shared is not None:
            excluded = (batch["seen_rows"], batch["seen_cols"], torch.full((len(batch["seen_rows"]),), -torch.inf))
            answer = shared.rank(_override(len(pos), n_items, scorer.overrides(batch), excluded), batch["target"], k)
            if answer is not None:
                ranks[pos], top_items[pos], top_scores[pos] = answer
                continue
        scores = scorer(batch).float()
        has_target = bool((batch["target"] >= 0).all())
        metrics.exclude_seen(scores, batch["seen_rows"], batch["seen_cols"])
        if has_target:
            ranks[pos] = metrics.target_ranks(scores, batch["target"]).numpy()
        vals, idx = metrics.top_k(scores, k)
        top_items[pos], top_scores[pos] = idx.numpy(), vals.numpy()
    bar.close()
    return ranks, top_items, top_scores


def _override(
    n_rows: int, n_items: int, *layers: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (row, item, value) overrides of several layers as distinct pairs sorted by row,
    a later layer's value winning (exclusion, -inf, is the last)."""
    rows = torch.cat([r for r, _, _ in layers]).long()
    cols = torch.cat([c for _, c, _ in layers]).long()
    vals = torch.cat([v.float() for _, _, v in layers])
    keys = rows * n_items + cols
    order = torch.argsort(keys, stable=True)  # within a pair: layer order
    keys, vals = keys[order], vals[order]
    last = torch.ones(len(keys), dtype=torch.bool)
    last[:-1] = keys[1:] != keys[:-1]
    keys, vals = keys[last], vals[last]
    return keys // n_items, keys % n_items, vals


class _SharedOrder:
    """Exact ranks and top-k of a :class:`SharedScorer` in O(overrides + k) per user instead
    of O(n_items): the ranking rule (higher score first, then the lower item) over the
    shared vector is one sort, done once; a user's overrides only move their own items.
    Written here because it is the rank rule of components/metrics.py, specialised."""

    def __init__(self, base: torch.Tensor):
        self.base, self.n = base, len(base)
        self.order = torch.argsort(-base, stable=True)  # the global ranking: score desc, item asc
        self.position = torch.empty(self.n, dtype=torch.long)
        self.position[self.order] = torch.arange(self.n)
        self.sorted_neg = -base[self.order]  # ascending

    def _before(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """#{items i : base_i > v, or base_i == v and i < t}, per query (v, t)."""
        out = self.position[t].clone()  # v == base_t: t's own place in the shared ranking
        other = torch.nonzero(v != self.base[t]).flatten()  # an overridden target (excluded: -inf)
        lo = torch.searchsorted(self.sorted_neg, -v[other], side="left")  # base > v
        hi = torch.searchsorted(self.sorted_neg, -v[other], side="right")  # base >= v
        out[other] = lo
        # v equal to some other item's base score (rare): count that block's lower items. Within
        # a block of equal scores the items are in ascending order (a stable sort).
        for j in torch.nonzero(hi > lo).flatten().tolist():
            block = self.order[lo[j] : hi[j]]
            out[other[j]] += int(torch.searchsorted(block, t[other[j]].reshape(1)))
        return out

    def rank(
        self, over: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(ranks, top items, top scores) of a batch, or None where the dense path is as cheap."""
        rows, cols, vals = over
        B = len(target)
        per_row = torch.bincount(rows, minlength=B)
        width = k + int(per_row.max()) if B and len(rows) else k
        if width >= self.n:
            return None
        ranks = np.full(B, -1, dtype=np.int64)
        if bool((target >= 0).all()):
            t = target
            v = self.base[t].clone()  # the target's score: its override, else its base
            hit = cols == t[rows]
            v[rows[hit]] = vals[hit]
            base_c, t_r, v_r = self.base[cols], t[rows], v[rows]
            # The shared ranking counts each overridden item by its base score; count it by its own.
            counted = (base_c > v_r) | ((base_c == v_r) & (cols < t_r))
            own = (vals > v_r) | ((vals == v_r) & (cols < t_r))
            fix = torch.zeros(B, dtype=torch.long).index_add_(0, rows, own.long() - counted.long())
            ranks = (self._before(v, t) + fix).numpy()
        # Candidates: the shared ranking's first `width` items (at least k of them without an
        # override, each above every other non-overridden item) and every overridden item.
        prefix = self.order[:width].expand(B, -1).clone()  # (B, width)
        scores = self.base[prefix]
        taken = torch.isin(torch.arange(B)[:, None] * self.n + prefix, rows * self.n + cols)
        prefix[taken], scores[taken] = self.n, -torch.inf  # its override stands in for it
        extra_items = torch.full((B, max(1, int(per_row.max()) if len(rows) else 1)), self.n, dtype=torch.long)
        extra_scores = torch.full(extra_items.shape, -torch.inf)
        slot = torch.arange(len(rows)) - (torch.cumsum(per_row, 0) - per_row)[rows]
        extra_items[rows, slot], extra_scores[rows, slot] = cols, vals
        items = torch.cat([prefix, extra_items], 1)
        items, order = items.sort(1)  # in item order, so that top_k's tie rule (lower column) is the lower item
        vals_k, cols_k = metrics.top_k(torch.cat([scores, extra_scores], 1).gather(1, order), k)
        return ranks, items.gather(1, cols_k).numpy(), vals_k.numpy()


def report(ranks: np.ndarray, top_items: np.ndarray, n_items: int) -> dict[str, float]:
    """The metric table of DESIGN.md §5 for one evaluation."""
    out = metrics.rank_metrics(ranks)
    out["coverage10"] = metrics.coverage(top_items[:, :10], n_items)
    return out


COLD_MAX_INTERACTIONS = 5  # DESIGN.md / issue 4: "cold" test targets have <= 5 training interactions


def item_counts(view: View, n_items: int, targets_only: bool = False) -> np.ndarray:
    """Training interactions per item in a view (for ``final``: every event before the test
    targets); ``targets_only``: only events of the target types (what popularity counts)."""
    if not view.train_seqs:
        return np.zeros(n_items, dtype=np.int64)
    flat = np.concatenate(view.train_seqs)
    if targets_only:
        flat = flat[view.behaviour.is_target(np.concatenate(view.train_types))]
    return np.bincount(flat, minlength=n_items)


def repeat_report(ranks: np.ndarray, view: View) -> dict:
    """HR@10 and NDCG@10 split by whether the target item is in the user's history
    (``repeat_*``) or not (``new_*``), with the counts: a model that only echoes the
    history shows as high repeat and zero new figures."""
    repeat = np.array([t in set(h.tolist()) for t, h in zip(view.eval_targets, view.eval_hist, strict=True)], bool)
    out = {}
    for name, mask in (("repeat", repeat), ("new", ~repeat)):
        sub = metrics.rank_metrics(ranks[mask], ks=(10,))
        out.update({f"{name}_hr10": sub["hr10"], f"{name}_ndcg10": sub["ndcg10"], f"{name}_n": int(mask.sum())})
    return out


def cold_report(ranks: np.ndarray, view: View, n_items: int, max_count: int = COLD_MAX_INTERACTIONS) -> dict:
    """HR@10, NDCG@10 and MRR over the targets whose item has <= ``max_count`` training
    interactions (``cold_*``), and how many such targets there are (``cold_n``)."""
    cold = item_counts(view, n_items)[view.eval_targets] <= max_count
    sub = metrics.rank_metrics(ranks[cold], ks=(10,))
    return {"cold_hr10": sub["hr10"], "cold_ndcg10": sub["ndcg10"], "cold_mrr": sub["mrr"], "cold_n": int(cold.sum())}


def topk_frame(data: Dataset, view: View, top_items: np.ndarray, top_scores: np.ndarray, k: int) -> pd.DataFrame:
    """The top-K table (user_id, rank, item_id, score) of a view's users, rank 1 = best."""
    return topk_table(data.user_ids[view.eval_users], data.item_ids, top_items, top_scores, k)


def popularity_scorer(view: View, n_items: int) -> Scorer:
    """Target-type events per item over the view's training sequences (for ``final``: every
    event before the test targets); ties are broken by item index by the ranking rule."""
    return SharedScorer(torch.as_tensor(item_counts(view, n_items, targets_only=True), dtype=torch.float32))


def recent_scorer(view: View, n_items: int) -> Scorer:
    """The recent-interaction baseline: the user's own items first, by the largest behaviour
    weight of their events with the item, then by how recent that event is (position in
    the history); every other item after them by popularity (target-type counts). Weights
    compare by rank, so 1 and 1.5 order as 1 and 2 do.

    Scores: history items in (1, 2], the rest in [0, 1). It reads the whole history, so
    rank it with ``max_len`` at least the longest history."""
    pop = torch.as_tensor(item_counts(view, n_items, targets_only=True), dtype=torch.float32)
    pop = pop / (pop.max() + 1) if len(pop) else pop
    weights = torch.as_tensor(view.behaviour.weight_ranks())

    def own_items(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq, types = batch["seq"], batch["types"]
        B, L = seq.shape
        w = weights[types]  # (B, L), padding 0
        key = w * (L + 1) + torch.arange(1, L + 1, dtype=torch.float32)  # weight first, then recency
        key = 1 + key / (float(weights.max()) * (L + 1) + L + 1)  # (1, 2]
        rows = torch.arange(B)[:, None].expand(B, L)
        real = seq < n_items
        rows, cols, key = rows[real], seq[real], key[real]
        # An item's largest key: sorted by key, the last of each (row, item) pair wins.
        order = torch.argsort(key, stable=True)
        return _override(B, n_items, (rows[order], cols[order], key[order]))

    return SharedScorer(pop, own_items)


def test_report(rec, data: Dataset, k: int = 10) -> tuple[dict, pd.DataFrame]:
    """Full-ranking test metrics of ``rec`` on ``data`` and the exact top-k they came from.

    History = everything before each user's test target; the same call re-scores a
    champion trained on yesterday's ids. Above a size, on a fixed sample (:func:`final_view`).
    """
    view, _ = final_view(data)
    ranks, top_items, top_scores = rank_view(rec.scorer_for(data), view, data.n_items, max_len=rec.max_len)
    return full_report(ranks, top_items, view, data.n_items), topk_frame(data, view, top_items, top_scores, k)


def full_report(ranks: np.ndarray, top_items: np.ndarray, view: View, n_items: int) -> dict:
    """The metric table, cold-start and repeat/new splits of one evaluation of ``view``."""
    return {**report(ranks, top_items, n_items), **cold_report(ranks, view, n_items), **repeat_report(ranks, view)}


def popularity_report(data: Dataset) -> dict:
    """The popularity baseline on the test targets (target-type counts over every event before them)."""
    view, _ = final_view(data)
    ranks, top_items, _ = rank_view(popularity_scorer(view, data.n_items), view, data.n_items)
    return full_report(ranks, top_items, view, data.n_items)


def recent_report(data: Dataset) -> dict:
    """The recent-interaction baseline (:func:`recent_scorer`) on the test targets."""
    view, _ = final_view(data)
    longest = max((len(h) for h in view.eval_hist), default=1)
    ranks, top_items, _ = rank_view(recent_scorer(view, data.n_items), view, data.n_items, max_len=longest)
    return full_report(ranks, top_items, view, data.n_items)
