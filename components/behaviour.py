"""Behaviour (DESIGN.md §3): the event types of the contract and what the business says they mean.

A shop log mixes views, favourites, carts and purchases. A dataset spec's ``behaviour``
section says

- ``target``: the event types to predict (e.g. ``[purchase]``; empty = any event). The
  leave-one-out targets are each user's last and second-to-last events of these types,
  the popularity baseline counts them, the churn label is about them;
- ``weights``: how much each type counts (iALS confidence for mf, profile weights, the
  starting point of the sequence families' repeat term and the recent-interaction
  baseline's order); a type not named weighs 1;
- ``exclude``: which of a user's items are kept out of their ranking: ``interacted``
  (every item they touched: one-type logs), ``target`` (only items they already
  bought: repeat views and carts are recommended), ``none`` (repeat purchases too).

The same :class:`Behaviour` decides training targets, evaluation, the baselines, served
recommendations and profiles, so evaluation ranks exactly what serving would rank.

Event types travel as small integer codes (:data:`TYPE_CODES`, the contract order), the
same in every dataset and every model, with :data:`PAD_TYPE` for padding. The codes are
part of what a model reads, so they are defined with the batch contract
(components/models/contract.py) and named here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from components.models.contract import EVENT_TYPES, N_TYPE_CODES, PAD_TYPE, TYPE_CODES

__all__ = [
    "EVENT_TYPES",
    "EXCLUDE",
    "N_TYPE_CODES",
    "PAD_TYPE",
    "SEQUENCE_ORDER",
    "TYPE_CODES",
    "Behaviour",
    "sequence_order",
    "type_codes",
]
EXCLUDE = ("interacted", "target", "none")
SEQUENCE_ORDER = ["user_id", "ts", "seq"]
"""How events make up each user's sequence: by user, then time; events at the same time in
the order the source recorded them (``seq``, components/events.py), then in the frame's order."""


def type_codes(column: str = "event_type") -> pl.Expr:
    """The event type names in ``column`` as their int8 codes (:data:`TYPE_CODES`), a Polars
    expression; a name outside the contract, or none, is null."""
    return pl.col(column).replace_strict(TYPE_CODES, default=None, return_dtype=pl.Int8)


def sequence_order(events: pl.DataFrame) -> tuple[pl.Series, pl.Series, np.ndarray]:
    """The users' sequences in ``events`` (its rows with a user id): the user ids in id order,
    the rows' positions in ``events`` in sequence order (:data:`SEQUENCE_ORDER`, the last ties
    by the rows' source position ``_row``; missing times last, as pandas sorts them), and each
    user's offsets into those positions (user k: ``order[offsets[k]:offsets[k + 1]]``).

    A hash group-by and a sort within each user's events, then a sort of the user ids: linear
    in the events, where one sort of every event by (user, time) grows as n log n (Beauty x50:
    3.2 s against 7.2 s, and the growth from x1 to x50 was above 1.05)."""
    user, *within = SEQUENCE_ORDER
    grouped = (
        events.with_columns(_pos=pl.int_range(pl.len(), dtype=pl.Int64))
        .drop_nulls(user)
        .group_by(user)
        .agg(pl.col("_pos").sort_by([*within, "_row"], nulls_last=True))
        .sort(user)
    )
    offsets = np.zeros(grouped.height + 1, dtype=np.int64)
    np.cumsum(grouped["_pos"].list.len().to_numpy(), out=offsets[1:])
    return grouped[user], grouped["_pos"].explode(empty_as_null=False), offsets


