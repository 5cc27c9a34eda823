"""08_catalogue: today's item table, published between nights for the served champions.

``publish`` reads the spec's catalogue as ingest does, checks it with the ``items``
expectation suite, embeds only the texts the lake's text cache lacks (new or changed
items), and writes ``08_catalogue/<spec>/items-<content hash>.parquet`` (item_id, title,
text_hash, embedding) and then ``current.json`` naming it. A file is written once and
never changed, and the pointer moves only after it is complete, so a server never reads
half a table, and a failed publication leaves the previous one serving.

The served model's side is ``components.recommender.CatalogueWatch``: it looks at the
pointer at most every ``INTERESTFLOW_CATALOGUE_POLL_S`` seconds (default 30) and, when it
names a new table, extends the trained model by the items it has not seen.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from components import events, features, lake, storage, text, validation

log = logging.getLogger(__name__)


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
    pointer = lake.catalogue_pointer(folder)
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
