"""What goes into a scorer and what comes out: left-padded (B, L) histories, the flat
(user, item) pairs a closed-form family solves from, and the top-K table.

Training, evaluation and serving all pad the same way and all write the same top-K table;
this module imports only torch, numpy and pandas, so scoring a model never pulls in
Lightning to pad a sequence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def pad_left(seqs: list[np.ndarray], max_len: int, pad: int, length: int | None = None) -> torch.Tensor:
    """Right-align the last ``max_len`` items of each sequence; (B,) lists -> (B, L) long.

    L is the longest sequence (at most ``max_len``), or ``length`` when given (so that
    batches of one request all have the same width)."""
    if length is None:
        length = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    out = torch.full((len(seqs), length), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = torch.tensor(s, dtype=torch.long)
    return out


def flatten(per_user: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(every user's values one after the other, each user's offset into them: n_users + 1)."""
    lengths = np.fromiter(map(len, per_user), dtype=np.int64, count=len(per_user))
    offsets = np.zeros(len(per_user) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    flat = np.concatenate(per_user) if len(per_user) else np.zeros(0, dtype=np.int64)
    return flat, offsets


def pair_batches(
    seqs: list[np.ndarray],
    types: list[np.ndarray],
    max_len: int,
    users_per_batch: int,
    type_weights: np.ndarray | None = None,
) -> list[dict]:
    """The training batches of a closed-form family (mf with ``solver="als"``): runs of
    ``users_per_batch`` users with a non-empty sequence, in id order, each as the distinct
    (user, item) pairs among its users' last ``max_len`` events, sorted by user then item,
    with no padding: ``{users (B,), rows (P,) (a position in users), items (P,), types (P,),
    epoch_end}``. A pair's type is its strongest event's (the largest ``type_weights``; the
    first type code on a tie; without weights, every type weighs 1); ``epoch_end`` marks
    the last batch.

    A sweep reads every pair once; a padded (B, L) batch would carry B x the longest
    history, and deduplicating here, once per fit, spares every sweep a sort."""
    users = np.array([u for u, s in enumerate(seqs) if len(s)], dtype=np.int64)
    if not len(users):
        return []
    items, offsets = flatten([np.asarray(seqs[u][-max_len:], dtype=np.int64) for u in users])
    kinds, _ = flatten([np.asarray(types[u][-max_len:], dtype=np.int64) for u in users])
    rows = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(offsets))
    weight = np.ones(len(kinds)) if type_weights is None else np.asarray(type_weights, dtype=np.float64)[kinds]
    order = np.lexsort((kinds, -weight, items, rows))  # by user, item, then strongest first
    rows, items, kinds = rows[order], items[order], kinds[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (items[1:] != items[:-1])
    rows, items, kinds = rows[first], items[first], kinds[first]
    offsets = np.searchsorted(rows, np.arange(0, len(users) + users_per_batch, users_per_batch))
    out = []
    for n, start in enumerate(range(0, len(users), users_per_batch)):
        a, b = offsets[n], offsets[n + 1]
        out.append(
            {
                "users": torch.from_numpy(users[start : start + users_per_batch]),
                "rows": torch.from_numpy(rows[a:b] - start),
                "items": torch.from_numpy(items[a:b]),
                "types": torch.from_numpy(kinds[a:b]),
                "epoch_end": start + users_per_batch >= len(users),
            }
        )
    return out


def topk_table(
    user_ids: np.ndarray, item_ids: np.ndarray, top_items: np.ndarray, top_scores: np.ndarray, k: int
) -> pd.DataFrame:
    """Long table (user_id, rank, item_id, score), rank 1 = best: ``top_items`` (U, >= k) are
    indices into ``item_ids``, row u belongs to ``user_ids[u]``."""
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(user_ids).astype(str), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(top_items)),
            "item_id": np.asarray(item_ids)[top_items[:, :k].reshape(-1)],
            "score": top_scores[:, :k].reshape(-1).astype(np.float32),
        }
    )
