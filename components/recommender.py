"""A trained model with its vocabularies: what is registered, re-scored and served.

A :class:`Recommender` is the family's weights plus the item and user ids it was trained
on, and the one serving path: it maps ids to indices, batches requests, and writes the
top-K table (user_id, rank, item_id, score) that evaluation, batch recommendations and the
MLflow pyfunc (components/pyfunc.py) all return. ``scorer_for(data)`` maps it onto
*today's* ids, so yesterday's champion can be re-scored on today's holdout: unknown users
get the family's unknown-user row, unknown history items are dropped, items the model never
saw score -inf.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from components import lake, metrics, storage
from components.batches import pad_left, topk_table
from components.behaviour import PAD_TYPE, TYPE_CODES, Behaviour
from components.models import MODELS
from components.serving import ServingTables

REQUEST_BATCH = 1024  # users scored at once when serving a request frame


@dataclass
class Recommender:
    family: str
    config: dict
    """The family config, whole (``asdict``): a field missing is taken as older than the
    field (``FamilyConfig.from_saved``), not as today's default."""
    state_dict: dict
    item_ids: np.ndarray
    user_ids: np.ndarray
    behaviour: Behaviour = Behaviour()
    """The training data's behaviour: which history items a served ranking leaves out."""
    serving: ServingTables | None = None
    """Titles, popularity and the users' stored histories (components/serving.py); None in
    a model registered before they were kept (a request then carries the whole history)."""
    item_pos: dict = field(init=False, repr=False)
    user_pos: dict = field(init=False, repr=False)

    def __post_init__(self):
        cls = MODELS[self.family]
        self.model = cls(cls.Config.from_saved(self.config), len(self.item_ids), len(self.user_ids))
        self.model.load_state_dict(self.state_dict)
        self.model.eval()
        self.item_pos = {str(x): i for i, x in enumerate(self.item_ids)}
        self.user_pos = {str(x): i for i, x in enumerate(self.user_ids)}
        self._vectors = None

    @property
    def max_len(self) -> int:
        return self.model.config.max_len

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "family": self.family,
                "config": self.config,
                "state_dict": self.state_dict,
                "item_ids": list(map(str, self.item_ids)),
                "user_ids": list(map(str, self.user_ids)),
                "behaviour": {
                    "target": list(self.behaviour.target),
                    "weights": dict(self.behaviour.weights),
                    "exclude": self.behaviour.exclude,
                },
                **({"serving": self.serving.to_state()} if self.serving is not None else {}),
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Recommender:
        d = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        behaviour = Behaviour(**d["behaviour"]) if "behaviour" in d else Behaviour()  # older models: the old rule
        serving = ServingTables.from_state(d["serving"]) if "serving" in d else None
        return cls(
            d["family"],
            d["config"],
            d["state_dict"],
            np.array(d["item_ids"]),
            np.array(d["user_ids"]),
            behaviour,
            serving,
        )

    def with_items(self, item_ids: Sequence[str], text: np.ndarray, titles: Sequence[str]) -> Recommender:
        """This model with catalogue items it was not trained on appended, scored by their
        ``text`` vectors (n, d) (a family that reads text; the others raise
        NotImplementedError)."""
        rows = self.model.new_item_rows(torch.as_tensor(np.asarray(text, dtype=np.float32)))
        n = self.n_items
        state = {  # new rows go after the items, before any padding or [MASK] row
            name: torch.cat([v[:n], rows[name].to(v.dtype), v[n:]]) if name in rows else v
            for name, v in self.state_dict.items()
        }
        serving = self.serving.with_items(list(titles)) if self.serving is not None else None
        ids = np.concatenate([self.item_ids.astype(object), np.asarray(list(item_ids), dtype=object)]).astype(str)
        return Recommender(self.family, self.config, state, ids, self.user_ids, self.behaviour, serving)

    # -- what a served answer shows -------------------------------------------------------------
    def titles(self) -> np.ndarray:
        return self.serving.titles if self.serving is not None else self.item_ids.astype(object)

    def popularity(self) -> np.ndarray:
        """(n_items,) training interactions per item (zeros for a model that did not keep them)."""
        return self.serving.popularity if self.serving is not None else np.zeros(self.n_items, np.float32)

    def normalised_item_vectors(self) -> np.ndarray:
        """(n_items, d) the family's item vectors, unit length (computed once)."""
        if self._vectors is None:
            with torch.no_grad():
                v = torch.nn.functional.normalize(self.model.item_vectors().float(), dim=1)
            self._vectors = v.numpy()
        return self._vectors

    # -- id mapping -----------------------------------------------------------------------------
    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """The model's indices of ``item_ids``, unknown ones dropped (order kept)."""
        return np.array([self.item_pos[x] for x in map(str, item_ids) if x in self.item_pos], dtype=np.int64)

    def typed_history(
        self, item_ids: Sequence[str], types: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item indices, type codes, their positions in the request) of a request's history,
        unknown items dropped. Without types every event counts as the first target type (so
        the exclusion policy keeps every history item out, as for an untyped log)."""
        default = TYPE_CODES[self.behaviour.target[0]] if self.behaviour.target else 0
        item_ids = [str(x) for x in item_ids]
        unknown = sorted({str(t) for t in (types if types is not None else ())} - set(TYPE_CODES))
        if unknown:
            raise ValueError(f"event types {unknown} are not contract types {list(TYPE_CODES)}")
        codes = [default] * len(item_ids) if types is None else [TYPE_CODES[str(t)] for t in types]
        if len(codes) != len(item_ids):
            raise ValueError(f"a history of {len(item_ids)} items has {len(codes)} event types")
        keep = [i for i, x in enumerate(item_ids) if x in self.item_pos]
        return (
            np.array([self.item_pos[item_ids[i]] for i in keep], dtype=np.int64),
            np.array([codes[i] for i in keep], dtype=np.int64),
            np.array(keep, dtype=np.int64),
        )

    def user_indices(self, user_ids: Sequence[str]) -> torch.Tensor:
        """The model's indices of ``user_ids``; an unknown user is ``n_users`` (the unknown-user row)."""
        n_users = len(self.user_ids)
        return torch.tensor([self.user_pos.get(str(u), n_users) for u in user_ids], dtype=torch.long)

    # -- serving --------------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int = 10,
        types: Sequence[Sequence[str] | None] | None = None,
    ) -> pd.DataFrame:
        """Top-``k`` per user from their ``histories`` (item ids, oldest first) and their event
        ``types`` (contract names; None: see :meth:`typed_history`); the items the behaviour's
        exclusion policy names are left out, exactly as in evaluation.

        Returns the top-K table (user_id, rank, item_id, score), users in request order."""
        user_ids = [str(u) for u in user_ids]
        types = types if types is not None else [None] * len(histories)
        typed = [self.typed_history(h, t) for h, t in zip(histories, types, strict=True)]
        top, val = self.rank(user_ids, [h for h, _, _ in typed], [t for _, t, _ in typed], k)
        table = topk_table(np.asarray(user_ids, dtype=object), self.item_ids, top, val, k)
        return table.astype({"score": np.float64})  # what the served model's signature says

    @torch.no_grad()
    def rank(
        self, user_ids: Sequence[str], histories: Sequence[np.ndarray], types: Sequence[np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(top item indices, their scores), each (users, k), from histories of item indices
        and their type codes (oldest first), the exclusion policy applied."""
        # One width for the whole request: a family that reads the padding (lstm) scores a
        # user the same whatever batch they fall in.
        width = max(1, min(self.max_len, max((len(h) for h in histories), default=1)))
        tops, vals = [], []
        for s in range(0, len(user_ids), REQUEST_BATCH):
            hists, hist_types = histories[s : s + REQUEST_BATCH], types[s : s + REQUEST_BATCH]
            batch = {
                "users": self.user_indices(user_ids[s : s + REQUEST_BATCH]),
                "seq": pad_left(hists, self.max_len, self.n_items, length=width),
                "types": pad_left(hist_types, self.max_len, PAD_TYPE, length=width),
            }
            scores = self.model.score(batch).float()
            excluded = [self.behaviour.excluded(h, t) for h, t in zip(hists, hist_types, strict=True)]
            metrics.exclude_seen(scores, *metrics.seen_pairs(excluded))
            v, i = metrics.top_k(scores, k)
            tops.append(i.numpy())
            vals.append(v.numpy())
        top = np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)
        val = np.concatenate(vals) if vals else np.zeros((0, k), dtype=np.float32)
        return top, val

    # -- re-scoring on another day's ids --------------------------------------------------------
    def scorer_for(self, data) -> Callable[[dict], torch.Tensor]:
        """A scorer over ``data``'s item and user indices (a components.datasets.Dataset);
        (batch) -> (B, data.n_items)."""
        ids = self.ids_for(data)
        if ids is None:
            return torch.no_grad()(self.model.score)

        @torch.no_grad()
        def score(batch: dict) -> torch.Tensor:
            s = self.model.score(ids.batch(batch))  # (B, n_model_items)
            out = torch.full((len(s), data.n_items), -torch.inf)
            out[:, ids.known] = s[:, ids.item_map[:-1][ids.known]]
            return out

        return score

    def ids_for(self, data) -> IdMap | None:
        """How ``data``'s item and user indices map onto this model's; None: they are the same."""
        if np.array_equal(self.item_ids, data.item_ids) and np.array_equal(self.user_ids, data.user_ids):
            return None
        n_model_items = self.n_items
        # today's index -> model index (unknown: the model's padding / unknown-user index)
        item_map = torch.tensor([self.item_pos.get(str(x), n_model_items) for x in data.item_ids] + [n_model_items])
        return IdMap(item_map, self.user_indices(data.user_ids), item_map[:-1] < n_model_items, n_model_items)


@dataclass
class IdMap:
    """Today's indices -> a model's (components.datasets.Dataset of another day)."""

    item_map: torch.Tensor
    """(today's n_items + 1,) the model's index of each of today's items (unknown, and today's
    padding: the model's padding index)."""
    user_map: torch.Tensor
    """(today's n_users,) the model's index of each of today's users (unknown: its unknown-user row)."""
    known: torch.Tensor
    """(today's n_items,) which of today's items the model knows."""
    n_model_items: int

    def batch(self, batch: dict) -> dict:
        """A batch of today's indices in the model's: unknown history items dropped, re-padded."""
        seq = self.item_map[batch["seq"]]
        known_rows = [row < self.n_model_items for row in seq]
        width = seq.shape[1]
        mapped = {
            "users": self.user_map[batch["users"]],
            "seq": pad_left([r[m].numpy() for r, m in zip(seq, known_rows, strict=True)], width, self.n_model_items),
        }
        if "types" in batch:
            kept = [r[m].numpy() for r, m in zip(batch["types"], known_rows, strict=True)]
            mapped["types"] = pad_left(kept, width, PAD_TYPE)
        return mapped


# -- the published catalogue (components/catalogue.py), as a served model reads it ---------------
CATALOGUE_ENV = "INTERESTFLOW_CATALOGUE"
"""Overrides the catalogue folder a served model reads (default: the one of its training lake)."""
POLL_ENV = "INTERESTFLOW_CATALOGUE_POLL_S"
POLL_S = 30.0
_log = logging.getLogger(__name__)


def extended(base: Recommender, table: pd.DataFrame, model_version: str | None) -> Recommender:
    """``base`` with the table's titles and, for a family that reads text, the table's items
    it was not trained on (scored by their text)."""
    titles = dict(zip(table["item_id"].astype(str), table["title"].astype(str), strict=True))
    tables = base.serving
    if tables is not None:
        known = np.array([titles.get(str(i), t) for i, t in zip(base.item_ids, tables.titles, strict=True)], object)
        tables = replace(tables, titles=known)  # a copy: the base model's tables stay as trained
    rec = Recommender(base.family, base.config, base.state_dict, base.item_ids, base.user_ids, base.behaviour, tables)
    new = table[~table["item_id"].astype(str).isin(base.item_pos)]
    if not len(new):
        return rec
    reason = None
    if not base.model.reads_text(base.model.config):
        reason = "id-only"
    elif tables is None or tables.text_version != model_version:
        reason = f"text encoder {model_version} is not the model's {tables.text_version if tables else None}"
        _log.warning("catalogue: %d new items not ranked: %s", len(new), reason)
    if reason is None:
        try:
            vectors = np.stack(new["embedding"].to_numpy()).astype(np.float32)
            return rec.with_items(new["item_id"].astype(str).tolist(), vectors, new["title"].astype(str).tolist())
        except NotImplementedError as e:  # a text family configured without text (fusion='id')
            reason = str(e)
    if rec.serving is not None:
        rec.serving.new_items_unranked = len(new)
    return rec


class CatalogueWatch:
    """The served model, kept up to date with the published catalogue (thread-safe: the
    MLflow scoring server answers requests in threads)."""

    def __init__(
        self, base: Recommender, folder: str | None = None, poll_s: float | None = None, for_serving: bool = False
    ):
        """``for_serving``: the process is a model server's worker; each model it holds is made
        ready for requests (``Family.for_serving``). Elsewhere (a pipeline re-scoring the
        champion) the model scores exactly as it was evaluated."""
        self.base = self.current_model = base
        self.for_serving = for_serving
        if for_serving:
            base.model.for_serving()
        self.folder = folder or os.environ.get(CATALOGUE_ENV) or (base.serving.catalogue_uri if base.serving else None)
        self.poll_s = float(os.environ.get(POLL_ENV, POLL_S)) if poll_s is None else poll_s
        self.file: str | None = None
        self._checked = -np.inf
        self._lock = threading.Lock()

    def current(self) -> Recommender:
        if self.folder is None or time.monotonic() - self._checked < self.poll_s:
            return self.current_model
        with self._lock:
            if time.monotonic() - self._checked < self.poll_s:
                return self.current_model
            self._checked = time.monotonic()
            try:
                self._refresh()
            except Exception as e:  # noqa: BLE001 - a bad publication never stops serving
                _log.warning(
                    "catalogue %s not loaded (%s: %s); serving the previous one", self.folder, type(e).__name__, e
                )
        return self.current_model

    def _refresh(self) -> None:
        pointer = lake.catalogue_pointer(self.folder)
        if not storage.exists(pointer):
            return
        current = storage.read_json(pointer)
        if current["file"] == self.file:
            return
        table = storage.read_parquet(storage.join(self.folder, current["file"]))
        model = extended(self.base, table, current.get("model_version"))
        if self.for_serving:
            model.model.for_serving()
        self.current_model = model
        self.file = current["file"]
        _log.info("catalogue %s: %d items, the model ranks %d", current["file"], len(table), self.current_model.n_items)
