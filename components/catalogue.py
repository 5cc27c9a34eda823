"""08_catalogue: today's item table, published between nights for the served champions.

``publish`` reads the spec's catalogue as ingest does, checks it with the ``items``
expectation suite, embeds only the texts the lake's text cache lacks (new or changed
items), and writes ``08_catalogue/<spec>/items-<content hash>.parquet`` (item_id, title,
text_hash, embedding) and then ``current.json`` naming it. A file is written once and
never changed, and the pointer moves only after it is complete, so a server never reads
half a table, and a failed publication leaves the previous one serving.

:class:`Watch` is the served model's side: it looks at the pointer at most every
``INTERESTFLOW_CATALOGUE_POLL_S`` seconds (default 30) and, when it names a new table,
extends the trained model by the items it has not seen: a family that reads text scores
them by their text (``Recommender.with_items``); an id-only family leaves them out and its
answers say how many. Known items keep the vectors they were trained with; their titles
follow the table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from components import events, features, lake, storage, text, validation
from components.recommender import Recommender
from components.serving import ServingTables

log = logging.getLogger(__name__)
POINTER = "current.json"
CATALOGUE_ENV = "INTERESTFLOW_CATALOGUE"
"""Overrides the catalogue folder a served model reads (default: the one of its training lake)."""
POLL_ENV = "INTERESTFLOW_CATALOGUE_POLL_S"
POLL_S = 30.0


@dataclass(frozen=True)
class CatalogueLayer:
    uri: str
    """The published table."""
    items: int
    embedded: int
    """Texts embedded now (the rest came from the text cache)."""
    cached: int
    changed: bool
    """False: the same table was already the current one (nothing written)."""
    model_version: str
    seconds: float


def publish(spec_path: str | Path, root: str, batch_size: int = 64, num_threads: int = 0) -> CatalogueLayer:
    """Publish the spec's catalogue as it is now (see the module docstring)."""
    t0 = time.perf_counter()
    spec = events.load_spec(spec_path)
    items = events.read_items(spec.items, strip_ids=spec.id_whitespace == "strip")
    findings = validation.run_suite("items", items, spec.items.uri)
    critical = [f for f in findings if f.severity == "critical"]
    if critical:
        raise validation.DataValidationError(
            "catalogue not published (the current one keeps serving):\n" + "\n".join(f.message() for f in critical)
        )
    for f in findings:
        log.warning("catalogue: %s", f.message())
    items = items.drop_duplicates("item_id", keep="last").sort_values("item_id", kind="stable")
    version = text.model_version()
    hashes, vectors, embedded = features.embed_cached(
        text.item_texts(items), root, batch_size=batch_size, num_threads=num_threads
    )
    table = pd.DataFrame(
        {
            "item_id": items["item_id"].astype(str).to_numpy(),
            "title": items["title"].astype("string").fillna("").astype(str).to_numpy(),
            "text_hash": hashes,
            "embedding": vectors,
        }
    )
    digest = hashlib.sha256()
    for col in ("item_id", "title", "text_hash"):
        digest.update("\x1f".join(table[col]).encode())
    digest.update(version.encode())
    folder = lake.catalogue_uri(root, spec.name)
    uri = storage.join(folder, f"items-{digest.hexdigest()[:16]}.parquet")
    pointer = storage.join(folder, POINTER)
    current = storage.read_json(pointer) if storage.exists(pointer) else {}
    changed = current.get("file") != storage.name(uri)
    if changed:
        if not storage.exists(uri):
            storage.write_parquet(table, uri, metadata={"interestflow.model_version": version})
        storage.write_json(
            {
                "file": storage.name(uri),
                "items": len(table),
                "model_version": version,
                "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": str(spec.items.uri),
            },
            pointer,
        )
    out = CatalogueLayer(
        uri, len(table), embedded, len(table) - embedded, changed, version, round(time.perf_counter() - t0, 3)
    )
    log.info("catalogue: %s", out)
    return out


def extend(base: Recommender, table: pd.DataFrame, model_version: str | None) -> Recommender:
    """``base`` with the table's titles and, for a family that reads text, the table's items
    it was not trained on (scored by their text)."""
    titles = dict(zip(table["item_id"].astype(str), table["title"].astype(str), strict=True))
    tables = base.serving
    if tables is not None:
        known = np.array([titles.get(str(i), t) for i, t in zip(base.item_ids, tables.titles, strict=True)], object)
        tables = ServingTables(**{**tables.__dict__, "titles": known})
    rec = Recommender(base.family, base.config, base.state_dict, base.item_ids, base.user_ids, base.behaviour, tables)
    new = table[~table["item_id"].astype(str).isin(base.item_pos)]
    if not len(new):
        return rec
    reason = None
    if not base.model.uses_text:
        reason = "id-only"
    elif tables is None or tables.text_version != model_version:
        reason = f"text encoder {model_version} is not the model's {tables.text_version if tables else None}"
        log.warning("catalogue: %d new items not ranked: %s", len(new), reason)
    if reason is None:
        try:
            vectors = np.stack(new["embedding"].to_numpy()).astype(np.float32)
            return rec.with_items(new["item_id"].astype(str).tolist(), vectors, new["title"].astype(str).tolist())
        except NotImplementedError as e:  # a text family configured without text (fusion='id')
            reason = str(e)
    if rec.serving is not None:
        rec.serving.new_items_unranked = len(new)
    return rec


class Watch:
    """The served model, kept up to date with the published catalogue (thread-safe: the
    MLflow scoring server answers requests in threads)."""

    def __init__(self, base: Recommender, folder: str | None = None, poll_s: float | None = None):
        self.base = self.current_model = base
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
                log.warning(
                    "catalogue %s not loaded (%s: %s); serving the previous one", self.folder, type(e).__name__, e
                )
        return self.current_model

    def _refresh(self) -> None:
        pointer = storage.join(self.folder, POINTER)
        if not storage.exists(pointer):
            return
        current = storage.read_json(pointer)
        if current["file"] == self.file:
            return
        table = storage.read_parquet(storage.join(self.folder, current["file"]))
        self.current_model = extend(self.base, table, current.get("model_version"))
        self.file = current["file"]
        log.info("catalogue %s: %d items, the model ranks %d", current["file"], len(table), self.current_model.n_items)
