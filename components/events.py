"""Ingest: map any CSV/Parquet event log and item catalogue onto the data contract.

A dataset spec (YAML, see ``specs/``) names the source files and how their columns map
onto the contract (DESIGN.md §3), so a new log needs a spec, not code::

    name: amazon_beauty
    events:
      uri: ../../shared/data/amazon_beauty/interactions.csv.gz   # relative to the spec file
      columns: {user_id: user_id, item_id: item_id, ts: timestamp}
      ts_unit: s            # or ts_format: "%Y-%m-%d %H:%M:%S"
      event_type: review    # a constant, or columns: {event_type: <source column>}
      order_by: seq_pos     # optional: breaks ties between events with the same ts
    items:
      uri: ../../shared/data/amazon_beauty/items.csv
      columns: {item_id: item_id, title: title, categories: categories, brand: brand, price: price}
    filters:
      k_core: 0             # optional k-core filter on users and items
    privacy:
      pseudonymise_users: false   # true: user ids become keyed hashes at ingest (see below)

Output (01_raw): ``events.parquet`` with ``user_id, item_id, ts, event_type, value, seq``
(and ``ts_source``, the timestamp as written in the source, for validation reports)
and ``items.parquet`` with ``item_id, title, categories, brand, price``. Types are only
*mapped* here (ids to strings, ts parsed, unparseable ts -> NaT); whether the data obeys
the contract is decided by the expectation suites in validation, which need to see the
bad values to report them. ``seq`` is the event's position in the source (or the
``order_by`` column): the tie-break for events with equal timestamps, so that day-level
logs keep their recorded order.

Pseudonymisation: with ``privacy.pseudonymise_users: true`` every user id is replaced at
ingest by ``u_`` + HMAC-SHA256(key, id) (first 20 hex digits), so no raw user id reaches
the lake, MLflow or the logs. The key comes from ``INTERESTFLOW_PSEUDONYM_KEY`` or, when
that is unset, from the ``secret`` the caller passes (the ingest task reads the Prefect
Secret block ``interestflow-pseudonym-key``, tasks/ingest.py); without either the run
stops with a clear error. The same key always gives the same pseudonyms (so models and
recommendations stay joinable run to run); the key's fingerprint is part of the data hash,
so a new key never reuses layers made with the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

from components import lake, storage
from components.lake import RawLayer

EVENT_TYPES = ("view", "click", "cart", "purchase", "review", "rating")
EVENT_COLUMNS = ("user_id", "item_id", "ts", "event_type", "value")
ITEM_COLUMNS = ("item_id", "title", "categories", "brand", "price")
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "ts")
REQUIRED_ITEM_COLUMNS = ("item_id",)


class SpecError(ValueError):
    """The dataset spec is wrong or points at something that is not there."""


@dataclass(frozen=True)
class SourceSpec:
    uri: str
    """Where the file is: a local path (relative to the spec file) or an s3:// URI."""
    columns: dict[str, str]
    """Contract column -> source column."""
    format: str = ""
    """``csv`` or ``parquet``; inferred from the file name when empty."""
    ts_unit: str | None = None
    """Unit of numeric timestamps (``s``, ``ms``, ``us``, ``ns``)."""
    ts_format: str | None = None
    """strftime format of textual timestamps; ISO-8601 when neither is given."""
    event_type: str | None = None
    """A constant event type for logs that hold one kind of event."""
    order_by: str | None = None
    """Source column that orders events with equal timestamps."""

    def __post_init__(self):
        fmt = self.format or _infer_format(self.uri)
        if fmt not in ("csv", "parquet"):
            raise SpecError(f"source {self.uri!r}: format must be csv or parquet, got {fmt!r}")
        object.__setattr__(self, "format", fmt)
        if self.event_type is not None and self.event_type not in EVENT_TYPES:
            raise SpecError(f"event_type {self.event_type!r} is not one of {EVENT_TYPES}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    events: SourceSpec
    items: SourceSpec
    k_core: int = 0
    """Keep only users and items with at least k events (0: no filter)."""
    pseudonymise_users: bool = False
    """Replace user ids by keyed hashes at ingest (key from the environment or a Prefect Secret)."""
    spec_text: str = field(default="", repr=False)


def _infer_format(uri: str) -> str:
    name = uri.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt", ".csv.bz2")):
        return "csv"
    return ""


def _resolve(uri: str, base: Path) -> str:
    uri = os.path.expandvars(uri)
    if storage.is_s3(uri) or uri.startswith("file://") or Path(uri).is_absolute():
        return uri
    return str((base / uri).resolve())


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a dataset spec; relative source paths resolve against the spec's folder."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"dataset spec {path} does not exist")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"dataset spec {path}: not valid YAML: {e}") from e
    base = path.resolve().parent
    sources = {}
    for part, required in (("events", REQUIRED_EVENT_COLUMNS), ("items", REQUIRED_ITEM_COLUMNS)):
        s = dict(raw.get(part) or {})
        if "uri" not in s:
            raise SpecError(f"dataset spec {path}: '{part}.uri' is missing")
        s["uri"] = _resolve(s["uri"], base)
        s.setdefault("columns", {})
        unknown = set(s["columns"]) - set(EVENT_COLUMNS if part == "events" else ITEM_COLUMNS)
        if unknown:
            raise SpecError(f"dataset spec {path}: '{part}.columns' maps unknown contract columns {sorted(unknown)}")
        missing = [c for c in required if c not in s["columns"]]
        if missing:
            raise SpecError(f"dataset spec {path}: '{part}.columns' must map {missing}")
        try:
            sources[part] = SourceSpec(**s)
        except (TypeError, SpecError) as e:
            raise SpecError(f"dataset spec {path}: '{part}': {e}") from e
    if "event_type" not in sources["events"].columns and sources["events"].event_type is None:
        raise SpecError(f"dataset spec {path}: give events.event_type (a constant) or map columns.event_type")
    k_core = int((raw.get("filters") or {}).get("k_core", 0))
    privacy = raw.get("privacy") or {}
    unknown = set(privacy) - {"pseudonymise_users"}
    if unknown:
        raise SpecError(f"dataset spec {path}: unknown 'privacy' settings {sorted(unknown)}")
    return DatasetSpec(
        name=raw.get("name", path.stem),
        events=sources["events"],
        items=sources["items"],
        k_core=k_core,
        pseudonymise_users=bool(privacy.get("pseudonymise_users", False)),
        spec_text=text,
    )


PSEUDONYM_KEY_ENV, PSEUDONYM_KEY_BLOCK = "INTERESTFLOW_PSEUDONYM_KEY", "interestflow-pseudonym-key"
SecretLookup = Callable[[], str | None]


def pseudonym_key(spec_name: str, secret: SecretLookup | None = None) -> bytes:
    """The pseudonymisation key: the environment first, then ``secret()`` (a secret store's lookup)."""
    key = os.environ.get(PSEUDONYM_KEY_ENV) or (secret() if secret else None)
    if not key:
        raise SpecError(
            f"dataset spec {spec_name!r} turns privacy.pseudonymise_users on, but there is no key: set "
            f"{PSEUDONYM_KEY_ENV} or create the Prefect Secret block {PSEUDONYM_KEY_BLOCK!r}"
        )
    return key.encode()


def pseudonymise(ids: pd.Series, key: bytes) -> pd.Series:
    """``u_`` + the first 20 hex digits of HMAC-SHA256(key, id); nulls stay null (validation reports them)."""
    return ids.map(
        lambda x: x if pd.isna(x) else "u_" + hmac.new(key, str(x).encode(), hashlib.sha256).hexdigest()[:20]
    ).astype("string")


def source_hash(spec: DatasetSpec) -> str:
    """Hash of the spec text and both source files' bytes: the key of every lake layer."""
    h = hashlib.sha256(spec.spec_text.encode())
    for src in (spec.events, spec.items):
        h.update(_read_source_bytes(src))
    return h.hexdigest()[:16]


def _read_source_bytes(src: SourceSpec) -> bytes:
    try:
        return storage.read_bytes(src.uri)
    except FileNotFoundError as e:
        raise SpecError(f"source file {src.uri} does not exist") from e


def _read_table(src: SourceSpec) -> pd.DataFrame:
    data = _read_source_bytes(src)
    if not data:
        raise SpecError(f"source file {src.uri} is empty")
    try:
        if src.format == "parquet":
            return pq.read_table(io.BytesIO(data)).to_pandas()
        sep = "\t" if src.uri.lower().endswith(".tsv") else ","
        compression = "gzip" if src.uri.lower().endswith(".gz") else ("bz2" if src.uri.endswith(".bz2") else None)
        return pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            compression=compression,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
        )
    except UnicodeDecodeError as e:
        raise SpecError(f"source file {src.uri}: not UTF-8 text ({e})") from e
    except Exception as e:  # gzip/parquet/csv decoding errors all mean: unreadable file
        raise SpecError(f"source file {src.uri} cannot be read as {src.format}: {type(e).__name__}: {e}") from e


