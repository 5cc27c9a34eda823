"""Ingest: map any CSV, Parquet or JSON Lines event log and item catalogue onto the data contract.

A dataset spec (YAML, see ``specs/``) names the source files and how their columns map
onto the contract (DESIGN.md §3), so a new log needs a spec, not code::

    name: amazon_beauty
    events:
      uri: ../../shared/data/amazon_beauty/interactions.csv.gz   # relative to the spec file
      columns: {user_id: user_id, item_id: item_id, ts: timestamp}
      ts_unit: s            # or ts_format: "%Y-%m-%d %H:%M:%S"
      event_type: review    # a constant, or columns: {event_type: <source column>}
      # columns may also map a review's text and summary: {text: reviewText, summary: summary}
      # event_types: {pv: view, fav: favorite, cart: cart, buy: purchase}   # source value -> contract type
      order_by: seq_pos     # optional: breaks ties between events with the same ts
      # window: {start: 2017-11-25, end: 2017-12-04}   # optional: events outside it are warned about
      # max_user_events_per_hour: 1000                 # optional: more from one user is warned about (bots)
      # max_user_share: 0.2                            # optional: a user with more of all events is warned about
      # partition: day      # or month: how 01_raw and 02_validated keep the events (month for a long, sparse history)
    items:
      uri: ../../shared/data/amazon_beauty/items.csv
      columns: {item_id: item_id, title: title, categories: categories, brand: brand, price: price}
      # from_events: true   # no catalogue file: item id plus the mapped columns, read from the event file
    behaviour:              # optional (components/behaviour.py); these are the defaults
      target: any           # or [purchase]: the event types to predict
      weights: {}           # e.g. {view: 1, favorite: 2, cart: 3, purchase: 4}; unnamed types weigh 1
      exclude: interacted   # interacted | target | none: which history items a ranking leaves out
    filters:
      k_core: 0             # optional k-core filter on users and items
    ids:
      whitespace: strip     # or reject: ids with surrounding whitespace (stripped ones are warned about)
    freshness:              # optional: when is today's input there (flows/nightly.py reschedules until it is)
      max_age_hours: 26     # the newest event at most this old at the scheduled time (absent: the file is enough)
      retry_minutes: 30     # not there yet: Prefect runs the flow again this much later...
      deadline_hours: 6     # ...until this long after the scheduled time; then the run fails, naming what is missing
    privacy:
      pseudonymise_users: false   # true: user ids become keyed hashes at ingest (see below)

Output (01_raw): ``events/``, Parquet partitioned by the event's UTC day or month
(``events/day=2014-03-02/part-0.parquet``, components/storage.py: write_partitioned), with
``user_id, item_id, ts, event_type, value, seq``,
``text`` and ``summary`` where the spec maps them (a review's words, stripped; empty is null),
and ``ts_source`` (the timestamp as written in the source, for validation reports)
and ``items.parquet`` with ``item_id, title, categories, brand, price``. Types are only
*mapped* here (ids to strings, ts parsed, unparseable ts -> NaT); whether the data obeys the
contract is decided by the expectation suites in validation, which need to see the bad
values to report them. Source columns the spec does not map (a reviewer's display name, say)
are dropped here: they never reach the lake, and validation warns naming them. Ids written
as empty, whitespace or a null word (``null``, ``None``, ``NaN``, ``-``) become null ids
(validation rejects them, naming the words); surrounding whitespace is stripped (a warning
counts the ids) or kept for validation to reject, as ``ids.whitespace`` says. ``seq`` is the
event's position in the source (or the ``order_by`` column): the tie-break for events with
equal timestamps, so that day-level logs keep their recorded order.

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

import bz2
import hashlib
import hmac
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from components import lake, storage
from components.behaviour import EVENT_TYPES, Behaviour
from components.lake import RawLayer

EVENT_COLUMNS = ("user_id", "item_id", "ts", "event_type", "value")
REVIEW_COLUMNS = ("text", "summary")
"""Optional event columns (DESIGN.md §3): a review's text and its one-line summary; written to
01_raw and 02_validated only when the spec maps them."""
ITEM_COLUMNS = ("item_id", "title", "categories", "brand", "price")
REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "ts")
REQUIRED_ITEM_COLUMNS = ("item_id",)


class SpecError(ValueError):
    """The dataset spec is wrong or points at something that is not there."""


class InputNotReady(RuntimeError):
    """Today's input is not there yet (no file, or only stale events); ``retry_s``: when to
    look again, ``deadline``: until when (UTC)."""

    def __init__(self, message: str, retry_s: float, deadline: datetime):
        super().__init__(message)
        self.retry_s, self.deadline = retry_s, deadline

    def __reduce__(self):  # Prefect persists failures: keep the fields through pickling
        return (type(self), (str(self), self.retry_s, self.deadline))


@dataclass(frozen=True)
class Freshness:
    """The spec's rule for "today's input is there" (see flows/nightly.py)."""

    max_age_hours: float | None = None
    """The newest event must be at most this old at the scheduled time (None: any age)."""
    retry_minutes: float = 30.0
    deadline_hours: float = 6.0

    def __post_init__(self):
        if (self.max_age_hours is not None and self.max_age_hours <= 0) or self.retry_minutes <= 0:
            raise SpecError("freshness: max_age_hours and retry_minutes must be > 0")
        if self.deadline_hours < 0:
            raise SpecError("freshness: deadline_hours must be >= 0")


