"""Features (03_features): id vocabularies, time-ordered user sequences, item text vectors.

Item indices follow the sorted item ids of the catalogue, user indices the sorted user
ids, so the same data always gives the same indices, and "ties broken by item index"
means ties broken by item id.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from components import lake, storage, text
from components.behaviour import SEQUENCE_ORDER, sequence_order, type_codes
from components.lake import FeatureLayer, ValidatedLayer

log = logging.getLogger(__name__)
FEATURES_LAYOUT = 2
"""2: user sequences carry event types and values (1: items and times only)."""


def time_ordered(events: pd.DataFrame) -> pd.DataFrame:
    """Events per user in time order; ties keep the order the source recorded (``seq``, see
    components/events.py). A user's n-th row here is position n of their sequence."""
    return events.sort_values(SEQUENCE_ORDER, kind="stable")


def build_vocab_and_sequences(
    events: pd.DataFrame | pl.DataFrame, items: pd.DataFrame
) -> tuple[pd.DataFrame, pa.Table]:
    """Returns (items with ``item_idx``, users with ``user_idx`` and their time-ordered
    ``items``, ``ts`` (unix seconds), ``types`` (event type codes, components/behaviour.py)
    and ``values`` (the events' value, NaN where none)). ``events``: a frame in source order,
    or the rows of a partitioned layer with their source position ``_row``
    (:func:`components.storage.read_partitioned_rows`)."""
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    items.insert(0, "item_idx", np.arange(len(items), dtype=np.int64))
    vocab = pl.DataFrame({"item_id": items["item_id"].astype(str).to_numpy(), "item_idx": items["item_idx"].to_numpy()})
    ev = events if isinstance(events, pl.DataFrame) else pl.from_pandas(events).with_row_index("_row")
    # Polars joins, groups and sorts on all cores, with no Python loop over users (1.1 million
    # at Beauty x50): the order of time_ordered, ties broken by the source position.
    joined = (
        ev.lazy()
        .select("user_id", "item_id", "ts", "seq", "event_type", "value", "_row")
        .join(vocab.lazy(), on="item_id", how="left")
        .with_columns(code=type_codes())
        .collect()
    )
    if outside := joined["item_idx"].null_count():  # validation keeps such events out of 02_validated
        unknown = ev.join(vocab, on="item_id", how="anti")["item_id"]
        raise ValueError(f"{outside} event(s) name items outside the catalogue: {unknown.head(5).to_list()}")
    users, order, offsets = sequence_order(joined)
    columns = joined.select(
        items=pl.col("item_idx"),
        ts=pl.col("ts").dt.epoch("ns") // 10**9,
        types=pl.col("code"),
        values=pl.col("value").cast(pl.Float32).fill_null(float("nan")),
    )[order]
    small = offsets[-1] < 2**31  # int32 offsets, as written before
    list_offsets = pa.array(offsets.astype(np.int32) if small else offsets)
    lists = pa.ListArray if small else pa.LargeListArray

    def column(name: str, kind: pa.DataType) -> pa.Array:
        return lists.from_arrays(list_offsets, columns[name].to_arrow().cast(kind))

    table = pa.table(
        {
            "user_idx": pa.array(np.arange(len(users), dtype=np.int64)),
            "user_id": users.to_arrow().cast(pa.large_string()),
            "items": column("items", pa.int64()),
            "ts": column("ts", pa.int64()),
            "types": column("types", pa.int8()),
            "values": column("values", pa.float32()),
        }
    )
    return items, table


def build_features(validated: ValidatedLayer, root: str) -> FeatureLayer:
    """Write 03_features/<key>: ``items.parquet`` and ``users.parquet``; reused when complete."""

    def compute(uri: str) -> dict:
        events = storage.read_partitioned_rows(lake.file(validated.uri, lake.EVENTS))
        items = storage.read_parquet(lake.file(validated.uri, "items.parquet"))
        items, users = build_vocab_and_sequences(events, items)
        storage.write_parquet(items, lake.file(uri, "items.parquet"))
        storage.write_table(users, lake.file(uri, "users.parquet"))
        counts = events["event_type"].value_counts(sort=True)  # recorded in the marker, for people
        types = {str(k): int(v) for k, v in counts.iter_rows()}
        return {"n_users": users.num_rows, "n_items": len(items), "event_types": types}

    uri = lake.features_uri(root, validated)
    info, _ = lake.build(uri, compute, layout=FEATURES_LAYOUT)
    return FeatureLayer(uri=uri, validated=validated, n_users=info["n_users"], n_items=info["n_items"])


