"""What a served champion answers per request (DESIGN.md §10).

A request row names a user and may carry their recent events (``history``: item ids,
``event_types``, ``timestamps`` in unix seconds) that the lake has not seen. The answer is
the top-K items with their titles and scores and, for each, a reason: the event of the
user's history whose item vector (the family's output layer) is the most similar to the
recommended item's.

The history a ranking reads is the user's events as the model was trained on them (kept
in the model: :class:`ServingTables`) followed by the request's events. A user the model
has never seen is ranked from the request's events alone; with none either, from the
training popularity, and the answer says which in ``source`` and ``note``. Unknown item ids
in the events are ignored and listed (``ignored_items``). What cannot be answered (a wrong
length, an event type outside the contract, K out of range) raises :class:`BadRequest`
with the field named; the MLflow pyfunc turns it into a 400.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from components.behaviour import EVENT_TYPES

if TYPE_CHECKING:
    from components.datasets import Dataset, View
    from components.recommender import Recommender

STORED_EVENTS = 500
"""Events kept per user in a registered model (or the family's ``max_len``, if more): the
history a request for them starts from (the ranking reads the ``max_len`` most recent, the
exclusion policy all of them: an item seen before them may be recommended again)."""
MAX_K = 1000
"""The largest K a request may ask for."""
MAX_TS = 253_402_300_799
"""The latest timestamp a request may carry (9999-12-31T23:59:59Z, in seconds)."""
MAX_REQUEST_EVENTS = 10_000
"""A request's history beyond this many events is refused (the ranking reads far fewer)."""
SOURCES = ("history", "request", "popularity")
"""What a row's ranking read: the user's stored history and the request's events, the
request's events alone (a user the model does not know), or the training popularity."""


class BadRequest(ValueError):
    """A request the model cannot answer; the message names the field and the row."""


@dataclass
class ServingTables:
    """What a served model knows beside its weights: each item's title and training
    popularity, each training user's latest events, and where new catalogue items are
    published (components/catalogue.py)."""

    titles: np.ndarray
    """(n_items,) str."""
    popularity: np.ndarray
    """(n_items,) training interactions per item (0: an item added after training)."""
    offsets: np.ndarray
    """(n_users + 1,) user u's events are rows offsets[u]:offsets[u+1] of the three below."""
    items: np.ndarray
    types: np.ndarray
    ts: np.ndarray
    catalogue_uri: str | None = None
    """The published catalogue's folder (INTERESTFLOW_CATALOGUE overrides it when serving)."""
    text_version: str | None = None
    """The item-text encoder the model's text vectors came from (a new item's must match)."""
    new_items_unranked: int = 0
    """Published catalogue items this family cannot rank (id-only families)."""

    @classmethod
    def from_dataset(
        cls,
        data: Dataset,
        view: View,
        catalogue_uri: str | None = None,
        text_version: str | None = None,
        keep: int = STORED_EVENTS,
    ) -> ServingTables:
        """From the data a final fit trained on: the popularity of its training events and
        every user's latest ``keep`` events (of the whole log: ``serve``)."""
        train = np.concatenate(view.train_seqs) if view.train_seqs else np.zeros(0, np.int64)
        serve = data.view("serve")
        ts = data.ts if data.ts is not None else [np.zeros(len(s), np.int64) for s in data.seqs]
        seqs = [s[-keep:] for s in serve.train_seqs]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)

        def flat(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        titles = data.item_titles if data.item_titles is not None else np.array([""] * data.n_items)
        return cls(
            titles=np.asarray(titles, dtype=object),
            popularity=np.bincount(train, minlength=data.n_items).astype(np.float32),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            items=flat(seqs, np.int64),
            types=flat([t[-keep:] for t in serve.train_types], np.int64),
            ts=flat([t[-keep:] for t in ts], np.int64),
            catalogue_uri=catalogue_uri,
            text_version=text_version,
        )

    def history(self, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = self.offsets[user], self.offsets[user + 1]
        return self.items[a:b], self.types[a:b], self.ts[a:b]

    def to_state(self) -> dict:
        """Tensors and plain values (what ``torch.load(weights_only=True)`` reads back)."""
        return {
            "titles": [str(t) for t in self.titles],
            "popularity": torch.as_tensor(self.popularity),
            "offsets": torch.as_tensor(self.offsets),
            "items": torch.as_tensor(self.items),
            "types": torch.as_tensor(self.types, dtype=torch.int8),
            "ts": torch.as_tensor(self.ts),
            "catalogue_uri": self.catalogue_uri,
            "text_version": self.text_version,
        }

    @classmethod
    def from_state(cls, d: dict) -> ServingTables:
        return cls(
            titles=np.array(d["titles"], dtype=object),
            popularity=d["popularity"].numpy(),
            offsets=d["offsets"].numpy(),
            items=d["items"].numpy(),
            types=d["types"].numpy().astype(np.int64),
            ts=d["ts"].numpy(),
            catalogue_uri=d.get("catalogue_uri"),
            text_version=d.get("text_version"),
        )

    def with_items(self, titles: list[str]) -> ServingTables:
        """The same tables with items appended (their titles, no training interactions)."""
        return replace(
            self,
            titles=np.concatenate([self.titles, np.asarray(titles, dtype=object)]),
            popularity=np.concatenate([self.popularity, np.zeros(len(titles), np.float32)]),
        )


# -- one request ----------------------------------------------------------------------------------
@dataclass
class _Row:
    user_id: str
    source: str
    hist: np.ndarray  # item indices, oldest first
    types: np.ndarray  # their type codes
    ts: np.ndarray  # their unix seconds (-1: not given)
    ignored: list[str]
    note: str


def _listed(row: dict, name: str, i: int) -> list | None:
    v = row.get(name)
    if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, str) or not hasattr(v, "__len__"):
        raise BadRequest(f"row {i}: {name} must be a list, got {type(v).__name__} {str(v)[:40]!r}")
    return list(v)


def _parse_row(rec: Recommender, row: dict, i: int, stored_history: bool) -> _Row:
    user = row["user_id"]
    if user is None or (pd.api.types.is_scalar(user) and pd.isna(user)) or not str(user).strip():
        raise BadRequest(f"row {i}: user_id is empty")
    if isinstance(user, bool) or not isinstance(user, str | int | np.integer):
        raise BadRequest(f"row {i}: user_id must be a string, got {type(user).__name__} {str(user)[:40]!r}")
    user = str(user)
    items = _listed(row, "history", i) or []
    types = _listed(row, "event_types", i)
    stamps = _listed(row, "timestamps", i)
    if len(items) > MAX_REQUEST_EVENTS:
        raise BadRequest(f"row {i}: history has {len(items)} events; at most {MAX_REQUEST_EVENTS} are accepted")
    for name, values in (("event_types", types), ("timestamps", stamps)):
        if values is not None and len(values) != len(items):
            raise BadRequest(f"row {i}: {len(items)} history items but {len(values)} {name}")
    try:  # the model's own mapping: contract types, the default type, unknown items dropped
        indices, codes, known = rec.typed_history(items, types)
    except ValueError as e:
        raise BadRequest(f"row {i}: {e}") from None
    try:
        if stamps is not None and (odd := [s for s in stamps if isinstance(s, float) and not s.is_integer()]):
            raise ValueError(f"{odd[0]} is not a whole second")
        secs = [int(s) for s in stamps] if stamps is not None else [-1] * len(items)
    except (TypeError, ValueError, OverflowError) as e:
        raise BadRequest(f"row {i}: timestamps must be unix seconds (integers): {e}") from None
    if secs and not all(0 <= s <= MAX_TS for s in secs) and stamps is not None:
        bad = next(s for s in secs if not 0 <= s <= MAX_TS)
        raise BadRequest(f"row {i}: timestamps must be unix seconds between 0 and {MAX_TS} (got {bad}; milliseconds?)")
    ignored = list(dict.fromkeys(str(x) for x in items if str(x) not in rec.item_pos))
    req = (indices, codes, np.asarray(secs, dtype=np.int64)[known])
    if stamps is not None and len(known):  # the request's events in time order (ties: as sent)
        order = np.argsort(req[2], kind="stable")
        req = tuple(a[order] for a in req)
    tables, u = rec.serving, rec.user_pos.get(user)
    if stored_history and tables is not None and u is not None:
        stored = tables.history(u)
        if len(known) and stamps is not None:  # an event the model already holds is not new
            held = set(zip(*(a.tolist() for a in stored), strict=True))
            fresh = np.array([e not in held for e in zip(*(a.tolist() for a in req), strict=True)], dtype=bool)
            req = tuple(a[fresh] for a in req)
        hist = tuple(np.concatenate([s, r]) for s, r in zip(stored, req, strict=True))
        source = "history"
        note = f"{len(stored[0])} stored events and {len(req[0])} from the request"
    else:
        hist, source = req, "request"
        note = (
            f"unknown user: ranked from the request's {len(known)} events"
            if u is None
            else f"ranked from the request's {len(known)} events alone"
        )
    if not len(hist[0]):
        source, note = "popularity", ("unknown user " if u is None else "") + "with no events: the most popular items"
    if ignored:
        note += f"; {len(ignored)} unknown item id(s) ignored"
    if tables is not None and tables.new_items_unranked:
        note += (
            f"; {tables.new_items_unranked} catalogue item(s) published after training are not ranked "
            f"({rec.family} scores items by their ids)"
        )
    return _Row(user, source, *hist, ignored=ignored, note=note)


def answer(rec: Recommender, frame: pd.DataFrame, k: int = 10, stored_history: bool = True) -> pd.DataFrame:
    """Top-``k`` per request row with titles, scores, reasons, ``source``, ``note`` and
    ``ignored_items`` (:data:`OUTPUT_COLUMNS`); rows in request order, ``rank`` 1..k.
    ``stored_history = False``: the request's events are the whole history."""
    return pd.DataFrame(answer_records(rec, frame, k, stored_history), columns=list(OUTPUT_COLUMNS))


def answer_records(rec: Recommender, frame: pd.DataFrame, k: int = 10, stored_history: bool = True) -> list[dict]:
    """:func:`answer` as a list of records (what the model server writes as JSON; building a
    DataFrame that it then turns back into records was a third of a request's time)."""
    if not isinstance(k, int | np.integer) or not 1 <= k <= min(MAX_K, rec.n_items):
        raise BadRequest(f"k must be an integer between 1 and {min(MAX_K, rec.n_items)}, got {k!r}")
    if "user_id" not in frame.columns:
        raise BadRequest(f"a request needs a user_id column (got {list(frame.columns)})")
    # The frame's rows as dicts of plain values: a pandas lookup per cell was a tenth of a request.
    names = list(frame.columns)
    values = frame.to_numpy(dtype=object).tolist()
    rows = [_parse_row(rec, dict(zip(names, v, strict=True)), i, stored_history) for i, v in enumerate(values)]
    ranked = [r for r in rows if r.source != "popularity"]
    top = np.zeros((len(rows), k), dtype=np.int64)
    val = np.zeros((len(rows), k), dtype=np.float64)
    if ranked:
        t, v = rec.rank([r.user_id for r in ranked], [r.hist for r in ranked], [r.types for r in ranked], k)
        where = [i for i, r in enumerate(rows) if r.source != "popularity"]
        top[where], val[where] = t, v
    popular = [i for i, r in enumerate(rows) if r.source == "popularity"]
    if popular:
        counts = rec.popularity()
        order = np.lexsort((np.arange(len(counts)), -counts))[:k]  # most interactions, ties by index
        top[popular], val[popular] = order, counts[order]
    return _records(rec, rows, top, val)


def _iso(ts: int) -> str:
    return "" if ts < 0 else datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _records(rec: Recommender, rows: list[_Row], top: np.ndarray, val: np.ndarray) -> list[dict]:
    vectors = rec.normalised_item_vectors()
    titles, ids = rec.titles(), rec.item_ids
    k = top.shape[1]
    out = []
    for r, items, scores in zip(rows, top, val, strict=True):
        if r.source == "popularity":
            best, sim = np.full(k, -1), np.zeros(k)
        else:
            h = r.hist[-rec.max_len :]  # the events the ranking read
            sims = vectors[items] @ vectors[h].T  # (k, H)
            pick = len(h) - 1 - sims[:, ::-1].argmax(1)  # the most similar; ties: the most recent
            sim = sims[np.arange(k), pick]
            best = pick + (len(r.hist) - len(h))
        ignored = ", ".join(r.ignored)
        for j in range(k):
            e, item = int(best[j]), items[j]
            out.append(
                {
                    "user_id": r.user_id,
                    "rank": j + 1,
                    "item_id": str(ids[item]),
                    "title": str(titles[item]),
                    "score": float(scores[j]),
                    "reason_item_id": "" if e < 0 else str(ids[r.hist[e]]),
                    "reason_title": "" if e < 0 else str(titles[r.hist[e]]),
                    "reason_event_type": "" if e < 0 else EVENT_TYPES[r.types[e]],
                    "reason_ts": "" if e < 0 else _iso(r.ts[e]),
                    "reason_similarity": float(sim[j]),
                    "source": r.source,
                    "note": r.note,
                    "ignored_items": ignored,
                }
            )
    return out


OUTPUT_COLUMNS = (
    "user_id",
    "rank",
    "item_id",
    "title",
    "score",
    "reason_item_id",
    "reason_title",
    "reason_event_type",
    "reason_ts",
    "reason_similarity",
    "source",
    "note",
    "ignored_items",
)
"""A served answer's columns. ``reason_*``: the history event that most supports the item
(its item's vector is the most similar to the recommended one's; empty for a popularity
answer); ``ignored_items``: the request's unknown item ids, comma-separated."""
