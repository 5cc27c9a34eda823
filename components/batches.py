"""What goes into a scorer and what comes out: left-padded (B, L) histories and the top-K table.

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