@dataclass(frozen=True)
class SourceSpec:
    uri: str
    """Where the file is: a local path (relative to the spec file) or an s3:// URI."""
    columns: dict[str, str]
    """Contract column -> source column."""
    format: str = ""
    """``csv``, ``parquet`` or ``jsonl`` (JSON Lines, plain or gzip); inferred from the file
    name when empty."""
    ts_unit: str | None = None
    """Unit of numeric timestamps (``s``, ``ms``, ``us``, ``ns``)."""
    ts_format: str | None = None
    """strftime format of textual timestamps; ISO-8601 when neither is given."""
    event_type: str | None = None
    """A constant event type for logs that hold one kind of event."""
    order_by: str | None = None
    """Source column that orders events with equal timestamps."""
    event_types: dict | None = None
    """Source value -> contract event type; a value it does not name fails the ingest."""
    window: dict | None = None
    """``{start, end}`` (dates or timestamps, UTC): the log's declared time window; events
    outside it are warned about."""
    max_user_events_per_hour: int = 1000
    """More events than this from one user within one clock hour is warned about (bots)."""
    max_user_share: float = 0.2
    """A user with more than this share of all events is warned about (a bot, a test account)."""
    from_events: bool = False
    """items only: no catalogue file; the item columns are read from the event file."""
    partition: str = "day"
    """events only: 01_raw and 02_validated keep the events by UTC ``day`` (a shop's nightly
    log) or ``month`` (a long, sparse history: a file a day would hold an event or two)."""

    def __post_init__(self):
        fmt = self.format or _infer_format(self.uri)
        if fmt not in FORMATS:
            raise SpecError(f"source {self.uri!r}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        object.__setattr__(self, "format", fmt)
        if self.ts_unit and self.ts_format:
            raise SpecError("ts_unit and ts_format are both given: ts_unit is for numbers, ts_format for text")
        if self.event_type is not None and self.event_type not in EVENT_TYPES:
            raise SpecError(f"event_type {self.event_type!r} is not one of {EVENT_TYPES}")
        if self.event_types is not None:
            if not isinstance(self.event_types, dict) or not self.event_types:
                raise SpecError("event_types must map source values onto contract types, e.g. {pv: view}")
            bad = sorted({str(v) for v in self.event_types.values()} - set(EVENT_TYPES))
            if bad:
                raise SpecError(f"event_types maps onto {bad}, which are not contract types {EVENT_TYPES}")
            object.__setattr__(self, "event_types", {str(k): str(v) for k, v in self.event_types.items()})
        if self.window is not None:
            if not isinstance(self.window, dict) or set(self.window) - {"start", "end"}:
                raise SpecError(f"window must be {{start: <date>, end: <date>}}, got {self.window!r}")
            try:
                parsed = {k: str(pd.Timestamp(str(v), tz="UTC")) for k, v in self.window.items()}
            except ValueError as e:
                raise SpecError(f"window: {e}") from e
            object.__setattr__(self, "window", parsed)
        if int(self.max_user_events_per_hour) < 1:
            raise SpecError("max_user_events_per_hour must be >= 1")
        if not 0 < float(self.max_user_share) <= 1:
            raise SpecError(f"max_user_share must be in (0, 1], got {self.max_user_share!r}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    events: SourceSpec
    items: SourceSpec
    k_core: int = 0
    """Keep only users and items with at least k events (0: no filter)."""
    pseudonymise_users: bool = False
    """Replace user ids by keyed hashes at ingest (key from the environment or a Prefect Secret)."""
    behaviour: Behaviour = Behaviour()
    """What is predicted, how each event type counts, what a ranking leaves out."""
    id_whitespace: str = "strip"
    """Ids with surrounding whitespace: ``strip`` (and warn) or ``reject``."""
    freshness: Freshness | None = None
    """When today's input counts as there; None: whatever is there now."""
    spec_text: str = field(default="", repr=False)


FORMATS = ("csv", "parquet", "jsonl")


def _infer_format(uri: str) -> str:
    name = uri.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.removesuffix(".gz").endswith((".json", ".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".txt", ".csv.bz2")):
        return "csv"
    return ""


def _resolve(uri: str, base: Path) -> str:
    uri = os.path.expandvars(uri)
    if "://" in uri and not (storage.is_s3(uri) or uri.startswith("file://")):
        raise SpecError(f"source {uri!r}: the URI scheme {uri.split('://')[0]}:// is not supported (s3:// or a path)")
    if storage.is_s3(uri) or uri.startswith("file://") or Path(uri).is_absolute():
        return uri
    return str((base / uri).resolve())


# The spec's schema: every key it may hold, at every level, and what its value must be.
# Checked before anything is read, so a typo never silently turns a setting off.
_SOURCE = {"uri": str, "columns": dict, "format": FORMATS}
SPEC_SCHEMA = {
    "name": str,
    "events": {
        **_SOURCE,
        "ts_unit": ("s", "ms", "us", "ns"),
        "ts_format": str,
        "event_type": EVENT_TYPES,
        "event_types": dict,
        "order_by": str,
        "window": {"start": (str, int, float, "date"), "end": (str, int, float, "date")},
        "max_user_events_per_hour": int,
        "max_user_share": (float, int),
        "partition": ("day", "month"),
    },
    "items": {**_SOURCE, "from_events": bool},
    "filters": {"k_core": int},
    "privacy": {"pseudonymise_users": bool},
    "ids": {"whitespace": ("strip", "reject")},
    "freshness": {"max_age_hours": (float, int), "retry_minutes": (float, int), "deadline_hours": (float, int)},
    "behaviour": {"target": (str, list), "weights": dict, "exclude": ("interacted", "target", "none")},
}


def check_spec(raw: object, path: Path, schema: dict = SPEC_SCHEMA, where: str = "") -> None:
    """Raise a :class:`SpecError` naming the spec file, the key path, what was found and what
    is expected, for the first unknown key (with the nearest known one) or ill-typed value."""
    import datetime
    import difflib

    if not isinstance(raw, dict):
        raise SpecError(f"dataset spec {path}: '{where or 'the spec'}' must be a mapping, found {raw!r}")
    for key, value in raw.items():
        at = f"{where}.{key}" if where else str(key)
        if key not in schema:
            near = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f"; known keys: {', '.join(schema)}"
            raise SpecError(f"dataset spec {path}: unknown key '{at}'{hint}")
        want = schema[key]
        if isinstance(want, dict):
            check_spec(value, path, want, at)
            continue
        kinds = want if isinstance(want, tuple) else (want,)
        types = tuple(k for k in kinds if isinstance(k, type))
        allowed = [k for k in kinds if isinstance(k, str) and k != "date"]
        if "date" in kinds:
            types += (datetime.date,)
        ok = (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)) or value in allowed
        if not ok:
            expected = " or ".join([*(t.__name__ for t in types), *(repr(a) for a in allowed)])
            raise SpecError(f"dataset spec {path}: '{at}' is {value!r}; expected {expected}")


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
    check_spec(raw, path)
    base = path.resolve().parent
    sources = {}
    for part, required in (("events", REQUIRED_EVENT_COLUMNS), ("items", REQUIRED_ITEM_COLUMNS)):
        s = dict(raw.get(part) or {})
        if part == "items" and s.get("from_events"):
            if "uri" in s:
                raise SpecError(f"dataset spec {path}: 'items' has both uri and from_events")
            s["uri"] = sources["events"].uri  # the catalogue is read from the event file
            s.setdefault("format", sources["events"].format)
        if "uri" not in s:
            raise SpecError(f"dataset spec {path}: '{part}.uri' is missing")
        try:
            s["uri"] = _resolve(s["uri"], base)
        except SpecError as e:
            raise SpecError(f"dataset spec {path}: '{part}.uri': {e}") from e
        s.setdefault("columns", {})
        unknown = set(s["columns"]) - set((*EVENT_COLUMNS, *REVIEW_COLUMNS) if part == "events" else ITEM_COLUMNS)
        if unknown:
            raise SpecError(f"dataset spec {path}: '{part}.columns' maps unknown contract columns {sorted(unknown)}")
        missing = [c for c in required if c not in s["columns"]]
        if missing:
            raise SpecError(f"dataset spec {path}: '{part}.columns' must map {missing}")
        try:
            sources[part] = SourceSpec(**s)
        except (TypeError, SpecError) as e:
            raise SpecError(f"dataset spec {path}: '{part}': {e}") from e
    ev = sources["events"]
    if "event_type" not in ev.columns and ev.event_type is None:
        raise SpecError(f"dataset spec {path}: give events.event_type (a constant) or map columns.event_type")
    if ev.event_types is not None and "event_type" not in ev.columns:
        raise SpecError(f"dataset spec {path}: events.event_types needs columns.event_type (the source column)")
    try:
        behaviour = Behaviour.from_spec(raw.get("behaviour"))
    except (TypeError, ValueError) as e:
        raise SpecError(f"dataset spec {path}: 'behaviour': {e}") from e
    k_core = int((raw.get("filters") or {}).get("k_core", 0))
    privacy = raw.get("privacy") or {}  # its keys and types are checked by check_spec
    return DatasetSpec(
        name=raw.get("name", path.stem),
        events=sources["events"],
        items=sources["items"],
        k_core=k_core,
        pseudonymise_users=bool(privacy.get("pseudonymise_users", False)),
        behaviour=behaviour,
        id_whitespace=(raw.get("ids") or {}).get("whitespace", "strip"),
        freshness=_freshness(raw.get("freshness"), path),
        spec_text=text,
    )


def _freshness(raw: dict | None, path: Path) -> Freshness | None:
    if raw is None:
        return None
    try:
        return Freshness(**{k: float(v) for k, v in raw.items()})
    except SpecError as e:
        raise SpecError(f"dataset spec {path}: {e}") from e


def check_ready(spec_path: str | Path, scheduled: datetime) -> None:
    """Raise :class:`InputNotReady` when the spec declares a freshness rule that the input does
    not meet yet at ``scheduled`` (the run's scheduled time): the event file is missing, or its
    newest event is older than ``max_age_hours``. Without a rule, whatever is there is today's."""
    try:
        spec = load_spec(spec_path)
    except SpecError:
        return  # a bad spec is the ingest's to reject, with its quarantine report
    rule = spec.freshness
    if rule is None:
        return
    scheduled = pd.Timestamp(scheduled)
    scheduled = scheduled.tz_convert("UTC") if scheduled.tzinfo else scheduled.tz_localize("UTC")
    retry_s, deadline = rule.retry_minutes * 60, (scheduled + pd.Timedelta(hours=rule.deadline_hours)).to_pydatetime()
    src = spec.events
    for f in (src,) if spec.items.from_events else (src, spec.items):
        if not storage.exists(f.uri) or not any(_source_blocks(f, 1)):  # not there, or its copy not begun
            raise InputNotReady(f"source file {f.uri} is not there yet (the spec's freshness rule)", retry_s, deadline)
    if rule.max_age_hours is None:
        return
    oldest_ok = scheduled - pd.Timedelta(hours=rule.max_age_hours)
    try:
        newest = parse_ts(_read_table(src, [src.columns["ts"]])[src.columns["ts"]], src.ts_unit, src.ts_format).max()
    except (SpecError, KeyError, ValueError):
        return  # unreadable, or no such column: the ingest rejects it, with its report
    if pd.isna(newest):
        return  # no timestamp parses (a wrong unit or format): validation rejects it, naming why
    if newest < oldest_ok:
        raise InputNotReady(
            f"source file {src.uri}: the newest event is from {newest}, older than freshness.max_age_hours "
            f"{rule.max_age_hours:g} before the scheduled time {scheduled} (today's events are not in yet)",
            retry_s,
            deadline,
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
    """``u_`` + the first 20 hex digits of HMAC-SHA256(key, id); nulls stay null (validation reports them).
    One HMAC per distinct id (no columnar engine computes a keyed HMAC), mapped onto the events."""
    codes, distinct = pd.factorize(ids)  # a null id: code -1
    hashed = [f"u_{hmac.new(key, str(x).encode(), hashlib.sha256).hexdigest()[:20]}" for x in distinct]
    out = np.asarray([*hashed, None], dtype=object)[codes]  # code -1: the None at the end
    return pd.Series(pd.array(out, dtype="string"), index=ids.index)


def source_hash(spec: DatasetSpec) -> str:
    """Hash of the spec text and both source files' bytes: the key of every lake layer. The
    files are hashed block by block, never held whole."""
    h = hashlib.sha256(spec.spec_text.encode())
    for src in (spec.events,) if spec.items.from_events else (spec.events, spec.items):
        for block in _source_blocks(src):
            h.update(block)
    return h.hexdigest()[:16]


@contextmanager
def _source(src: SourceSpec) -> Iterator[None]:
    """A missing source file, or an S3 one without S3 settings, as a SpecError."""
    try:
        yield
    except FileNotFoundError as e:
        raise SpecError(f"source file {src.uri} does not exist") from e
    except storage.S3NotConfigured as e:
        raise SpecError(f"source file {e}") from e


def _source_blocks(src: SourceSpec, block: int | None = None) -> Iterator[bytes]:
    with _source(src):
        yield from storage.iter_bytes(src.uri, block)


def _read_table(src: SourceSpec, columns: list[str] | None = None) -> pd.DataFrame:
    """The source file as a frame (CSV as text); ``columns``: only these. CSV and Parquet are
    read from the file in chunks (Polars' streaming engine; pyarrow's record batches), never
    first held whole as bytes; an S3 source is downloaded to a temporary file first."""
    try:
        with _source(src), storage.local_copy(src.uri) as path:
            if not path.stat().st_size:
                raise SpecError(f"source file {src.uri} is empty")
            if src.format == "parquet":
                return _read_parquet(path, columns)
            if src.format == "jsonl":
                return _read_jsonl(src, path.read_bytes(), columns)
            return _read_csv(src, path, columns)
    except UnicodeDecodeError as e:
        raise SpecError(f"source file {src.uri}: not UTF-8 text ({e})") from e
    except SpecError:
        raise
    except Exception as e:  # gzip/parquet/csv decoding errors all mean: unreadable file
        raise SpecError(f"source file {src.uri} cannot be read as {src.format}: {type(e).__name__}: {e}") from e


def _read_parquet(path: Path, columns: list[str] | None) -> pd.DataFrame:
    """Record batch by record batch (row groups, not the whole file at once), with the file's
    schema and pandas metadata: the frame that pandas wrote, as ``pq.read_table`` gives it."""
    f = pq.ParquetFile(path)
    schema = f.schema_arrow
    if columns:
        schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
    return pa.Table.from_batches(f.iter_batches(columns=columns), schema=schema).to_pandas()


def _read_csv(src: SourceSpec, path: Path, columns: list[str] | None) -> pd.DataFrame:
    """Every value as text (empty: null), by Polars' streaming engine in chunks (gzip is
    decompressed whole first: Polars cannot stream it). Polars' errors name no line, so on an
    error pandas reads the file again, only to name the line and the fault."""
    name = src.uri.lower()
    sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".tsv.bz2")) else ","
    source: Path | bytes = path
    if name.endswith(".bz2"):  # Polars reads gzip and zstd, not bzip2
        source = bz2.decompress(path.read_bytes())
    scan = pl.scan_csv(source, separator=sep, infer_schema=False, null_values=[""], encoding="utf8")
    try:
        frame = (scan.select(columns) if columns else scan).collect(engine="streaming")
    except Exception:
        pd.read_csv(path, sep=sep, dtype=str, encoding="utf-8", usecols=columns)  # raises, naming the line
        raise  # pandas read it: Polars' own error, then
    # Polars reads a blank line as a row of nulls, where pandas skips it: a row with no value
    # at all (a blank line, or one of separators only) is not an event; it is left out.
    frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
    names = frame.columns
    if len(names) > 1:  # files concatenated with their header lines
        header = frame.with_row_index("_i").filter(pl.all_horizontal(pl.col(c) == c for c in names))["_i"]
        if len(header):
            raise SpecError(
                f"source file {src.uri}: data row {header[0]} (line {header[0] + 2}) repeats the header line "
                f"{','.join(names)}; {len(header)} such row(s) (files concatenated with their headers?)"
            )
    return frame.to_arrow().to_pandas()


def _read_jsonl(src: SourceSpec, data: bytes, columns: list[str] | None) -> pd.DataFrame:
    """JSON Lines (one object a line; gzip-compressed or plain, told by its first bytes) as a
    frame with the values as JSON typed them. pandas parses the file; only when it fails are
    the lines read one by one, to name the first bad one (pandas' error has no line number)."""
    import gzip
    import json

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:  # dtype/convert_dates off: ids such as "0006428320" stay text, times stay numbers
        df = pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_dates=False, encoding="utf-8")
    except (ValueError, TypeError) as e:  # a line that is not JSON, or JSON that is not an object
        # The message names the line and the fault, never the line's content: it may hold a
        # person's name or raw id, and the message goes to the quarantine report and the logs.
        for n, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as bad:
                why = f"{bad.msg} at column {bad.colno}" if isinstance(bad, json.JSONDecodeError) else "not UTF-8"
                raise SpecError(f"source file {src.uri}: line {n} is not JSON ({why})") from None
            if not isinstance(obj, dict):
                raise SpecError(
                    f"source file {src.uri}: line {n} is not a JSON object (a JSON {type(obj).__name__})"
                ) from None
        raise SpecError(f"source file {src.uri} cannot be read as JSON Lines: {type(e).__name__}") from None
    if df.empty and not len(df.columns):
        raise SpecError(f"source file {src.uri} holds no JSON objects")
    return df[columns] if columns else df


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


UNITS_PER_SECOND = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}
_NS_RANGE_S = (pd.Timestamp.min.value / 1e9 + 1, pd.Timestamp.max.value / 1e9 - 1)


