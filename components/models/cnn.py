"""Caser: horizontal and vertical convolutions over the last L items, plus a user embedding.

Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018. Trained here with next-item full cross-entropy over the catalogue
(the paper used sampled negatives with BCE), a sampled softmax being the option for
large catalogues. ``text: true`` adds to each item's input and output vectors a projection of
its frozen text embedding (:class:`~components.models.contract.TextProjection`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from components.models.contract import (
    PAD_TYPE,
    Family,
    FamilyConfig,
    Search,
    SideInputs,
    TextProjection,
    rows_from_text,
)
from components.models.loss import sampled_or_full_ce


@dataclass(frozen=True)
class CNNConfig(FamilyConfig):
    dim: int = 64
    """Item and user embedding size."""
    window: int = 5
    """L: how many recent items the convolutions see (each of a training batch's ``max_len``
    positions is one window)."""
    n_h: int = 16
    """Horizontal filters per height (heights 1..L)."""
    n_v: int = 4
    """Vertical filters."""
    dropout: float = 0.5
    """Dropout before the output layer."""
    sampled: int = 0
    """0: full cross-entropy (a sampled softmax above ``sampled_above`` items); N > 0: a sampled softmax with N
    popularity-drawn negatives and logQ correction (components/models/loss.py: sampled_ce)."""
    lr: float = 5e-3
    """Default learning rate for this family (the flow's ``lr`` overrides it)."""
    weight_decay: float = 0.3
    """Default decoupled weight decay (AdamW) for this family."""
    text: bool = False
    """Add to each item's input and output vectors a learned projection of its frozen text
    embedding (needs the item-text layer)."""
    text_dim: int = 384
    """Size of the item text embeddings (MiniLM: 384)."""

    def __post_init__(self):
        super().__post_init__()
        if min(self.dim, self.window, self.n_h, self.n_v, self.text_dim) < 1 or not 0 <= self.dropout < 1:
            raise ValueError("CNNConfig: sizes must be >= 1 and 0 <= dropout < 1")


class CNN(Family):
    Config = CNNConfig
    ITEM_ROWS = ("embed.weight", "items.weight", "bias", "text.text")
    search_space = {  # Caser's own grid (Tang & Wang, WSDM 2018) around the defaults
        "dim": Search(32, 128, log=True),
        "window": Search(3, 8),
        "n_h": Search(4, 32, log=True),
        "n_v": Search(1, 8),
        "dropout": Search(0.1, 0.6),
        "lr": Search(1e-3, 1e-2, log=True),
        "weight_decay": Search(0.01, 1.0, log=True),
        "text": Search(choices=(False, True)),
    }
    USER_ROWS = ("user.weight",)

    def __init__(self, config: CNNConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__(config, n_items, n_users, side)
        c = config
        self.embed = nn.Embedding(n_items + 1, c.dim, padding_idx=n_items)
        self.user = nn.Embedding(n_users + 1, c.dim, padding_idx=n_users)  # row n_users = unknown user
        self.vertical = nn.Conv2d(1, c.n_v, (c.window, 1))
        self.horizontal = nn.ModuleList(nn.Conv2d(1, c.n_h, (h, c.dim)) for h in range(1, c.window + 1))
        self.fc = nn.Linear(c.n_v * c.dim + c.n_h * c.window, c.dim)
        self.drop = nn.Dropout(c.dropout)
        self.items = nn.Embedding(n_items, 2 * c.dim)  # output item vectors, against [z; P_u]
        self.bias = nn.Parameter(torch.zeros(n_items))
        nn.init.normal_(self.items.weight, std=1.0 / (2 * c.dim))
        self.behaviour = self.behaviour_embedding(c.dim)
        self.repeat = self.repeat_term(enabled=not self.negatives)
        self.intent = self.intent_embedding(2 * c.dim)
        # One projection for both: its first dim columns join the input vectors, the rest the output
        # ones, each started at the spread of the id vectors it is added to.
        self.text = None
        if c.text:
            self.text = TextProjection(n_items, c.text_dim, 3 * c.dim, (side or SideInputs()).item_text)
            nn.init.normal_(self.text.proj.weight[c.dim :], std=1.0 / (2 * c.dim))

    @classmethod
    def reads_text(cls, config: CNNConfig) -> bool:
        return config.text

    def _tables(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """From one projection of the items' text: what it adds to each item's input vector
        (n_items, dim; None without text) and the output item vectors (n_items, 2·dim)."""
        if self.text is None:
            return None, self.items.weight
        t = self.text()
        return t[:, : self.config.dim], self.items.weight + t[:, self.config.dim :]

    def forward(
        self,
        window: torch.Tensor,
        users: torch.Tensor,
        types: torch.Tensor | None = None,
        text_in: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, L) last-L item indices (and their event types) and (N,) users -> (N, 2·dim) query.
        ``text_in``: the first of :meth:`_tables`, where the caller has it."""
        # The convolutions are computed as matmuls over unfolded windows with the Conv2d
        # modules' own weights (same result, same state dict): oneDNN's kernels for these
        # tiny (h, dim) filters made the backward pass 2.3x slower on CPU.
        e = self.embed(window)  # (N, L, d)
        if self.text is not None:
            text_in = self._tables()[0] if text_in is None else text_in
            e = e + F.pad(text_in, (0, 0, 0, 1))[window]  # the padding row adds nothing
        if types is not None:
            e = e + self.behaviour(types)
        v = torch.einsum("nlj,fl->nfj", e, self.vertical.weight[:, 0, :, 0]) + self.vertical.bias[None, :, None]
        h = []
        for height, conv in enumerate(self.horizontal, start=1):
            spans = e.unfold(1, height, 1).transpose(2, 3).flatten(2)  # (N, L-h+1, h·d)
            h.append(F.relu(F.linear(spans, conv.weight.flatten(1), conv.bias)).amax(dim=1))  # (N, n_h)
        z = F.relu(self.fc(self.drop(torch.cat([v.flatten(1), *h], dim=1))))  # (N, d)
        return torch.cat([z, self.user(users)], dim=1)

    def logits(self, q: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        return q @ (self.item_vectors() if table is None else table).T + self.bias

    def new_item_rows(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """With ``text: true``, a new item is its text: its input and output id vectors and its
        score offset are borrowed (:func:`~components.models.contract.rows_from_text`)."""
        if self.text is None:
            return super().new_item_rows(text)
        text = torch.as_tensor(text, dtype=self.text.text.dtype)
        ids = {"embed.weight": self.embed.weight[: self.n_items], "items.weight": self.items.weight}
        return {"text.text": text, **rows_from_text(text, self.text.text, ids, {"bias": self.bias})}

    def item_vectors(self) -> torch.Tensor:
        return self._tables()[1]

    def score(self, batch: dict) -> torch.Tensor:
        seq, types = batch["seq"], self.event_types(batch)
        text_in, table = self._tables()
        windows = self._windows(seq, self.n_items)[:, -1]
        if types is None:
            return self.logits(self(windows, batch["users"], text_in=text_in), table)
        intent = self.ranking_intent(seq)
        q = self(windows, batch["users"], self._windows(types, PAD_TYPE)[:, -1], text_in) + self.intent(intent)
        scores = self.logits(q, table)
        if self.repeat.active:
            scores = scores + self.repeat.dense(seq, types, intent, self.n_items)
        return scores

    def _windows(self, seq: torch.Tensor, pad: int) -> torch.Tensor:
        """(B, T) -> (B, T, L): for each position t the L items (or types) before it, padded on the left."""
        L = self.config.window
        padded = F.pad(seq, (L, 0), value=pad)  # (B, T+L)
        return padded.unfold(1, L, 1)[:, 1:]  # window ending at t (inclusive) predicts t+1

    def loss(self, batch: dict) -> torch.Tensor:
        seq, users, types = batch["seq"], batch["users"], self.event_types(batch)
        text_in, table = self._tables()
        windows = self._windows(seq[:, :-1], self.n_items)  # (B, T-1, L)
        target = seq[:, 1:]
        valid = (target != self.n_items) & (seq[:, :-1] != self.n_items)
        if types is None:
            q = self(windows[valid], users[:, None].expand_as(target)[valid], text_in=text_in)
            return sampled_or_full_ce(q, target[valid], table, self.bias, self.negatives, log_q=self.log_q)
        valid &= self.predicted(types[:, 1:], target)
        intents = self.intents(types[:, 1:], target)
        tw = self._windows(types[:, :-1], PAD_TYPE)[valid]
        q = self(windows[valid], users[:, None].expand_as(target)[valid], tw, text_in) + self.intent(intents[valid])
        extra = (
            self.repeat.pairs(seq[:, :-1], types[:, :-1], intents, valid, self.n_items) if self.repeat.active else None
        )
        return sampled_or_full_ce(q, target[valid], table, self.bias, self.negatives, extra, self.log_q)