def _select(df: pd.DataFrame, src: SourceSpec, contract: tuple[str, ...]) -> pd.DataFrame:
    missing = {c: s for c, s in src.columns.items() if s not in df.columns}
    if missing:
        raise SpecError(
            f"source file {src.uri}: column(s) {sorted(missing.values())} named in the spec "
            f"(for {sorted(missing)}) are not in the file; it has {list(df.columns)[:20]}"
        )
    out = pd.DataFrame({c: df[s] for c, s in src.columns.items()})
    for c in contract:
        if c not in out.columns:
            out[c] = None
    return out


def parse_ts(values: pd.Series, unit: str | None, fmt: str | None) -> pd.Series:
    """Parse timestamps to UTC; anything unparseable becomes NaT (validation reports it)."""
    if unit:
        num = pd.to_numeric(values, errors="coerce")
        return pd.to_datetime(num, unit=unit, utc=True, errors="coerce")
    return pd.to_datetime(values, format=fmt or "ISO8601", utc=True, errors="coerce")


def read_events(src: SourceSpec) -> pd.DataFrame:
    df = _read_table(src)
    out = _select(df, src, EVENT_COLUMNS)
    out["user_id"] = out["user_id"].astype("string")
    out["item_id"] = out["item_id"].astype("string")
    out["ts_source"] = out["ts"].astype("string")  # kept until validation, to show bad values
    out["ts"] = parse_ts(out["ts"], src.ts_unit, src.ts_format)
    if src.event_type is not None:
        out["event_type"] = src.event_type
    out["event_type"] = out["event_type"].astype("string")
    if src.format == "csv":  # CSV is read as text; numbers that parse become numbers
        out["value"] = _numeric_or_text(out["value"])
    if src.order_by:
        if src.order_by not in df.columns:
            raise SpecError(f"source file {src.uri}: order_by column {src.order_by!r} is not in the file")
        out["seq"] = pd.to_numeric(df[src.order_by], errors="coerce").astype("float64")
    else:
        out["seq"] = range(len(out))
        out["seq"] = out["seq"].astype("float64")
    out = out[[*EVENT_COLUMNS, "seq", "ts_source"]]
    out.attrs["ignored_columns"] = _unmapped(df, src)
    return out