def parse_ts(values: pd.Series, unit: str | None, fmt: str | None) -> pd.Series:
    """Parse timestamps to UTC nanoseconds; anything unparseable, or out of the nanosecond range
    (1677..2262: epoch milliseconds read as seconds land in the year ~43000), becomes NaT, which
    validation reports with the value as written (and, for numbers, the unit that would fit)."""
    if unit:
        num = pd.to_numeric(values, errors="coerce")
        seconds = num / UNITS_PER_SECOND[unit]
        num = num.where((seconds > _NS_RANGE_S[0]) & (seconds < _NS_RANGE_S[1]))
        out = pd.to_datetime(num, unit=unit, utc=True, errors="coerce")
    else:  # text ("9999-12-31") or a Parquet timestamp may parse at a coarser unit, out of ns range
        out = pd.to_datetime(values, format=fmt or "ISO8601", utc=True, errors="coerce")
        lo, hi = (pd.Timestamp(t, tz="UTC") for t in (pd.Timestamp.min, pd.Timestamp.max))
        out = out.where((out > lo) & (out < hi))
    return out.astype("datetime64[ns, UTC]")


NULL_LIKE = ("", "null", "none", "nan", "-", "n/a", "<na>")
"""Id values that mean "no id" (compared after stripping, case-insensitively)."""


