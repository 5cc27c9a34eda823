"""LSTM over the time-ordered behaviour sequence, next-item prediction over the whole catalogue.

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016
(GRU4Rec), with an LSTM cell and the full cross-entropy over all items that Klenitskiy &
Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys
2023, show beats sampled objectives by a wide margin. ``sampled`` negatives are an option
for catalogues too large for a full softmax. ``text: true`` adds to each item's id embedding
a projection of its frozen text embedding (:class:`~components.models.contract.TextProjection`),
in the input and the output layer alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.models.contract import Family, FamilyConfig, Search, SideInputs, TextProjection, rows_from_text
from components.models.loss import sampled_or_full_ce


@dataclass(frozen=True)
class LSTMConfig(FamilyConfig):
    dim: int = 64
    """Item embedding size (and output space: logits = h · item embeddings)."""
    hidden: int = 128
    """LSTM hidden size."""
    layers: int = 1
    """Stacked LSTM layers."""
    dropout: float = 0.3
    """Dropout on the input embeddings and the LSTM output."""
    lr: float = 5e-3
    """Default learning rate for this family (the flow's ``lr`` overrides it)."""
    sampled: int = 0
    """0: full cross-entropy (a sampled softmax above ``sampled_above`` items); N > 0: a sampled softmax with N
    popularity-drawn negatives and logQ correction (components/models/loss.py: sampled_ce)."""
    text: bool = False
    """Add to each item's id embedding a learned projection of its frozen text embedding
    (needs the item-text layer)."""
    text_dim: int = 384
    """Size of the item text embeddings (MiniLM: 384)."""

    def __post_init__(self):
        super().__post_init__()
        if min(self.dim, self.hidden, self.layers, self.text_dim) < 1 or not 0 <= self.dropout < 1:
            raise ValueError("LSTMConfig: dim, hidden, layers, text_dim >= 1 and 0 <= dropout < 1")


class LSTM(Family):
    Config = LSTMConfig
    ITEM_ROWS = ("items.weight", "bias", "text.text")
    search_space = {
        "dim": Search(32, 128, log=True),
        "hidden": Search(64, 256, log=True),
        "layers": Search(1, 2),
        "dropout": Search(0.0, 0.5),
        "lr": Search(1e-3, 1e-2, log=True),
        "max_len": Search(choices=(20, 50, 100)),
        "text": Search(choices=(False, True)),
    }

    def __init__(self, config: LSTMConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__(config, n_items, n_users, side)
        self.items = nn.Embedding(n_items + 1, config.dim, padding_idx=n_items)  # row n_items = padding
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.dim, config.hidden, num_layers=config.layers, batch_first=True)
        self.out = nn.Linear(config.hidden, config.dim)
        self.bias = nn.Parameter(torch.zeros(n_items))
        self.behaviour = self.behaviour_embedding(config.dim)
        self.repeat = self.repeat_term(enabled=not self.negatives)
        self.intent = self.intent_embedding(config.dim)
        self.text = (
            TextProjection(n_items, config.text_dim, config.dim, (side or SideInputs()).item_text)
            if config.text
            else None
        )

    @classmethod
    def reads_text(cls, config: LSTMConfig) -> bool:
        return config.text

    def forward(
        self, seq: torch.Tensor, types: torch.Tensor | None = None, table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) item indices (and their event types), left-padded -> (B, L, dim) next-item
        query at every position. ``table``: :meth:`item_vectors`, where the caller has it."""
        if self.text is None:
            x = self.items(seq)
        else:  # the padding row stays zero
            table = self.item_vectors() if table is None else table
            x = torch.cat([table, self.items.weight[self.n_items :]])[seq]
        if types is not None:
            x = x + self.behaviour(types)
        h, _ = self.lstm(self.drop(x))  # (B, L, hidden); left padding is read first
        return self.out(self.drop(h))

    def logits(self, q: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        return q @ (self.item_vectors() if table is None else table).T + self.bias  # (N, n_items)

    def new_item_rows(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """With ``text: true``, a new item is its text: its id embedding and score offset are
        borrowed (:func:`~components.models.contract.rows_from_text`)."""
        if self.text is None:
            return super().new_item_rows(text)
        text = torch.as_tensor(text, dtype=self.text.text.dtype)
        ids = {"items.weight": self.items.weight[: self.n_items]}
        return {"text.text": text, **rows_from_text(text, self.text.text, ids, {"bias": self.bias})}

    def item_vectors(self) -> torch.Tensor:
        ids = self.items.weight[: self.n_items]
        return ids if self.text is None else ids + self.text()

    def score(self, batch: dict) -> torch.Tensor:
        seq, types, table = batch["seq"], self.event_types(batch), self.item_vectors()
        q = self(seq, types, table)[:, -1]  # the most recent position is the last
        if types is None:
            return self.logits(q, table)
        intent = self.ranking_intent(seq)
        scores = self.logits(q + self.intent(intent), table)
        if self.repeat.active:
            scores = scores + self.repeat.dense(seq, types, intent, self.n_items)
        return scores

    def loss(self, batch: dict) -> torch.Tensor:
        seq, types, table = batch["seq"], self.event_types(batch), self.item_vectors()
        q = self(
            seq[:, :-1], None if types is None else types[:, :-1], table
        )  # (B, L-1, dim): item t+1 from events <= t
        target = seq[:, 1:]
        valid = (target != self.n_items) & (seq[:, :-1] != self.n_items)
        if types is None:
            return sampled_or_full_ce(q[valid], target[valid], table, self.bias, self.negatives, log_q=self.log_q)
        valid &= self.predicted(types[:, 1:], target)
        intents = self.intents(types[:, 1:], target)
        q = q + self.intent(intents)
        extra = (
            self.repeat.pairs(seq[:, :-1], types[:, :-1], intents, valid, self.n_items) if self.repeat.active else None
        )
        return sampled_or_full_ce(q[valid], target[valid], table, self.bias, self.negatives, extra, self.log_q)