def read_items(src: SourceSpec) -> pd.DataFrame:
    df = _read_table(src)
    out = _select(df, src, ITEM_COLUMNS)
    for c in ("item_id", "title", "categories", "brand"):
        out[c] = out[c].astype("string")
    if src.format == "csv":
        out["price"] = _numeric_or_text(out["price"])
    out = out[list(ITEM_COLUMNS)]
    out.attrs["ignored_columns"] = _unmapped(df, src)
    return out


def _unmapped(df: pd.DataFrame, src: SourceSpec) -> list[str]:
    """Columns of the file that the spec does not map (not used; validation warns)."""
    used = {*src.columns.values(), src.order_by}
    return [str(c) for c in df.columns if c not in used]


def _numeric_or_text(s: pd.Series) -> pd.Series:
    """Numbers when every non-empty value parses; otherwise the text, so validation sees it."""
    num = pd.to_numeric(s, errors="coerce")
    if (num.isna() & s.notna()).any():
        return s
    return num.astype("float64")


def k_core(events: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively keep users and items with at least k events."""
    if k <= 1:
        return events
    while True:
        u = events.groupby("user_id")["item_id"].transform("size")
        i = events.groupby("item_id")["user_id"].transform("size")
        keep = (u >= k) & (i >= k)
        if keep.all():
            return events
        events = events[keep]


def ingest(spec_path: str | Path, root: str, secret: SecretLookup | None = None) -> RawLayer:
    """Write the 01_raw layer for a spec; reuse it when the same input was ingested before.

    ``secret``: where the pseudonymisation key comes from when the environment has none.
    An input that cannot be read (a :class:`SpecError`) leaves a report in ``quarantine/``
    and raises.
    """
    try:
        return _ingest(spec_path, root, secret)
    except SpecError as e:
        quarantine_report(root, f"ingest-{Path(str(spec_path)).stem}", spec_path, e)
        raise


def quarantine_report(root: str, name: str, spec_path: str | Path, error: Exception) -> str:
    """``quarantine/<name>-<UTC time>/report.md``: what could not be ingested and why."""
    q = lake.quarantine_uri(root, name, stamped=True)
    text = f"# Rejected at ingest\n\nspec: `{spec_path}`\n\n{type(error).__name__}: {error}\n"
    storage.write_bytes(lake.file(q, "report.md"), text.encode())
    return q


def _ingest(spec_path: str | Path, root: str, secret: SecretLookup | None) -> RawLayer:
    spec = load_spec(spec_path)
    data_hash = source_hash(spec)
    key = pseudonym_key(spec.name, secret) if spec.pseudonymise_users else None
    if key:  # a new key must not reuse layers made with the old one
        fingerprint = hmac.new(key, b"interestflow-key-fingerprint", hashlib.sha256).hexdigest()
        data_hash = hashlib.sha256((data_hash + fingerprint).encode()).hexdigest()[:16]

    def compute(uri: str) -> dict:
        events = read_events(spec.events)
        if key:
            events["user_id"] = pseudonymise(events["user_id"], key)
        items = read_items(spec.items)
        ignored = {"events": events.attrs["ignored_columns"], "items": items.attrs["ignored_columns"]}
        if spec.k_core:
            events = k_core(events, spec.k_core)
        storage.write_parquet(events, lake.file(uri, "events.parquet"))
        storage.write_parquet(items, lake.file(uri, "items.parquet"))
        return {
            "spec": spec.name,
            "events_uri": spec.events.uri,
            "items_uri": spec.items.uri,
            "n_events": len(events),
            "n_items": len(items),
            "ignored_columns": ignored,
        }

    uri = lake.raw_uri(root, spec.name, data_hash)
    info, _ = lake.build(uri, compute)  # ingested before: what it recorded then
    return RawLayer(
        uri=uri,
        spec=spec.name,
        data_hash=data_hash,
        events_source=spec.events.uri,
        items_source=spec.items.uri,
        ignored_columns=info.get("ignored_columns", {}),
    )