def clean_ids(values: pd.Series, strip: bool) -> tuple[pd.Series, dict]:
    """Ids as strings: null-like values become null; surrounding whitespace is stripped when
    ``strip``. Returns the ids and what was found, for validation to report: ``null_like``
    (data row -> the value as written, first few) with ``null_like_rows``, and ``padded``
    (distinct ids with surrounding whitespace, their rows, how many are the same as an
    unpadded id, examples)."""
    if pd.api.types.is_float_dtype(values):  # JSON/Parquet ids with a gap become floats: 123.0 -> "123"
        whole = values.dropna()
        if len(whole) and (whole == np.floor(whole)).all() and whole.abs().max() < 2**53:
            values = values.astype("Int64")
    s = values.astype("string")
    stripped = s.str.strip()
    null_like = (stripped.str.lower().isin(NULL_LIKE) & s.notna()).fillna(False).astype(bool)
    padded = (s.notna() & ~null_like & (stripped != s)).fillna(False).astype(bool)
    info: dict = {}
    if null_like.any():
        info["null_like_rows"] = int(null_like.sum())
        info["null_like"] = {int(i): str(v) for i, v in s[null_like].head(5).items()}
    if padded.any():
        distinct = s[padded].unique()
        plain = set(s[~padded & s.notna()].astype(str))
        info["padded"] = {
            "ids": len(distinct),
            "rows": int(padded.sum()),
            "merged": sum(str(x).strip() in plain for x in distinct),
            "examples": [repr(str(x)) for x in distinct[:5]],
        }
    return (stripped if strip else s).mask(null_like), info


