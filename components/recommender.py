"""A trained model with its vocabularies: what is registered, re-scored and served.

A :class:`Recommender` is the family's weights plus the item and user ids it was trained
on. ``scorer_for(data)`` maps it onto *today's* ids, so yesterday's champion can be
re-scored on today's holdout: unknown users get the family's unknown-user row, unknown
history items are dropped, items the model never saw score -inf.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from components.datasets import Dataset
from components.models import MODELS
from components.models.base import pad_left


@dataclass
class Recommender:
    family: str
    config: dict
    state_dict: dict
    item_ids: np.ndarray
    user_ids: np.ndarray

    def __post_init__(self):
        cls = MODELS[self.family]
        self.model = cls(cls.Config(**self.config), len(self.item_ids), len(self.user_ids))
        self.model.load_state_dict(self.state_dict)
        self.model.eval()

    @property
    def max_len(self) -> int:
        return int(self.config.get("max_len", 512))

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

    def scorer_for(self, data: Dataset) -> Callable[[dict], torch.Tensor]:
        """A scorer over ``data``'s item and user indices; (batch) -> (B, data.n_items)."""
        same = np.array_equal(self.item_ids, data.item_ids) and np.array_equal(self.user_ids, data.user_ids)
        if same:
            return torch.no_grad()(self.model.score)
        n_model_items, n_model_users = len(self.item_ids), len(self.user_ids)
        item_pos = {x: i for i, x in enumerate(self.item_ids)}
        user_pos = {x: i for i, x in enumerate(self.user_ids)}
        # today's index -> model index (unknown: the model's padding / unknown-user index)
        item_map = torch.tensor([item_pos.get(x, n_model_items) for x in data.item_ids] + [n_model_items])
        user_map = torch.tensor([user_pos.get(x, n_model_users) for x in data.user_ids])
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
