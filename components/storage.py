"""The lake: one URI scheme for local folders and S3, and the only boto3 code.

A lake root is either a local path (``lake``, ``/abs/lake``, ``file:///abs/lake``) or
``s3://bucket/prefix``. S3 endpoint and credentials come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``INTERESTFLOW_S3_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL``), never from code. Both must be set: without them the first S3 call
fails at once naming the URI and the missing settings (:class:`S3NotConfigured`), rather
than letting botocore search its credential chain (which asks the cloud instance-metadata
address) or fall back to real AWS.

Writes are atomic: a local file is written to a temporary name and renamed; an S3 PUT
is atomic per object. Layers (folders of files) and their completion markers are
components/lake.py's business.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def join(root: str, *parts: str) -> str:
    """Join URI parts with '/' (works for both local paths and s3:// URIs)."""
    out = root.rstrip("/")
    for p in parts:
        out += "/" + str(p).strip("/")
    return out


def name(uri: str) -> str:
    """The last part of a URI: a layer folder's name is its key (``<spec>-<data hash>...``)."""
    return uri.rstrip("/").split("/")[-1]


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return Path(uri)


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


ENDPOINT_ENV = ("INTERESTFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class S3NotConfigured(ValueError):
    """An s3:// URI with no endpoint or credentials in the environment (not retried)."""


@lru_cache(maxsize=4)
def _s3_client(endpoint_url: str, credentials_key: int):
    import boto3
    from botocore.config import Config

    # A session of its own, with the credentials given: boto3's default session would keep the
    # first credentials it saw, and its credential chain would ask the instance-metadata address.
    return boto3.session.Session(
        aws_access_key_id=os.environ[CREDENTIAL_ENV[0]],
        aws_secret_access_key=os.environ[CREDENTIAL_ENV[1]],
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),  # temporary (STS) credentials
    ).client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def s3_client(uri: str = "s3://"):
    """A boto3 S3 client for the configured endpoint (path-style addressing); ``uri``, the
    object it is for, names what could not be reached when the settings are missing."""
    endpoint = next((os.environ[k] for k in ENDPOINT_ENV if os.environ.get(k)), None)
    missing = [] if endpoint else [" or ".join(ENDPOINT_ENV)]
    missing += [k for k in CREDENTIAL_ENV if not os.environ.get(k)]
    if missing:
        raise S3NotConfigured(
            f"{uri}: S3 is not configured: set {', '.join(missing)} (for AWS itself, "
            "AWS_ENDPOINT_URL=https://s3.<region>.amazonaws.com); no request was sent"
        )
    # Cached per endpoint and credentials (by hash, so the secret is not a cache key).
    return _s3_client(endpoint, hash((*(os.environ[k] for k in CREDENTIAL_ENV), os.environ.get("AWS_SESSION_TOKEN"))))


_THROTTLED = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "RequestLimitExceeded"}
_MLFLOW_BUSY = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}