def read_events(src: SourceSpec, strip_ids: bool = True) -> pd.DataFrame:
    df = _read_table(src)
    out = _select(df, src, EVENT_COLUMNS)
    ts_col = src.columns["ts"]
    if pd.api.types.is_datetime64_any_dtype(df[ts_col]) and (src.ts_unit or src.ts_format):
        given = "ts_unit" if src.ts_unit else "ts_format"
        raise SpecError(
            f"source file {src.uri}: column {ts_col!r} already holds timestamps ({df[ts_col].dtype}); "
            f"events.{given} is for numbers or text: remove it from the spec"
        )
    out.attrs["ids"] = {}
    for c in ("user_id", "item_id"):
        out[c], found = clean_ids(out[c], strip_ids)
        if found:
            out.attrs["ids"][c] = found
    out["ts_source"] = out["ts"].astype("string")  # kept until validation, to show bad values
    out["ts"] = parse_ts(out["ts"], src.ts_unit, src.ts_format)
    if src.event_type is not None:
        out["event_type"] = src.event_type
    out["event_type"] = out["event_type"].astype("string")
    if src.event_types is not None:
        out["event_type"] = _map_event_types(out["event_type"], src)
    out["value"] = _numeric_or_text(out["value"])
    if src.order_by:
        if src.order_by not in df.columns:
            raise SpecError(f"source file {src.uri}: order_by column {src.order_by!r} is not in the file")
        out["seq"] = pd.to_numeric(df[src.order_by], errors="coerce").astype("float64")
    else:
        out["seq"] = range(len(out))
        out["seq"] = out["seq"].astype("float64")
    review = [c for c in REVIEW_COLUMNS if c in src.columns]
    for c in review:  # a review's words as written; a missing or empty one is null
        out[c] = out[c].astype("string").str.strip().replace("", pd.NA)
    ids = out.attrs["ids"]
    out = out[[*EVENT_COLUMNS, *review, "seq", "ts_source"]]
    out.attrs.update(ignored_columns=_unmapped(df, src), ids=ids)
    return out