@dataclass(frozen=True)
class Behaviour:
    target: tuple[str, ...] = ()
    """Event types to predict; empty: any event (one-type logs)."""
    weights: dict = field(default_factory=dict)
    """Event type -> weight (> 0); a type not named weighs 1."""
    exclude: str = "interacted"
    """interacted | target | none: which history items a user's ranking leaves out."""

    def __post_init__(self):
        # Contract order, so "the first target type" means the same everywhere (serving, models).
        object.__setattr__(self, "target", tuple(sorted(set(self.target), key=lambda t: TYPE_CODES.get(t, 99))))
        object.__setattr__(self, "weights", {str(k): float(v) for k, v in dict(self.weights).items()})
        unknown = [t for t in (*self.target, *self.weights) if t not in TYPE_CODES]
        if unknown:
            raise ValueError(f"behaviour names event types {sorted(set(unknown))} outside the contract {EVENT_TYPES}")
        if any(not w > 0 for w in self.weights.values()):
            raise ValueError(f"behaviour.weights must be > 0, got {self.weights}")
        if self.exclude not in EXCLUDE:
            raise ValueError(f"behaviour.exclude must be one of {EXCLUDE}, got {self.exclude!r}")

    @classmethod
    def from_spec(cls, section: dict | None) -> Behaviour:
        """The spec's ``behaviour`` mapping (``target`` may be a list, one type, or ``any``)."""
        s = dict(section or {})  # its keys and types are checked with the whole spec (events.check_spec)
        target = s.get("target") or ()
        if isinstance(target, str):
            target = () if target == "any" else (target,)
        return cls(target=tuple(target), weights=s.get("weights") or {}, exclude=s.get("exclude", "interacted"))

    # -- per type-code tables (index PAD_TYPE = padding) -------------------------------------
    def weight_table(self) -> np.ndarray:
        """(N_TYPE_CODES,) float32: each type's weight; padding 0."""
        w = np.ones(N_TYPE_CODES, dtype=np.float32)
        for t, v in self.weights.items():
            w[TYPE_CODES[t]] = v
        w[PAD_TYPE] = 0.0
        return w

    def target_table(self) -> np.ndarray:
        """(N_TYPE_CODES,) bool: which type codes are targets; padding never."""
        t = np.zeros(N_TYPE_CODES, dtype=bool)
        if self.target:
            t[[TYPE_CODES[x] for x in self.target]] = True
        else:
            t[:PAD_TYPE] = True
        return t

    @cached_property
    def _targets(self) -> np.ndarray:
        return self.target_table()  # built once: is_target runs per user (splits, exclusion)

    def is_target(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)  # int8 codes index the table as they are (x50: a copy to int64 took 0.17 s)
        return self._targets[codes if codes.dtype.kind in "iu" else codes.astype(np.int64)]

    def targets(self, codes: np.ndarray, min_history: int = 1) -> tuple[int, int]:
        """(validation, test) target positions in one user's time-ordered event types, or
        (-1, -1): the last two events of the target types, the validation target having at
        least ``min_history`` earlier events (the leave-one-out rule, components/datasets.py)."""
        pos = np.flatnonzero(self.is_target(codes))
        if len(pos) >= 2 and pos[-2] >= min_history:
            return int(pos[-2]), int(pos[-1])
        return -1, -1

    def target_positions(
        self, codes: np.ndarray, offsets: np.ndarray, min_history: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`targets` for every user at once: ``codes`` holds every user's time-ordered
        event type codes one after the other, user u's from ``offsets[u]`` to
        ``offsets[u + 1]``. Per user, the (validation, test) target positions, -1 where the user
        has none (no Python loop over users: 1.1 million of them at Beauty x50)."""
        n, lengths = len(offsets) - 1, np.diff(offsets)
        targets = self.is_target(codes)
        if targets.all():  # every event a target (one-type logs): each user's last two, O(users)
            ok = (lengths >= 2) & (lengths - 2 >= min_history)
            return np.where(ok, lengths - 2, -1), np.where(ok, lengths - 1, -1)
        user = np.repeat(np.arange(n), lengths)
        hits = np.flatnonzero(targets)  # target events, by user then position
        last = np.ones(len(hits), dtype=bool)  # each user's last target event
        last[:-1] = user[hits[1:]] != user[hits[:-1]]
        lasts = np.flatnonzero(last)
        has_two = (lasts > 0) & (user[hits[lasts - 1]] == user[hits[lasts]])  # an earlier target of the same user
        lasts = lasts[has_two]
        owners = user[hits[lasts]]
        val_pos = hits[lasts - 1] - offsets[owners]
        ok = val_pos >= min_history  # the validation target's earlier events
        val, test = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        val[owners[ok]] = val_pos[ok]
        test[owners[ok]] = hits[lasts[ok]] - offsets[owners[ok]]
        return val, test

    def weight_ranks(self) -> np.ndarray:
        """(N_TYPE_CODES,) each type's weight as a dense rank (0 = padding): orders like the
        weights, one step apart whatever their values."""
        return np.unique(self.weight_table(), return_inverse=True)[1].astype(np.float32)

    def excluded(self, items: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The history items the exclusion policy keeps out of a ranking (may repeat)."""
        items = np.asarray(items, dtype=np.int64)
        if self.exclude == "interacted":
            return items
        if self.exclude == "none":
            return items[:0]
        return items[self.is_target(codes)]

    def params(self) -> dict[str, str]:
        """``protocol.*`` parameters for MLflow and the summary."""
        return {
            "target": ",".join(self.target) or "any",
            "weights": ",".join(f"{t}={w:g}" for t, w in sorted(self.weights.items())) or "all 1",
            "exclude": self.exclude,
        }
