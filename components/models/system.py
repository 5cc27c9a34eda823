"""The Lightning system that trains any family: the only module of the package that imports Lightning.

Loading, scoring and serving a model need only ``components.models``; training wraps the
family in :class:`RecSystem`.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch

from components import metrics
from components.models.contract import Family


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
    """Lightning system around any family: loss for training, full-ranking NDCG@10 for validation
    (of ``fit_score``, the scores before ranking-time adjustments: what early stopping reads)."""

    def __init__(self, model: Family, optim: OptimConfig = OptimConfig()):
        super().__init__()
        self.model = model
        self.optim = optim
        self._val: list[torch.Tensor] = []
        # A closed-form family (mf with solver="als") updates its own weights: no optimiser.
        self.automatic_optimization = not model.closed_form

    def setup(self, stage: str) -> None:
        if self.model.closed_form and self.trainer.world_size > 1:
            raise ValueError(
                f"{type(self.model).__name__} with solver 'als' trains in one process (its item step reads "
                f"every user's vector); got {self.trainer.world_size} processes: set devices: 1, num_nodes: 1"
            )

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.score(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.model.closed_form:
            loss = self.model.solve_step(batch)  # the objective after the step, logged as a gradient family's is
            if batch["epoch_end"]:  # here, not in on_train_epoch_end: validation runs before that hook
                self.model.solve_epoch_end()
            self.optimizers().step()  # counts the step (see configure_optimizers)
        else:
            loss = self.model.loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["users"]), sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores = self.model.fit_score(batch).float()
        metrics.exclude_seen(scores, batch["seen_rows"], batch["seen_cols"])
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
        if self.model.closed_form:
            # Lightning counts a training step (global_step, which checkpointing reads) only when
            # an optimiser steps. The solve is the step; this optimiser (no gradients, lr 0)
            # changes nothing and only marks it.
            return torch.optim.SGD(self.parameters(), lr=0.0)
        return torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)
