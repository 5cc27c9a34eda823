"""The one contract every model family follows.

A family subclasses :class:`Family`, is built as ``Family(config, n_items, n_users, side)``
and defines

- ``loss(batch) -> scalar``: its training objective on a batch of user sequences;
- ``score(batch) -> (B, n_items)``: scores of every catalogue item, for full ranking.

A batch is a dict: ``users`` (B,) user indices (``n_users`` = unknown user) and ``seq``
(B, L) time-ordered item indices, left-padded with ``n_items`` (most recent last;
components/batches.py). Each family uses what it needs: MF the user index, sequence
families the history. Training, evaluation, registration and recommendation only ever call
``loss``, ``score`` and ``fit_score``. A family whose ``score`` adds a ranking-time
adjustment that is not part of the fit (bert's ``popularity_adjust``) overrides
``fit_score(batch)``, the scores without it: early stopping selects the epoch on those, so
such a setting never changes what is trained.

A family's ``Config`` subclasses :class:`FamilyConfig`, which holds what every family has:
how much history it reads (``max_len``) and its default optimiser settings.

A family that reads item text sets ``uses_text = True``; training then passes
:class:`SideInputs` (the items' text embeddings and strings, their training counts). Every
family takes the same ``side`` argument and the others ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class FamilyConfig:
    max_len: int = 50
    """How many of the most recent items the model reads."""
    lr: float = 1e-3
    """Default learning rate for this family (the flow's ``lr`` overrides it)."""
    weight_decay: float = 0.0
    """Default decoupled weight decay (AdamW) for this family (the flow's ``weight_decay`` overrides it)."""

    def __post_init__(self):
        if self.max_len < 1:
            raise ValueError(f"{type(self).__name__}.max_len must be >= 1, got {self.max_len}")
        if self.lr <= 0:
            raise ValueError(f"{type(self).__name__}.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"{type(self).__name__}.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class SideInputs:
    """What training knows about the items beside their ids, for the families that read it.

    What a family learns from these must live in its ``state_dict`` (e.g. a buffer): a
    registered model is rebuilt from ``Family(config, n_items, n_users)`` plus its weights
    alone, with no side inputs.
    """

    item_text: torch.Tensor | None = None
    """(n_items, d) frozen text embeddings of the items (components/text.py)."""
    item_strings: list[str] | None = None
    """Each item's text, for a family that fine-tunes the text encoder."""
    item_counts: torch.Tensor | None = None
    """(n_items,) training interactions per item in the data the model is trained on."""


class Family(nn.Module):
    """Base class of every model family: the contract above, with its defaults."""

    Config: ClassVar[type[FamilyConfig]]
    uses_text: ClassVar[bool] = False
    """True: training passes the items' text in :class:`SideInputs`."""

    def __init__(self, config: FamilyConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__()
        self.config, self.n_items, self.n_users = config, n_items, n_users

    def loss(self, batch: dict) -> torch.Tensor:
        """The training objective on a batch (a scalar)."""
        raise NotImplementedError

    def score(self, batch: dict) -> torch.Tensor:
        """(B, n_items) scores of every catalogue item, as they are ranked."""
        raise NotImplementedError

    def fit_score(self, batch: dict) -> torch.Tensor:
        """(B, n_items) scores before any ranking-time adjustment; early stopping reads these."""
        return self.score(batch)

    @property
    def max_len(self) -> int:
        """How many of the most recent items a batch should carry."""
        return self.config.max_len