def item_categories(items: pd.DataFrame, depth: int) -> tuple[np.ndarray, list[str]]:
    """(category index per item in item-index order, category names); a missing path is "(none)"."""
    paths = items.sort_values("item_idx")["categories"].astype("string").fillna("").str.split(" > ")
    names = paths.map(lambda p: " > ".join(x for x in p[:depth] if x) or "(none)")
    codes, uniques = pd.factorize(names, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _to_frame(hashes: list[str], vectors: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"text_hash": hashes, "embedding": list(vectors)})


def embed_cached(
    texts: list[str], root: str, max_length: int = text.MAX_LENGTH, what: str = "item texts", **encoder
) -> tuple[list[str], list[np.ndarray], int]:
    """(text hashes, one vector per text, how many were embedded now): the lake's text cache
    for this encoder version (``03_features/_text_cache/<version>``) answers what it holds;
    only the texts it lacks are embedded, and the cache grows by them."""
    hashes = [text.text_hash(t) for t in texts]
    cache_uri = lake.text_cache_uri(root, text.model_version(max_length))
    cache = storage.read_parquet(cache_uri) if storage.exists(cache_uri) else _to_frame([], np.zeros((0, 384)))
    known = dict(zip(cache["text_hash"], cache["embedding"], strict=True))
    missing = sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
    if missing:
        enc = text.TextEncoder(max_length=max_length, **encoder)
        new = _to_frame([h for h, _ in missing], enc.encode([t for _, t in missing], what=what))
        known.update(zip(new["text_hash"], new["embedding"], strict=True))
        # The cache only grows; an atomic rewrite never leaves it half-written.
        storage.write_parquet(pd.concat([cache, new], ignore_index=True), cache_uri)
    return hashes, [np.asarray(known[h], dtype=np.float32) for h in hashes], len(missing)


def embed_items(features: FeatureLayer, root: str, batch_size: int = 64, num_threads: int = 0) -> FeatureLayer:
    """Write ``03_features/<key>/text-<model version>/item_text.parquet`` (item_idx, item_id,
    text_hash, embedding) aligned with the item vocabulary; embed only texts the cache lacks.

    Returns ``features`` with ``text_uri`` and ``text_stats`` (items, embedded, cached, seconds).
    """
    t0 = time.perf_counter()

    def compute(uri: str) -> dict:
        items = storage.read_parquet(lake.file(features.uri, "items.parquet"))
        hashes, vectors, embedded = embed_cached(
            text.item_texts(items), root, batch_size=batch_size, num_threads=num_threads
        )
        frame = pd.DataFrame(
            {
                "item_idx": items["item_idx"].to_numpy(),
                "item_id": items["item_id"].astype(str).to_numpy(),
                "text_hash": hashes,
                "embedding": vectors,
            }
        )
        storage.write_parquet(frame, lake.file(uri, "item_text.parquet"))
        stats = {"items": len(items), "embedded": embedded, "cached": len(items) - embedded}
        return {**stats, "model_version": text.model_version()}

    uri = lake.text_uri(features.uri, text.model_version())
    info, reused = lake.build(uri, compute)
    stats = (
        {"items": 0, "embedded": 0, "cached": 0} if reused else {k: info[k] for k in ("items", "embedded", "cached")}
    )
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("item text: %s", stats)
    return replace(features, text_uri=uri, text_stats=stats)