def _map_event_types(values: pd.Series, src: SourceSpec) -> pd.Series:
    """Source values -> contract types by ``src.event_types``; any value it does not name
    (nulls included) stops the ingest with the values and their counts."""
    mapped = values.map(src.event_types)
    unmapped = values[mapped.isna()].fillna("<null>").value_counts()
    if len(unmapped):
        counts = ", ".join(f"{v!r}: {n}" for v, n in unmapped.head(10).items())
        raise SpecError(
            f"source file {src.uri}: column {src.columns['event_type']!r}: {len(unmapped)} value(s) that "
            f"events.event_types does not map ({int(unmapped.sum())} of {len(values)} rows): {counts}; "
            f"it maps {sorted(src.event_types)}"
        )
    return mapped.astype("string")


def read_items(src: SourceSpec, strip_ids: bool = True) -> pd.DataFrame:
    df = _read_table(src)
    if src.from_events:  # one row per item: its latest non-empty value of each mapped column
        item_col = src.columns["item_id"]
        if item_col not in df.columns:
            raise SpecError(f"source file {src.uri}: items.from_events: column {item_col!r} is not in the file")
        df[item_col], _ = clean_ids(df[item_col], strip_ids)  # as the events' ids are, before grouping
        df = df.groupby(item_col, sort=False, dropna=False).last().reset_index()
    out = _select(df, src, ITEM_COLUMNS)
    out["item_id"], found = clean_ids(out["item_id"], strip_ids)
    for c in ("title", "categories", "brand"):
        out[c] = out[c].astype("string")
    out["price"] = _numeric_or_text(out["price"])
    out = out[list(ITEM_COLUMNS)]
    out.attrs.update(ignored_columns=_unmapped(df, src), ids={"item_id": found} if found else {})
    return out