def is_transient(error: BaseException) -> bool:
    """True for errors that a retry can fix: a refused or dropped connection, a timeout, an
    HTTP 5xx, throttling (429, SlowDown). Looks through the chain of causes, so a wrapped
    transport error counts. Everything else (bad data, a missing file, a 4xx) is not."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ConnectionError | TimeoutError):
            return True
        name = type(error).__name__
        if name in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
            "ResponseStreamingError",
            "IncompleteReadError",
            "ProtocolError",
        ):
            return True  # botocore's and urllib3's transport errors (a connection dropped mid-body too)
        if name in ("ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError"):
            return True  # requests' (MLflow's client), not subclasses of the builtin ConnectionError
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(response, dict):  # botocore ClientError
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if response.get("Error", {}).get("Code") in _THROTTLED:
                return True
        if getattr(error, "error_code", None) in _MLFLOW_BUSY:  # a locked SQLite store, a rate limit
            return True
        if name == "RestException":  # the MLflow server's answer: its error code maps to an HTTP status
            status = status or _http_status(error)
        if name == "RetryError" or (status is not None and (int(status) >= 500 or int(status) == 429)):
            return True  # requests' RetryError: urllib3 gave up on 5xx answers
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def _http_status(error: BaseException) -> int | None:
    try:
        return int(error.get_http_status_code())
    except (AttributeError, TypeError, ValueError):
        return None


def reset_clients() -> None:
    """Forget the cached S3 clients, so the next call builds one from the environment as it is now.

    For when the S3 endpoint or credentials in the environment change within a process, e.g.
    tests and benchmarks switching between servers (or to a fault-injecting proxy in front of one).
    """
    _s3_client.cache_clear()


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            return s3_client(uri).get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3_client(uri).exceptions.NoSuchKey as e:
            raise FileNotFoundError(uri) from e
    return local_path(uri).read_bytes()


BLOCK = 8 << 20  # bytes a block of :func:`iter_bytes`


def iter_bytes(uri: str, block: int | None = None) -> Iterator[bytes]:
    """The file's bytes in blocks of at most ``block`` (default :data:`BLOCK`): a large file
    hashed without holding it whole."""
    block = block or BLOCK
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            body = s3_client(uri).get_object(Bucket=bucket, Key=key)["Body"]
        except s3_client(uri).exceptions.NoSuchKey as e:
            raise FileNotFoundError(uri) from e
        with body:
            yield from body.iter_chunks(block)
        return
    with local_path(uri).open("rb") as f:
        while data := f.read(block):
            yield data


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path to read ``uri`` from, for readers that stream a file (Polars, pyarrow): the
    file itself, or an S3 object downloaded in parts (boto3) to a temporary file, removed after."""
    if not is_s3(uri):
        path = local_path(uri)
        if not path.exists():
            raise FileNotFoundError(uri)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="interestflow-") as tmp:
        path = Path(tmp) / name(uri)
        try:
            download_file(uri, path)
        except Exception as e:
            if _not_found(e):
                raise FileNotFoundError(uri) from e
            raise
        yield path


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: nobody ever sees a half-written file."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        s3_client(uri).put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            s3_client(uri).head_object(Bucket=bucket, Key=key)
            return True
        except Exception as e:
            if _not_found(e):
                return False
            raise
    return local_path(uri).exists()


