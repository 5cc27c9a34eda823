"""The one contract every model family follows, and the Lightning system that trains any of them.

A family is a plain ``nn.Module`` built as ``Family(config, n_items, n_users)`` with

- ``loss(batch) -> scalar``: its training objective on a batch of user sequences;
- ``score(batch) -> (B, n_items)``: scores of every catalogue item, for full ranking.

A batch is a dict: ``users`` (B,) user indices (``n_users`` = unknown user) and ``seq``
(B, L) time-ordered item indices, left-padded with ``n_items`` (most recent last). Each
family uses what it needs: MF the user index, sequence families the history. Training,
evaluation, registration and recommendation only ever call ``loss`` and ``score``.

A family that reads item text sets ``uses_text = True``; training then also passes
``item_text`` ((n_items, d) frozen text embeddings, components/text.py),
``item_strings`` (each item's text) and ``item_counts`` ((n_items,) training
interactions per item in the data it is trained on). What it learns from them must live in its
``state_dict`` (e.g. a buffer), so that a registered model is rebuilt from
``Family(config, n_items, n_users)`` plus its weights alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from components import metrics


def pad_left(seqs: list[np.ndarray], max_len: int, pad: int) -> torch.Tensor:
    """Right-align the last ``max_len`` items of each sequence; (B,) lists -> (B, L) long."""
    length = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    out = torch.full((len(seqs), length), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = torch.tensor(s, dtype=torch.long)
    return out


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-2
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); families may regularise inside their loss instead."""

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class RecSystem(L.LightningModule):
    """Lightning system around any family: loss for training, full-ranking NDCG@10 for validation."""

    def __init__(self, model: nn.Module, optim: OptimConfig = OptimConfig()):
        super().__init__()
        self.model = model
        self.optim = optim
        self._val: list[torch.Tensor] = []

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.score(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["users"]), sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores = self.model.score(batch).float()
        metrics.exclude_seen(scores, batch["seen_rows"], batch["seen_cols"], batch["target"])
        self._val.append(metrics.target_ranks(scores, batch["target"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        ranks = torch.cat(self._val).double()
        self._val.clear()
        # Sums and counts, reduced over DDP ranks, give exact means over all users.
        hit = (ranks < 10).double()
        count = torch.tensor(float(len(ranks)), dtype=torch.float64, device=ranks.device)
        stats = torch.stack([(hit / torch.log2(ranks + 2)).sum(), hit.sum(), count])
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        self.log("val_ndcg10", (stats[0] / stats[2]).item(), prog_bar=True)
        self.log("val_hr10", (stats[1] / stats[2]).item())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)


def sampled_or_full_ce(
    q: torch.Tensor, target: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None, sampled: int
) -> torch.Tensor:
    """Full cross-entropy over the catalogue, or a sampled softmax with shared uniform negatives.

    ``q`` (N, d) queries, ``table`` (n_items, d) output item vectors, ``bias`` (n_items,) or None.
    The sampled path scores the batch's targets plus ``sampled`` uniform negatives
    (in-batch softmax).
    """
    if not sampled:
        logits = q @ table.T
        return F.cross_entropy(logits if bias is None else logits + bias, target)
    neg = torch.randint(0, len(table), (sampled,), device=q.device)
    cand = torch.cat([target, neg])  # (N + S,) candidates; each row's positive sits on the diagonal
    logits = q @ table[cand].T  # (N, N + S)
    if bias is not None:
        logits = logits + bias[cand]
    return F.cross_entropy(logits, torch.arange(len(target), device=q.device))
