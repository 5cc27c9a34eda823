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

A family declares what ``interestflow tune`` may search (``search_space``: a
:class:`Search` range per field of its ``Config``) beside its config, in its own file;
components/tuning.py turns the ranges into an Optuna study.

A family that reads item text sets ``uses_text = True`` (bert), or reads it where its config
says so (lstm and cnn with ``text: true``, through :class:`TextProjection`): training then
passes :class:`SideInputs` the items' text embeddings and strings (:meth:`Family.reads_text`
decides). Every family takes the same ``side`` argument and ignores what it does not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

EVENT_TYPES = ("view", "click", "favorite", "cart", "purchase", "review", "rating")
"""The contract's event types (DESIGN.md §3); a batch's ``types`` are their indices."""
TYPE_CODES = {t: i for i, t in enumerate(EVENT_TYPES)}
PAD_TYPE = len(EVENT_TYPES)
"""The type code of padding positions (one past the last contract type)."""
N_TYPE_CODES = len(EVENT_TYPES) + 1

PREDICT = ("conditioned", "target", "all")
NEGATIVES = 4096
"""Negatives per batch of the sampled softmax a large catalogue switches on (``sampled_above``)."""


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
    predict: str = "conditioned"
    """Sequence families, on a log with target types: ``conditioned`` learns from every next
    event with the query told which behaviour comes next (an intent embedding, and the
    repeat term's weight per history type and next type) and ranks for the target type;
    ``target`` learns only from next target-type events; ``all`` from every next event,
    unconditioned. On a one-type log the three are the same."""
    repeat: bool = True
    """Sequence families: add the learned repeat term (:class:`RepeatTerm`) where the
    exclusion policy lets a user's own items be ranked (``exclude: target | none``)."""
    sampled_above: int = 200_000
    """Sequence families: above this many catalogue items (0: never) the loss is a sampled
    softmax with logQ correction (their ``sampled`` negatives, else :data:`NEGATIVES`) in
    place of the full cross-entropy, whose cost grows with the catalogue."""
    review_text: bool = False
    """Families that read item text (``uses_text``), on a log with review text: add to each
    item's text vector the mean vector of the reviews written about it in the training
    events, never a validation or test target's (components/datasets.py
    ``item_text_with_reviews``)."""

    RANKING_ONLY: ClassVar[tuple[str, ...]] = ()
    """Fields that change how the trained weights rank, not the weights (a nightly run
    warm-starts from a champion that differs from today's settings in these only)."""
    SAVED_BEFORE: ClassVar[dict] = {}
    """Field -> the value a model saved before the field existed was trained and ranked with
    (where it differs from today's default)."""

    @classmethod
    def from_saved(cls, saved: dict):
        """The config of a saved model (its whole config, as a dict): a field it lacks takes
        its value from before the field existed, so an earlier champion ranks as it did."""
        return cls(**{**cls.SAVED_BEFORE, **saved})

    def __post_init__(self):
        if self.predict not in PREDICT:
            raise ValueError(f"{type(self).__name__}.predict must be one of {PREDICT}, got {self.predict!r}")
        if self.max_len < 1:
            raise ValueError(f"{type(self).__name__}.max_len must be >= 1, got {self.max_len}")
        if self.lr <= 0:
            raise ValueError(f"{type(self).__name__}.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"{type(self).__name__}.weight_decay must be >= 0, got {self.weight_decay}")
        if self.sampled_above < 0:
            raise ValueError(f"{type(self).__name__}.sampled_above must be >= 0, got {self.sampled_above}")


@dataclass(frozen=True)
class Search:
    """One config field's search range for ``interestflow tune`` (components/tuning.py):
    ``low`` to ``high`` (drawn on a log scale where ``log``), or one of ``choices``. The
    field's type in the family's ``Config`` decides whether an int or a float is drawn."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def __post_init__(self):
        if bool(self.choices) == (self.low is not None or self.high is not None):
            raise ValueError("Search: give either low and high, or choices")
        if not self.choices and (self.high is None or self.low is None or not self.low < self.high):
            raise ValueError(f"Search: low < high needed, got {self.low}, {self.high}")
        if self.log and not self.choices and self.low <= 0:
            raise ValueError(f"Search: a log scale needs low > 0, got {self.low}")


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
    """True: the family always reads the items' text (:meth:`reads_text`)."""
    search_space: ClassVar[dict[str, Search]] = {}
    """What ``interestflow tune`` searches: a range per field of ``Config``."""

    def __init__(self, config: FamilyConfig, n_items: int, n_users: int, side: SideInputs | None = None):
        super().__init__()
        self.config, self.n_items, self.n_users = config, n_items, n_users
        side = side or SideInputs()
        weights = torch.ones(N_TYPE_CODES)
        targets = torch.ones(N_TYPE_CODES, dtype=torch.bool)
        if config.behaviours:
            if side.type_weights is not None:
                weights = torch.as_tensor(side.type_weights, dtype=torch.float32).clone()
            if side.target_types is not None:
                targets = torch.as_tensor(side.target_types, dtype=torch.bool).clone()
        weights[PAD_TYPE], targets[PAD_TYPE] = 0.0, False
        explicit = not bool(targets[:PAD_TYPE].all())  # the behaviour names target types
        self._typed = bool(config.behaviours and side.typed)
        self._repeats = bool(config.repeat and side.repeats)
        conditioned = self._typed and explicit and config.predict == "conditioned"
        self.register_buffer("type_weights", weights)
        self.register_buffer("target_types", targets)
        code = int(targets.nonzero()[0]) if explicit else PAD_TYPE
        self.register_buffer("target_code", torch.tensor(code))  # the behaviour a ranking is for
        self.register_buffer("conditioned", torch.tensor(conditioned))
        # The sampled softmax's proposal: training popularity (add-one), as log-probabilities.
        # Training only, so not in the state dict (a registered model is rebuilt without it).
        counts = torch.zeros(n_items) if side.item_counts is None else torch.as_tensor(side.item_counts).float()
        self.register_buffer("log_q", torch.log((counts + 1) / (counts + 1).sum()), persistent=False)

    @classmethod
    def reads_text(cls, config: FamilyConfig) -> bool:
        """Whether the family, so configured, reads the items' text: training then passes it in
        :class:`SideInputs`, and new catalogue items can be scored by it. Default:
        ``uses_text``; a family whose text input is optional overrides this."""
        return cls.uses_text

    @property
    def negatives(self) -> int:
        """The sampled softmax's negatives per batch (0: the full cross-entropy): the family's
        ``sampled``, or :data:`NEGATIVES` above ``sampled_above`` catalogue items."""
        if not hasattr(self.config, "sampled"):  # not a family with a softmax over the catalogue
            return 0
        above = self.config.sampled_above
        return self.config.sampled or (NEGATIVES if above and self.n_items > above else 0)

    def behaviour_embedding(self, dim: int) -> nn.Embedding:
        """(type code -> dim) vectors added to item vectors. Starts at zero (and no random
        draw, so the other weights' initialisation is unchanged); trains only when the data
        has several types."""
        return nn.Embedding.from_pretrained(
            torch.zeros(N_TYPE_CODES, dim), freeze=not self._typed, padding_idx=PAD_TYPE
        )

    def intent_embedding(self, dim: int) -> nn.Embedding:
        """(next behaviour -> dim) vectors added to a query: what it is asked to predict. Zero,
        and trained only with ``predict: conditioned`` on a log with target types."""
        zeros = torch.zeros(N_TYPE_CODES, dim)
        return nn.Embedding.from_pretrained(zeros, freeze=not bool(self.conditioned), padding_idx=PAD_TYPE)

    def repeat_term(self, enabled: bool = True) -> RepeatTerm:
        """The repeat term (zero, and frozen unless the policy lets history items be ranked).
        ``enabled = False``: a family setting it cannot train with (a sampled softmax)."""
        trainable = self._repeats and enabled
        init = self.type_weights.clone() if trainable else None  # start as the recent-interaction rule
        return RepeatTerm(trainable=trainable, init=init)

    def event_types(self, batch: dict) -> torch.Tensor | None:
        """The batch's type codes as the model reads them (``behaviours: false``: every event
        a view); None for an untyped batch."""
        types = batch.get("types")
        if types is None or self.config.behaviours:
            return types
        return torch.where(types == PAD_TYPE, types, torch.zeros_like(types))

    def intents(self, next_types: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Training: (B, L) the behaviour each query is asked for (its next event's type when
        conditioned, else padding = no intent)."""
        if next_types is not None and bool(self.conditioned):
            return next_types
        return torch.full_like(like, PAD_TYPE)

    def ranking_intent(self, like: torch.Tensor) -> torch.Tensor:
        """Scoring: (B,) the behaviour a ranking is for (the first target type when conditioned)."""
        code = self.target_code if bool(self.conditioned) else torch.tensor(PAD_TYPE, device=like.device)
        return code.expand(len(like)).to(like.device)

    def event_weights(self, batch: dict) -> torch.Tensor:
        """(B, L) each event's behaviour weight (padding 0)."""
        types = batch.get("types")
        if types is None:  # an untyped batch: every real event weighs 1
            return (batch["seq"] != self.n_items).float()
        return self.type_weights[types]

    def predicted(self, types: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: which next events the training objective predicts (``predict``)."""
        if types is None or self.config.predict != "target":
            return torch.ones_like(like, dtype=torch.bool)
        return self.target_types[types]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A model saved before behaviours were kept (an earlier champion) scores as it did:
        # weights 1, every type a target, a zero behaviour embedding.
        for name in ("type_weights", "target_types", "target_code", "conditioned"):
            state_dict.setdefault(prefix + name, self._buffers[name])
        for name in ("behaviour", "intent"):  # a sequence family's behaviour and intent embeddings
            if name in self._modules:
                state_dict.setdefault(prefix + name + ".weight", torch.zeros_like(self._modules[name].weight))
        if "repeat" in self._modules:  # and its repeat term ``repeat``
            for name, value in self._modules["repeat"].state_dict().items():
                default = torch.zeros_like(value) if name == "raw_weight" else value
                state_dict.setdefault(prefix + "repeat." + name, default)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    ITEM_ROWS: ClassVar[tuple[str, ...]] = ()
    """State-dict entries indexed by item along their first dimension (a padding or [MASK]
    row after the last item is not an item's): what a warm start carries over per item id
    and what new catalogue items extend."""
    USER_ROWS: ClassVar[tuple[str, ...]] = ()
    """State-dict entries indexed by user (the unknown-user row after the last)."""

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) the vectors the family scores items with (its output layer): a
        served answer's reason is the history item whose vector is closest to the
        recommended one's."""
        raise NotImplementedError

    @torch.no_grad()
    def warm_start(self, state: dict, item_map: torch.Tensor, user_map: torch.Tensor, shrink: float = 1.0) -> dict:
        """Start from another model's weights ``state`` (same family and sizes) where the ids
        overlap: ``item_map[i]`` / ``user_map[u]`` is this model's item i's / user u's row in
        ``state`` (-1: an id it did not have, whose rows keep their fresh initialisation).
        Only parameters are taken: buffers (text vectors, counts, behaviour weights) are
        today's data. ``shrink`` < 1: each carried value is ``shrink * old + (1 - shrink) *
        fresh`` ("shrink and perturb", Ash & Adams, NeurIPS 2020: a converged model shrunk
        towards a fresh initialisation learns new data faster than the model itself).
        Raises ValueError, changing nothing, when a shape does not fit or ``shrink`` is
        outside (0, 1]. Returns what was carried over."""
        if not 0 < shrink <= 1:
            raise ValueError(f"warm start: shrink must be in (0, 1], got {shrink}")
        own, taken = dict(self.named_parameters()), {}

        def carried(old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
            old = old.to(fresh.dtype)
            return old if shrink == 1 else shrink * old + (1 - shrink) * fresh

        for name, p in own.items():
            if name not in state:
                continue
            old = state[name]
            rows = {**dict.fromkeys(self.ITEM_ROWS, item_map), **dict.fromkeys(self.USER_ROWS, user_map)}.get(name)
            if rows is None:
                if old.shape != p.shape:
                    raise ValueError(f"warm start: {name} is {tuple(old.shape)} there, {tuple(p.shape)} here")
                taken[name] = carried(old, p)
                continue
            n_old = len(old) - (len(p) - len(rows))  # the same padding / unknown rows after the ids
            if old.shape[1:] != p.shape[1:] or n_old < 0:
                raise ValueError(f"warm start: {name} is {tuple(old.shape)} there, {tuple(p.shape)} here")
            new = p.detach().clone()
            known = rows >= 0
            new[: len(rows)][known] = carried(old[rows[known]], new[: len(rows)][known])
            new[len(rows) :] = carried(old[n_old:], new[len(rows) :])  # padding / unknown-user rows
            taken[name] = new
        for name, value in taken.items():
            own[name].copy_(value)
        return {
            "shrink": shrink,
            "parameters": len(taken),
            "items_carried": int((item_map >= 0).sum()),
            "items_new": int((item_map < 0).sum()),
            "users_carried": int((user_map >= 0).sum()),
            "users_new": int((user_map < 0).sum()),
        }

    closed_form: bool = False
    """True: the family (as configured) trains by closed-form solves, not by gradients:
    :meth:`solve_step` per training batch and :meth:`solve_epoch_end` after the epoch's last
    (Lightning's manual optimisation; one process). Its batches are flat (user, item) pairs,
    not padded histories (components/batches.py: pair_batches)."""
    solve_users: int = 65_536
    """A closed-form family's users per training batch: the solution does not depend on it,
    the memory a batch takes does."""

    def solve_step(self, batch: dict) -> torch.Tensor:
        """A closed-form family's update from one training batch (no gradients); returns the
        batch's loss after it."""
        raise NotImplementedError

    def solve_epoch_end(self) -> None:
        """A closed-form family's update once every batch of the epoch was solved (called
        after the step on the batch marked ``epoch_end``, so that validation sees it)."""
        raise NotImplementedError

    def query_vectors(self, batch: dict) -> torch.Tensor | None:
        """(B, d) vectors q with ``score(batch) == q @ item_vectors().T`` exactly, for a family
        whose score is that dot product (an index of its item vectors can then retrieve
        candidates: components/retrieval.py); None for any other. Default: None."""
        return None

    def for_serving(self) -> None:
        """Get ready to answer one request at a time until the process ends (the model
        server's workers call it once per loaded model; the weights do not change after).
        A family whose per-request time is mostly Python overhead compiles here; the
        scores must not change. Default: nothing to do."""

    def new_item_rows(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """For items that entered the catalogue after training, with their text vectors
        ``text`` (m, d): the rows each :attr:`ITEM_ROWS` entry gains, so that the family
        scores them by their text alone. Only a family that reads text (``uses_text``) can."""
        raise NotImplementedError(f"{type(self).__name__} scores items by their ids alone")

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


class TextProjection(nn.Module):
    """The items' frozen text embeddings and a learned projection of them into a family's item
    space, added to its id embeddings: lstm's and cnn's ``text: true`` (bert's ``fusion: sum``
    is the same sum, with its own fusions around it). An item's vector then starts from what
    its text shares with other items' instead of from noise, which helps most the items with
    few interactions (Hou et al., UniSRec, KDD 2022, feed text to a sequence model this way).

    The text is a buffer, saved with the weights: a registered model needs no text encoder.
    ``std``: the projection's initial weights, so that a unit-length text vector starts with
    the spread of the id embedding it is added to (the id half does not drown it at first)."""

    def __init__(self, n_items: int, text_dim: int, dim: int, text: torch.Tensor | None = None, std: float = 1.0):
        super().__init__()
        t = torch.zeros(n_items, text_dim) if text is None else torch.as_tensor(text).float()
        if t.shape != (n_items, text_dim):
            raise ValueError(f"item_text must be ({n_items}, {text_dim}), got {tuple(t.shape)}")
        self.register_buffer("text", t)
        self.proj = nn.Linear(text_dim, dim)
        nn.init.normal_(self.proj.weight, std=std)
        nn.init.zeros_(self.proj.bias)

    def forward(self) -> torch.Tensor:
        """(n_items, dim) each item's projected text vector."""
        return self.proj(self.text)


NEW_ITEM_NEIGHBOURS = 10
"""A new item's id rows: the similarity-weighted mean of those of the known items whose texts
are nearest to its own (this many)."""


@torch.no_grad()
def rows_from_text(
    text: torch.Tensor,
    known_text: torch.Tensor,
    id_rows: dict[str, torch.Tensor],
    offsets: dict[str, torch.Tensor],
    counts: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """What a text-reading family's :meth:`Family.new_item_rows` borrows for new items with the
    text vectors ``text`` (m, d). A new item is its text. Each id table in ``id_rows`` (name ->
    the known items' rows) gains, per new item, the mean of the rows of the known items with
    the most similar texts (``known_text``), weighted by that similarity: what the
    collaborative signal says about items like it (a zero vector would leave it only the text
    half of every known item's vector). It has no interactions, and each score offset in
    ``offsets`` is that of the rarest tenth of the training items by ``counts`` (a new item
    has no evidence of popularity either; without counts, the mean offset)."""
    m, rows = len(text), {}
    if id_rows:
        sims = F.normalize(text, dim=1) @ F.normalize(known_text, dim=1).T
        near = sims.topk(min(NEW_ITEM_NEIGHBOURS, len(known_text)), dim=1)
        w = near.values.clamp(min=0) + 1e-6
        for name, table in id_rows.items():
            rows[name] = (w[:, :, None] * table[near.indices]).sum(1) / w.sum(1, keepdim=True)
    for name, offset in offsets.items():
        rare = offset
        if counts is not None and bool(counts.any()):
            rare = offset[counts <= torch.quantile(counts, 0.1)]
        rows[name] = torch.full((m,), float(rare.mean()))
    return rows


class RepeatTerm(nn.Module):
    """A learned score for the user's own items: Σ over their events e with the item of
    ``weight[type(e), intent] · exp(-decay · steps since e)`` (RepeatNet's repeat mode, Ren
    et al., AAAI 2019, reduced to a behaviour-weighted, recency-decayed copy score; ``intent``
    = the behaviour being predicted, see ``FamilyConfig.predict``). Shop logs buy what was
    viewed or carted (63% of Taobao purchases), which an item-vector model learns slowly;
    this term is what the recent-interaction baseline does, with its weights learned inside
    the full cross-entropy (components/models/loss.py, sparse logits).

    It trains only where the exclusion policy lets history items be ranked, starting from
    the spec's behaviour weights (``init``: the recent-interaction rule, which a few hundred
    purchases could not teach from zero); elsewhere (one-type logs, every history item
    excluded) it is zero, frozen and skipped.
    """

    SPEED = 10.0
    """The parameters move SPEED times faster than the rest under Adam (they are stored
    divided by it): a handful of numbers, learnt from a few hundred steps on a small log."""

    def __init__(self, trainable: bool, init: torch.Tensor | None = None):
        super().__init__()
        weight = torch.zeros(N_TYPE_CODES, N_TYPE_CODES)
        if init is not None:
            weight += init.float()[:, None]  # every intent starts from the type's weight
        self.raw_weight = nn.Parameter(weight / self.SPEED, requires_grad=trainable)
        self.raw_decay = nn.Parameter(torch.tensor(-2.0 / self.SPEED), requires_grad=trainable)

    @property
    def weight(self) -> torch.Tensor:
        """(N_TYPE_CODES, N_TYPE_CODES): per history type and intent."""
        return self.raw_weight * self.SPEED

    @property
    def decay(self) -> torch.Tensor:
        """Per-step decay rate: softplus of the raw value (0.13 at the start)."""
        return F.softplus(self.raw_decay * self.SPEED)

    @property
    def active(self) -> bool:
        return self.raw_weight.requires_grad or bool(self.raw_weight.detach().any())

    def _values(self, types: torch.Tensor, intents: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return self.weight[types, intents] * torch.exp(-self.decay * steps)

    def pairs(self, inputs: torch.Tensor, types: torch.Tensor, intents: torch.Tensor, valid: torch.Tensor, pad: int):
        """Sparse logits for the training queries: query (b, t) predicts the event after t
        (behaviour ``intents[b, t]``) and sees events s <= t. Returns (rows into ``q[valid]``,
        item columns, values), rows sorted."""
        B, T = inputs.shape
        t, s = torch.tril_indices(T, T, device=inputs.device)  # every s <= t, t ascending
        keep = valid[:, t] & (inputs[:, s] != pad)  # (B, P)
        row_of = torch.cumsum(valid.flatten(), 0).view(B, T) - 1  # (b, t) -> row of q[valid]
        b, p = keep.nonzero(as_tuple=True)
        rows, cols = row_of[b, t[p]], inputs[b, s[p]]
        return rows, cols, self._values(types[b, s[p]], intents[b, t[p]], (t[p] - s[p]).float())

    def dense(self, seq: torch.Tensor, types: torch.Tensor, intent: torch.Tensor, n_items: int) -> torch.Tensor:
        """(B, n_items) the term for the next event (behaviour ``intent`` (B,)) after the whole
        left-padded history."""
        B, T = seq.shape
        steps = (T - 1 - torch.arange(T, device=seq.device)).float().expand(B, T)
        vals = self._values(types, intent[:, None].expand(B, T), steps) * (seq != n_items)
        out = torch.zeros(B, n_items + 1, device=seq.device, dtype=vals.dtype)
        return out.scatter_add_(1, seq, vals)[:, :n_items]