def _unmapped(df: pd.DataFrame, src: SourceSpec) -> list[str]:
    """Columns of the file that the spec does not map (not used; validation warns)."""
    used = {*src.columns.values(), src.order_by}
    return [] if src.from_events else [str(c) for c in df.columns if c not in used]


def _numeric_or_text(s: pd.Series) -> pd.Series:
    """float64 when every non-empty value is a number: CSV text that parses, and every Arrow
    integer width (signed and unsigned), decimal and float column; otherwise the values as
    they are, so validation reports the ones that are not numbers."""
    kinds = pd.api.types
    if kinds.is_bool_dtype(s) or kinds.is_datetime64_any_dtype(s) or kinds.is_timedelta64_dtype(s):
        return s  # true/false, times and durations are not numbers (validation says so)
    # A bool can hide only in these inferred kinds (a C pass over the column; the Python test
    # per value that follows runs only on such mixed columns: at x50 it took 6 s of an all-null one)
    mixed = s.dtype == object and kinds.infer_dtype(s, skipna=True) in ("boolean", "mixed", "mixed-integer")
    if mixed and s.map(lambda v: isinstance(v, bool)).any():
        return s
    num = pd.to_numeric(s, errors="coerce")
    if np.isinf(num).any():
        return s.astype(object)  # "inf" is not a price or a value
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
        q = quarantine_report(root, f"ingest-{Path(str(spec_path)).stem}", spec_path, e)
        raise SpecError(f"{e}\nReport: {lake.file(q, 'report.md')}") from e


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
        strip = spec.id_whitespace == "strip"
        events = read_events(spec.events, strip)
        if key:
            events["user_id"] = pseudonymise(events["user_id"], key)
        items = read_items(spec.items, strip)
        id_fixes = {f"events.{c}": v for c, v in events.attrs["ids"].items()}
        id_fixes.update({f"items.{c}": v for c, v in items.attrs["ids"].items()})
        if key and "padded" in id_fixes.get("events.user_id", {}):  # no raw user id in the lake, not even here
            id_fixes["events.user_id"]["padded"]["examples"] = []
        ignored = {"events": events.attrs["ignored_columns"], "items": items.attrs["ignored_columns"]}
        if spec.items.from_events:  # the catalogue's columns are used, by the items
            ignored["events"] = [c for c in ignored["events"] if c not in spec.items.columns.values()]
        if spec.k_core:
            events = k_core(events, spec.k_core)
        parts = storage.write_partitioned(events, lake.file(uri, lake.EVENTS), spec.events.partition)
        storage.write_parquet(items, lake.file(uri, "items.parquet"))
        return {
            "partitions": len(parts),
            "spec": spec.name,
            "events_uri": spec.events.uri,
            "items_uri": spec.items.uri,
            "n_events": len(events),
            "n_items": len(items),
            "ignored_columns": ignored,
            "behaviour": asdict(spec.behaviour),
            "id_fixes": id_fixes,
            "review_columns": [c for c in REVIEW_COLUMNS if c in spec.events.columns],
        }

    uri = lake.raw_uri(root, spec.name, data_hash)
    info, _ = lake.build(uri, compute, layout=lake.EVENTS_LAYOUT)  # ingested before: what it recorded then
    return RawLayer(
        uri=uri,
        spec=spec.name,
        data_hash=data_hash,
        events_source=spec.events.uri,
        items_source=spec.items.uri + (" (items derived from the events)" if spec.items.from_events else ""),
        ignored_columns=info.get("ignored_columns", {}),
        behaviour=spec.behaviour,
        window=spec.events.window,
        max_user_events_per_hour=int(spec.events.max_user_events_per_hour),
        max_user_share=float(spec.events.max_user_share),
        ts_unit=spec.events.ts_unit,
        id_whitespace=spec.id_whitespace,
        id_fixes=info.get("id_fixes", {}),
        review_columns=tuple(info.get("review_columns", ())),
    )
