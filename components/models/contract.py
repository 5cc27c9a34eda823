"""The one contract every model family follows.

A family subclasses :class:`Family`, is built as ``Family(config, n_items, n_users, side)``
and defines

- ``loss(batch) -> scalar``: its training objective on a batch of user sequences;
- ``score(batch) -> (B, n_items)``: scores of every catalogue item, for full ranking.

A batch is a dict: ``users`` (B,) user indices (``n_users`` = unknown user), ``seq``
(B, L) time-ordered item indices, left-padded with ``n_items`` (most recent last;
components/batches.py) and ``types`` (B, L) the events' type codes, padded with
``PAD_TYPE`` (components/behaviour.py). Each family uses what it needs: MF the user index
and the events' behaviour weights (iALS confidences), sequence families the typed history
(a behaviour embedding added to each item's vector, :meth:`Family.behaviour_embedding`).
Training, evaluation, registration and recommendation only ever call
``loss``, ``score`` and ``fit_score``. A family whose ``score`` adds a ranking-time
adjustment that is not part of the fit (bert's ``popularity_adjust``) overrides
``fit_score(batch)``, the scores without it: early stopping selects the epoch on those, so
such a setting never changes what is trained.

A family's ``Config`` subclasses :class:`FamilyConfig`, which holds what every family has:
how much history it reads (``max_len``), its default optimiser settings, whether it reads
the event types (``behaviours``) and which next events it learns to predict (``predict``).

Behaviour lives in the model's state: the base class keeps the spec's weight per type
(``type_weights``) and target types (``target_types``) as buffers, so a registered model
scores as it was trained. On a log with one event type the behaviour embedding stays zero
and frozen, so one-type logs train exactly as before.

A family that reads item text sets ``uses_text = True``; training then passes
:class:`SideInputs` (the items' text embeddings and strings, their training counts). Every
family takes the same ``side`` argument and the others ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from components.behaviour import N_TYPE_CODES, PAD_TYPE

PREDICT = ("target", "all")


@dataclass(frozen=True)
class FamilyConfig:
    max_len: int = 50
    """How many of the most recent items the model reads."""
    lr: float = 1e-3
    """Default learning rate for this family (the flow's ``lr`` overrides it)."""
    weight_decay: float = 0.0
    """Default decoupled weight decay (AdamW) for this family (the flow's ``weight_decay`` overrides it)."""
    behaviours: bool = True
    """Read each event's type (behaviour embedding; mf: the spec's weights as confidences).
    False: every event alike (no embedding, weight 1, every next event predicted)."""
    predict: str = "target"
    """Sequence families: ``target`` learns to predict only next events of the target types
    (all of them for a one-type log); ``all`` every next event, whatever its type."""
    repeat: bool = True
    """Sequence families: add the learned repeat term (:class:`RepeatTerm`) where the
    exclusion policy lets a user's own items be ranked (``exclude: target | none``)."""

    def __post_init__(self):
        if self.predict not in PREDICT:
            raise ValueError(f"{type(self).__name__}.predict must be one of {PREDICT}, got {self.predict!r}")
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
    type_weights: torch.Tensor | None = None
    """(N_TYPE_CODES,) the spec's weight per event type (components/behaviour.py)."""
    target_types: torch.Tensor | None = None
    """(N_TYPE_CODES,) bool: the target types."""
    typed: bool = False
    """The training data has more than one event type (the behaviour embedding learns)."""
    repeats: bool = False
    """The exclusion policy lets history items be ranked (the repeat term learns)."""


class Family(nn.Module):
    """Base class of every model family: the contract above, with its defaults."""

    Config: ClassVar[type[FamilyConfig]]
    uses_text: ClassVar[bool] = False
    """True: training passes the items' text in :class:`SideInputs`."""

    def __init__(self, config: FamilyConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__()
        self.config, self.n_items, self.n_users = config, n_items, n_users
        side = side or SideInputs()
        weights = torch.ones(N_TYPE_CODES)
        targets = torch.ones(N_TYPE_CODES, dtype=torch.bool)
        if config.behaviours:
            if side.type_weights is not None:
                weights = torch.as_tensor(side.type_weights, dtype=torch.float32).clone()
            if side.target_types is not None and config.predict == "target":
                targets = torch.as_tensor(side.target_types, dtype=torch.bool).clone()
        weights[PAD_TYPE], targets[PAD_TYPE] = 0.0, False
        self.register_buffer("type_weights", weights)
        self.register_buffer("target_types", targets)
        self._typed = bool(config.behaviours and side.typed)
        self._repeats = bool(config.repeat and side.repeats)

    def behaviour_embedding(self, dim: int) -> nn.Embedding:
        """(type code -> dim) vectors added to item vectors. Starts at zero (and no random
        draw, so the other weights' initialisation is unchanged); trains only when the data
        has several types."""
        return nn.Embedding.from_pretrained(
            torch.zeros(N_TYPE_CODES, dim), freeze=not self._typed, padding_idx=PAD_TYPE
        )

    def repeat_term(self) -> RepeatTerm:
        """The repeat term (zero, and frozen unless the policy lets history items be ranked)."""
        init = self.type_weights.clone() if self._repeats else None  # start as the recent-interaction rule
        return RepeatTerm(trainable=self._repeats, typed=self.config.behaviours, init=init)

    def event_weights(self, batch: dict) -> torch.Tensor:
        """(B, L) each event's behaviour weight (padding 0)."""
        types = batch.get("types")
        if types is None:  # an untyped batch: every real event weighs 1
            return (batch["seq"] != self.n_items).float()
        return self.type_weights[types]

    def predicted(self, types: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: which next events the training objective predicts (``predict``)."""
        if types is None:
            return torch.ones_like(like, dtype=torch.bool)
        return self.target_types[types]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A model saved before behaviours were kept (an earlier champion) scores as it did:
        # weights 1, every type a target, a zero behaviour embedding.
        for name, value in (("type_weights", self.type_weights), ("target_types", self.target_types)):
            state_dict.setdefault(prefix + name, value)
        if "behaviour" in self._modules:  # a sequence family's behaviour_embedding is named ``behaviour``
            state_dict.setdefault(prefix + "behaviour.weight", torch.zeros_like(self._modules["behaviour"].weight))
        if "repeat" in self._modules:  # and its repeat term ``repeat``
            for name, value in self._modules["repeat"].state_dict().items():
                state_dict.setdefault(prefix + "repeat." + name, torch.zeros_like(value) if name == "weight" else value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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


class RepeatTerm(nn.Module):
    """A learned score for the user's own items: Σ over their events e with the item of
    ``weight[type(e)] · exp(-decay · steps since e)`` (RepeatNet's repeat mode, Ren et al.,
    AAAI 2019, reduced to a behaviour-weighted, recency-decayed copy score). Shop logs buy
    what was viewed or carted (63% of Taobao purchases), which an item-vector model learns
    slowly; this term is what the recent-interaction baseline does, with its weights learned
    inside the full cross-entropy (components/models/loss.py, sparse logits).

    It trains only where the exclusion policy lets history items be ranked, starting from
    the spec's behaviour weights (``init``: the recent-interaction rule, which a few hundred
    purchases could not teach from zero); elsewhere (one-type logs, every history item
    excluded) it is zero, frozen and skipped. ``typed = False`` (a family's
    ``behaviours: false``): one weight for every type.
    """

    def __init__(self, trainable: bool, typed: bool = True, init: torch.Tensor | None = None):
        super().__init__()
        self.typed = typed
        weight = torch.zeros(N_TYPE_CODES) if init is None else init.float().clone()
        self.weight = nn.Parameter(weight, requires_grad=trainable)
        self.decay = nn.Parameter(torch.tensor(-2.0), requires_grad=trainable)  # softplus: 0.13 per step

    @property
    def active(self) -> bool:
        return self.weight.requires_grad or bool(self.weight.detach().any())

    def _values(self, types: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        w = self.weight[types] if self.typed else self.weight[0].expand_as(types)
        return w * torch.exp(-F.softplus(self.decay) * steps)

    def pairs(self, inputs: torch.Tensor, types: torch.Tensor, valid: torch.Tensor, pad: int):
        """Sparse logits for the training queries: query (b, t) predicts the event after t and
        sees events s <= t. Returns (rows into ``q[valid]``, item columns, values), rows sorted."""
        B, T = inputs.shape
        t, s = torch.tril_indices(T, T, device=inputs.device)  # every s <= t, t ascending
        keep = valid[:, t] & (inputs[:, s] != pad)  # (B, P)
        row_of = torch.cumsum(valid.flatten(), 0).view(B, T) - 1  # (b, t) -> row of q[valid]
        b, p = keep.nonzero(as_tuple=True)
        rows, cols = row_of[b, t[p]], inputs[b, s[p]]
        return rows, cols, self._values(types[b, s[p]], (t[p] - s[p]).float())

    def dense(self, seq: torch.Tensor, types: torch.Tensor, n_items: int) -> torch.Tensor:
        """(B, n_items) the term for the next event after the whole (left-padded) history."""
        B, T = seq.shape
        steps = (T - 1 - torch.arange(T, device=seq.device)).float().expand(B, T)
        vals = self._values(types, steps) * (seq != n_items)
        out = torch.zeros(B, n_items + 1, device=seq.device, dtype=vals.dtype)
        return out.scatter_add_(1, seq, vals)[:, :n_items]