def embed_reviews(features: FeatureLayer, root: str, batch_size: int = 64, num_threads: int = 0) -> FeatureLayer:
    """Write ``03_features/<key>/reviews-<model version>/reviews.parquet`` when the log has review
    text (the spec maps ``text`` or ``summary``): one row per event with words, placed in
    its user's sequence (``user_idx``, ``pos``), with ``item_idx``, ``ts`` (unix s), ``stars``
    (the event's value), ``summary`` and ``body`` (stripped; null where none), the ``text`` embedded
    (``summary | body``), its MiniLM ``embedding``
    (at :data:`components.text.REVIEW_MAX_LENGTH` tokens) and the summary's own
    ``summary_embedding`` (zeros where there is none). Both go through the text cache.

    Returns ``features`` with ``review_uri`` (None: the log has no review text) and ``review_stats``.
    """
    t0 = time.perf_counter()
    if not features.validated.raw.review_columns:
        return replace(features, review_uri=None, review_stats=None)

    def compute(uri: str) -> dict:
        ev = storage.read_partitioned(lake.file(features.validated.uri, lake.EVENTS))
        for c in ("text", "summary"):
            if c not in ev:
                ev[c] = pd.Series(pd.NA, index=ev.index, dtype="string")
        users = storage.read_parquet(lake.file(features.uri, "users.parquet"), columns=["user_id", "user_idx", "items"])
        items = storage.read_parquet(lake.file(features.uri, "items.parquet"), columns=["item_id", "item_idx"])
        ev = time_ordered(ev)
        ev = ev.assign(pos=ev.groupby("user_id", sort=False).cumcount().to_numpy())
        ev = ev[ev["text"].notna() | ev["summary"].notna()]
        docs = text.review_texts(ev)
        hashes, vectors, embedded = embed_cached(
            docs, root, text.REVIEW_MAX_LENGTH, "reviews", batch_size=batch_size, num_threads=num_threads
        )
        summaries = ev["summary"].fillna("").astype(str).tolist()
        _, summary_vectors, s_embedded = embed_cached(
            [x for x in summaries if x], root, what="review summaries", batch_size=batch_size, num_threads=num_threads
        )
        it = iter(summary_vectors)
        zero = np.zeros(384, dtype=np.float32)
        user_idx = pd.Series(users["user_idx"].to_numpy(), users["user_id"])
        item_idx = pd.Series(items["item_idx"].to_numpy(), items["item_id"])
        frame = pd.DataFrame(
            {
                "user_idx": ev["user_id"].astype(str).map(user_idx).to_numpy(),
                "pos": ev["pos"].to_numpy(np.int64),
                "item_idx": ev["item_id"].astype(str).map(item_idx).to_numpy(),
                "ts": (ev["ts"].astype("datetime64[ns, UTC]").astype("int64") // 10**9).to_numpy(),
                "stars": ev["value"].astype("float64").to_numpy(),
                "text": docs,
                "summary": ev["summary"].astype("string").to_numpy(),
                "body": ev["text"].astype("string").to_numpy(),
                "text_hash": hashes,
                "embedding": vectors,
                "summary_embedding": [next(it) if x else zero for x in summaries],
            }
        ).sort_values(["user_idx", "pos"], kind="stable")
        seqs = users.set_index("user_idx")["items"]
        placed = [int(seqs[u][p]) for u, p in zip(frame["user_idx"], frame["pos"], strict=True)]
        if placed != frame["item_idx"].astype(int).tolist():  # one ordering of events, or a clear stop
            raise RuntimeError(f"review layer {uri}: reviews do not line up with the user sequences of {features.uri}")
        storage.write_parquet(frame, lake.file(uri, "reviews.parquet"))
        return {
            "reviews": len(frame),
            "embedded": embedded + s_embedded,
            "empty_text": int(ev["text"].isna().sum()),
            "model_version": text.model_version(text.REVIEW_MAX_LENGTH),
        }

    uri = lake.reviews_uri(features.uri, text.model_version(text.REVIEW_MAX_LENGTH))
    info, reused = lake.build(uri, compute)
    stats = {"reviews": info["reviews"], "embedded": 0 if reused else info["embedded"]}
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("review text: %s", stats)
    return replace(features, review_uri=uri, review_stats=stats)