def _not_found(error: BaseException) -> bool:
    """botocore's ClientError for a missing key (a HEAD or a download answers 404)."""
    return getattr(error, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def upload_file(path: str | Path, uri: str) -> None:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        s3_client(uri).upload_file(str(path), bucket, key)
    else:
        write_bytes(uri, Path(path).read_bytes())


def download_file(uri: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        s3_client(uri).download_file(bucket, key, str(path))
    else:
        path.write_bytes(local_path(uri).read_bytes())
    return path


def read_parquet(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The file as a frame; ``columns``: only these."""
    return read_table(uri, columns).to_pandas()


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """The file as an Arrow table (list columns stay flat values and offsets, no array object
    per row); ``columns``: only these."""
    source = io.BytesIO(read_bytes(uri)) if is_s3(uri) else local_path(uri)
    return pq.read_table(source, columns=columns)


def write_parquet(df: pd.DataFrame, uri: str, metadata: dict[str, str] | None = None) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    write_table(table, uri)


def write_table(table: pa.Table, uri: str) -> None:
    """An Arrow table as one Parquet file."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(uri, buf.getvalue())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(obj: Any, uri: str) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


# -- event-time partitions (01_raw, 02_validated: DESIGN.md §2) ---------------------------------
PARTITION_BY = {"day": "D", "month": "M"}
"""The partition granularities, as numpy datetime units: a shop's nightly log by day; a long,
sparse history (Beauty: 12 years of reviews, one or two a day) by month."""
MANIFEST = "_partitions.json"
NO_TIME = "none"
"""The partition of rows without a timestamp (validation rejects them, naming the partition)."""
_NAT = np.iinfo(np.int64).min
_IO_THREADS = 8  # partition files written and read at once: S3 round trips overlap


def partition_codes(ts: pd.Series, by: str = "day") -> np.ndarray:
    """Each timestamp's UTC day (or month) since 1970-01 as an integer; a missing one: the
    smallest int64."""
    return pd.DatetimeIndex(ts).asi8.view("datetime64[ns]").astype(f"datetime64[{PARTITION_BY[by]}]").view(np.int64)


def partition_name(code: int, by: str = "day") -> str:
    """A :func:`partition_codes` code as its partition: ``day=2014-03-02``, ``month=2014-03``,
    ``day=none``."""
    return f"{by}={NO_TIME if code == _NAT else np.datetime64(int(code), PARTITION_BY[by])}"


def write_partitioned(df: pd.DataFrame, uri: str, by: str = "day", ts: str = "ts") -> dict[str, int]:
    """Write ``df`` as Parquet partitioned by the UTC day (``by="month"``: month) of column
    ``ts``: ``<uri>/day=2014-03-02/part-0.parquet`` (``day=none``: rows without a timestamp),
    then ``<uri>/_partitions.json`` (partition -> rows), last, which names the files to read.

    Every row keeps its position in ``df`` (column ``_row``), so :func:`read_partitioned`
    gives back exactly ``df``, and a report's data row stays the same whichever partition
    holds it. Returns partition -> rows."""
    table = pa.Table.from_pandas(df.assign(_row=np.arange(len(df), dtype=np.int64)), preserve_index=False)
    # Polars splits the rows by partition, each in the frame's order (x50: 1.6 s; pyarrow's
    # take of the rows sorted by partition: 9.5 s); each part goes back to the frame's schema.
    code = "_partition"
    frame = pl.from_arrow(table).with_columns(pl.Series(code, partition_codes(df[ts], by)))
    parts = {
        key: part
        for (key,), part in frame.partition_by(code, maintain_order=True, include_key=False, as_dict=True).items()
    }
    if not parts:  # an empty frame: one empty file keeps the columns
        parts = {_NAT: frame.drop(code)}
    rows = {partition_name(c, by): parts[c].height for c in sorted(parts)}

    def write(c: int) -> None:
        buf = io.BytesIO()
        pq.write_table(parts[c].to_arrow().cast(table.schema), buf)
        write_bytes(join(uri, partition_name(c, by), "part-0.parquet"), buf.getvalue())

    with ThreadPoolExecutor(_IO_THREADS) as pool:
        list(pool.map(write, sorted(parts)))
    write_json({"by": by, "rows": rows}, join(uri, MANIFEST))
    return rows


def partitions(uri: str) -> dict[str, int]:
    """The partitions of a :func:`write_partitioned` folder: ``day=2014-03-02`` -> rows."""
    return read_json(join(uri, MANIFEST))["rows"]


def partitioned_by(uri: str) -> str:
    """``day`` or ``month``: how a :func:`write_partitioned` folder is partitioned."""
    return read_json(join(uri, MANIFEST))["by"]


def read_partitioned_rows(uri: str, columns: list[str] | None = None, names: list[str] | None = None) -> pl.DataFrame:
    """The rows of a :func:`write_partitioned` folder as a Polars frame, with ``_row`` (each
    row's position in the frame written), in file order: for stages that sort or group them
    anyway. ``columns``: only these; ``names``: only these partitions."""
    return _read_partitions(uri, columns, names)[0]


def read_partitioned(
    uri: str, columns: list[str] | None = None, names: list[str] | None = None, data_rows: bool = False
) -> pd.DataFrame:
    """A :func:`write_partitioned` folder back as the frame that was written (its rows in their
    order, a fresh index); ``columns``: only these; ``names``: only these partitions;
    ``data_rows``: the index is each row's position in the frame written (for reports on
    some of its partitions)."""
    rows, written = _read_partitions(uri, columns, names)
    rows = rows.sort("_row")
    table = rows.drop("_row").to_arrow()
    # Back to the types written (Polars reads text as large strings), with the frame's own
    # pandas metadata, so the frame comes back with the dtypes it had.
    fields = [written.field(c) for c in table.column_names]
    df = table.cast(pa.schema(fields, metadata=written.metadata)).to_pandas()
    if data_rows:
        df.index = pd.Index(rows["_row"].to_numpy())
    return df


def _read_partitions(uri: str, columns: list[str] | None, names: list[str] | None) -> tuple[pl.DataFrame, pa.Schema]:
    """(the rows, unordered, with ``_row``; the Arrow schema written). Polars reads the files,
    on its own threads (at Beauty x50, 10M rows in 133 files: 0.6 s; pyarrow's dataset 5 s)."""
    paths = [join(uri, name, "part-0.parquet") for name in (partitions(uri) if names is None else names)]
    cols = None if columns is None else [*columns, "_row"]
    if is_s3(uri):
        with ThreadPoolExecutor(_IO_THREADS) as pool:
            blobs = list(pool.map(read_bytes, paths))
        rows = pl.concat([pl.read_parquet(io.BytesIO(b), columns=cols) for b in blobs], how="vertical")
        return rows, pq.read_schema(io.BytesIO(blobs[0]))
    local = [str(local_path(p)) for p in paths]
    return pl.read_parquet(local, columns=cols, hive_partitioning=False), pq.read_schema(local[0])
