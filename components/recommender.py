"""A trained model with its vocabularies: what is registered, re-scored and served.

A :class:`Recommender` is the family's weights plus the item and user ids it was trained
on, and the one serving path: it maps ids to indices, batches requests, and writes the
top-K table (user_id, rank, item_id, score) that evaluation, batch recommendations and the
MLflow pyfunc (components/pyfunc.py) all return. ``scorer_for(data)`` maps it onto
*today's* ids, so yesterday's champion can be re-scored on today's holdout: unknown users
get the family's unknown-user row, unknown history items are dropped, items the model never
saw score -inf.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from components import metrics
from components.batches import pad_left, topk_table
from components.models import MODELS

REQUEST_BATCH = 1024  # users scored at once when serving a request frame


@dataclass
class Recommender:
    family: str
    config: dict
    state_dict: dict
    item_ids: np.ndarray
    user_ids: np.ndarray
    item_pos: dict = field(init=False, repr=False)
    user_pos: dict = field(init=False, repr=False)

    def __post_init__(self):
        cls = MODELS[self.family]
        self.model = cls(cls.Config(**self.config), len(self.item_ids), len(self.user_ids))
        self.model.load_state_dict(self.state_dict)
        self.model.eval()
        self.item_pos = {str(x): i for i, x in enumerate(self.item_ids)}
        self.user_pos = {str(x): i for i, x in enumerate(self.user_ids)}

    @property
    def max_len(self) -> int:
        return self.model.config.max_len

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "family": self.family,
                "config": self.config,
                "state_dict": self.state_dict,
                "item_ids": list(map(str, self.item_ids)),
                "user_ids": list(map(str, self.user_ids)),
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Recommender:
        d = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(d["family"], d["config"], d["state_dict"], np.array(d["item_ids"]), np.array(d["user_ids"]))

    # -- id mapping -----------------------------------------------------------------------------
    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """The model's indices of ``item_ids``, unknown ones dropped (order kept)."""
        return np.array([self.item_pos[x] for x in map(str, item_ids) if x in self.item_pos], dtype=np.int64)

    def user_indices(self, user_ids: Sequence[str]) -> torch.Tensor:
        """The model's indices of ``user_ids``; an unknown user is ``n_users`` (the unknown-user row)."""
        n_users = len(self.user_ids)
        return torch.tensor([self.user_pos.get(str(u), n_users) for u in user_ids], dtype=torch.long)

    # -- serving --------------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]], k: int = 10) -> pd.DataFrame:
        """Top-``k`` per user from their ``histories`` (item ids, oldest first), history excluded.

        Returns the top-K table (user_id, rank, item_id, score), users in request order."""
        user_ids = [str(u) for u in user_ids]
        all_hists = [self.item_indices(h) for h in histories]
        # One width for the whole request: a family that reads the padding (lstm) scores a
        # user the same whatever batch they fall in.
        width = max(1, min(self.max_len, max((len(h) for h in all_hists), default=1)))
        tops, vals = [], []
        for s in range(0, len(user_ids), REQUEST_BATCH):
            hists = all_hists[s : s + REQUEST_BATCH]
            batch = {
                "users": self.user_indices(user_ids[s : s + REQUEST_BATCH]),
                "seq": pad_left(hists, self.max_len, self.n_items, length=width),
            }
            scores = self.model.score(batch).float()
            metrics.exclude_seen(scores, *metrics.seen_pairs(hists))
            v, i = metrics.top_k(scores, k)
            tops.append(i.numpy())
            vals.append(v.numpy())
        top = np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)
        val = np.concatenate(vals) if vals else np.zeros((0, k), dtype=np.float32)
        table = topk_table(np.asarray(user_ids, dtype=object), self.item_ids, top, val, k)
        return table.astype({"score": np.float64})  # what the served model's signature says

    # -- re-scoring on another day's ids --------------------------------------------------------
    def scorer_for(self, data) -> Callable[[dict], torch.Tensor]:
        """A scorer over ``data``'s item and user indices (a components.datasets.Dataset);
        (batch) -> (B, data.n_items)."""
        same = np.array_equal(self.item_ids, data.item_ids) and np.array_equal(self.user_ids, data.user_ids)
        if same:
            return torch.no_grad()(self.model.score)
        n_model_items = self.n_items
        # today's index -> model index (unknown: the model's padding / unknown-user index)
        item_map = torch.tensor([self.item_pos.get(str(x), n_model_items) for x in data.item_ids] + [n_model_items])
        user_map = self.user_indices(data.user_ids)
        known = item_map[:-1] < n_model_items

        @torch.no_grad()
        def score(batch: dict) -> torch.Tensor:
            seq = item_map[batch["seq"]]
            kept = [row[row < n_model_items] for row in seq]  # drop unknown items, re-pad
            mapped = {
                "users": user_map[batch["users"]],
                "seq": pad_left([k.numpy() for k in kept], seq.shape[1], n_model_items),
            }
            s = self.model.score(mapped)  # (B, n_model_items)
            out = torch.full((len(seq), data.n_items), -torch.inf)
            out[:, known] = s[:, item_map[:-1][known]]
            return out

        return score
