"""The lake on local disk and on a real S3-compatible server (SeaweedFS from PyPI, real SigV4
credentials), and ingest from s3:// sources."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import sample_frames, write_slice

from components import events, pipeline, pyfunc, storage, tracking
from components import lake as lake_
from testkit import faults

BUCKET = faults.S3_BUCKET


def test_local_writes_are_atomic_and_layers_need_their_marker(tmp_path):
    uri = str(tmp_path / "layer")
    storage.write_parquet(pd.DataFrame({"a": [1, 2]}), storage.join(uri, "t.parquet"))
    assert not lake_.is_complete(uri)
    lake_.mark_complete(uri, {"rows": 2})
    assert lake_.is_complete(uri)
    assert not [p for p in Path(uri).iterdir() if p.name.endswith(".tmp")]
    assert storage.read_parquet(storage.join(uri, "t.parquet"))["a"].tolist() == [1, 2]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    with faults.seaweed(tmp_path_factory.mktemp("seaweed")) as root:
        yield root


def test_s3_round_trip_and_missing_keys(seaweed):
    uri = storage.join(seaweed, "t", "x.json")
    assert not storage.exists(uri)
    storage.write_json({"a": 1}, uri)
    assert storage.exists(uri) and storage.read_json(uri) == {"a": 1}
    missing = storage.join(seaweed, "t", "nope")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(missing)
    with pytest.raises(FileNotFoundError):
        next(storage.iter_bytes(missing))
    with pytest.raises(FileNotFoundError), storage.local_copy(missing):
        pass
    written = storage.read_bytes(uri)
    assert b"".join(storage.iter_bytes(uri, 3)) == written
    with storage.local_copy(uri) as path:  # downloaded to a temporary file, removed after
        assert path.read_bytes() == written
    assert not path.exists()


def test_data_stages_read_s3_sources_and_write_an_s3_lake(seaweed, tmp_path, monkeypatch):
    monkeypatch.delenv(lake_.TEXT_CACHE_ENV)  # the text cache in the S3 lake too, not the session's shared one
    ev, items = sample_frames(100)
    local = write_slice(tmp_path, ev, items)
    for name in ("events.csv", "items.csv"):
        storage.upload_file(tmp_path / name, storage.join(seaweed, "raw", name))
    spec = tmp_path / "s3spec.yaml"
    spec.write_text(
        local.read_text()
        .replace("uri: events.csv", f"uri: {seaweed}/raw/events.csv")
        .replace("uri: items.csv", f"uri: {seaweed}/raw/items.csv")
    )
    lake = storage.join(seaweed, "lake")
    ds = pipeline.data_path(spec, lake, 2, 0)
    assert ds.uri.startswith("s3://") and lake_.is_complete(ds.uri)
    assert storage.read_parquet(storage.join(ds.features.uri, "users.parquet"))["user_id"].nunique() == 100
    assert events.ingest(spec, lake).data_hash == ds.data_hash  # same input, same key: reused
    assert storage.exists(lake_.text_cache_uri(lake, ds.features.text_uri.rsplit("text-", 1)[1]))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_partitions_give_back_exactly_the_frame_written(where, seaweed, tmp_path):
    """01_raw and 02_validated keep events by UTC day or month (DESIGN.md §2); reading them
    back gives the frame that was written (its row order, types, rows without a timestamp, no
    rows at all), on disk and on S3, exactly as one Parquet file does."""
    root = str(tmp_path) if where == "local" else seaweed
    ts = ["2014-03-02 23:59:59", None, "2014-03-01 00:00:00", "1969-12-31 10:00:00", "2014-03-02 00:00:00"]
    df = pd.DataFrame(
        {
            "user_id": pd.array(["a", "b", None, "c", "a"], dtype="string"),
            "ts": pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]"),
            "value": [1.0, None, 3.0, 4.0, 5.0],
            "seq": [0.0, 1.0, 2.0, 3.0, 4.0],
        }
    )
    for name, frame, by in (("days", df, "day"), ("months", df, "month"), ("none", df.iloc[:0], "day")):
        one, parts = storage.join(root, name, "one.parquet"), storage.join(root, name, "events")
        storage.write_parquet(frame, one)
        written = storage.write_partitioned(frame, parts, by)
        pd.testing.assert_frame_equal(storage.read_partitioned(parts), storage.read_parquet(one))
        assert storage.partitions(parts) == written and storage.partitioned_by(parts) == by
    assert written == {"day=none": 0}
    assert storage.partitions(storage.join(root, "days", "events")) == {
        "day=none": 1,
        "day=1969-12-31": 1,
        "day=2014-03-01": 1,
        "day=2014-03-02": 2,
    }
    assert storage.partitions(storage.join(root, "months", "events")) == {
        "month=none": 1,
        "month=1969-12": 1,
        "month=2014-03": 3,
    }
    part = storage.join(root, "days", "events", "day=2014-03-02", "part-0.parquet")
    assert storage.read_parquet(part)["seq"].tolist() == [0.0, 4.0]  # a day's rows, in their order
    some = storage.read_partitioned(storage.join(root, "days", "events"), ["seq"], ["day=2014-03-02"], data_rows=True)
    assert some["seq"].to_dict() == {0: 0.0, 4: 4.0}  # indexed by their rows in the frame written
    rows = storage.read_partitioned_rows(storage.join(root, "days", "events"), ["user_id", "seq"])  # Polars, unordered
    assert rows.columns == ["user_id", "seq", "_row"] and sorted(rows["_row"].to_list()) == [0, 1, 2, 3, 4]
    assert rows.sort("_row")["user_id"].to_list() == ["a", "b", None, "c", "a"]


def test_wrong_credentials_fail_clearly(seaweed, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    storage.reset_clients()
    try:
        with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|403"):
            storage.read_bytes(storage.join(seaweed, "raw", "events.csv"))
    finally:
        monkeypatch.undo()
        storage.reset_clients()


@pytest.fixture
def mlflow_server(seaweed, tmp_path, monkeypatch):
    """`mlflow server` (SQLite backend) storing artifacts in SeaweedFS; clients go through it."""
    with faults.mlflow_server(tmp_path / "mlflow", f"{seaweed}/mlartifacts") as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", "s3flow")
        yield uri


def _task_runs(flow_run_id) -> dict[str, int]:
    """Each task run of a flow run: name -> how many times it ran (1 + retries)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    return {r.name: r.run_count for r in runs}


@pytest.mark.slow
def test_nightly_on_s3_and_an_mlflow_server_survives_faults(seaweed, mlflow_server, tmp_path, monkeypatch):
    """The whole flow with the lake at s3:// and MLflow artifacts in S3 behind a tracking
    server, both behind a fault-injecting proxy (testkit/faults.py; the real SeaweedFS and
    mlflow server sit behind it).

    Night 1: the first 6 PUTs of the raw layer's items fail (more than boto3's 5 attempts, so the
    ingest task itself is retried with backoff) and 3 dataset reads fail (boto3's own
    retries absorb them): the flow completes and promotes. Night 2 (new settings, so it
    trains): the registry refuses every write; the register task retries, then the flow
    fails with a message naming the registry, and nothing is registered or promoted.
    """
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import nightly

    spec = write_slice(tmp_path / "src", *sample_frames(150), name="s3flow")
    lake = storage.join(seaweed, "flowlake")
    s3_rules = [  # one object's PUTs (the day partitions are written several at a time)
        faults.Rule("PUT", "/flowlake/01_raw/[^/]+/items.parquet", times=6),
        faults.Rule("GET", "/flowlake/04_datasets/", times=3),
    ]
    registry_down = faults.Rule(None, "registered-models/create|model-versions/create", times=None)
    with (
        faults.FaultProxy(faults.S3_PORT, s3_rules) as s3,
        faults.FaultProxy(int(mlflow_server.rsplit(":", 1)[1]), [registry_down]) as mlf,
        prefect_test_harness(server_startup_timeout=120),
    ):
        monkeypatch.setenv("INTERESTFLOW_S3_ENDPOINT_URL", s3.url)
        storage.reset_clients()
        registry_down.times = 0  # night 1: the registry is up
        state = nightly(
            spec=str(spec), lake=lake, families=["mf"], folds=2, max_epochs=2, profiles=False, return_state=True
        )
        out = state.result()
        assert s3.injected == 9 and all(r.hits == r.times for r in s3_rules)
        ingest_runs = [
            n for name, n in _task_runs(state.state_details.flow_run_id).items() if name.startswith("ingest")
        ]
        assert ingest_runs == [2]  # the task ran twice: one retry

        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlf.url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # MLflow's own HTTP retries, kept short here
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
        registry_down.times = None  # night 2: the registry is down
        with pytest.raises(tracking.RegistryUnavailable, match="MLflow registry .* did not accept .*s3flow-mf"):
            nightly(spec=str(spec), lake=lake, families=["mf"], folds=1, max_epochs=1, profiles=False)
        assert registry_down.hits >= 4  # the first attempt and the task's 3 retries
    r = out.results[0]
    assert r.decision.promote and r.report.test_recommendations_uri.startswith("s3://")
    assert storage.exists(out.recommendations.uri) and out.recommendations.uri.startswith("s3://")
    run = tracking.client().get_run(r.report.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    keys = storage.s3_client().list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/")["Contents"]
    assert any(k["Key"].endswith("recommender.pt") for k in keys)  # the model file sits in S3
    rec = pyfunc.load("models:/s3flow-mf@champion")  # loaded back through the server
    assert rec.family == "mf" and len(rec.item_ids) > 0
    assert [v.version for v in tracking.client().search_model_versions("name='s3flow-mf'")] == ["1"]
    assert tracking.alias_version("s3flow-mf", "champion") == "1"


def test_s3_without_settings_fails_at_once_and_sends_nothing(monkeypatch):
    """No endpoint or credentials: a clear error naming the URI and the missing settings, before
    botocore could search its credential chain (which asks the instance-metadata address,
    169.254.169.254) or reach real AWS. An audit hook sees every connection attempt of the
    process, loopback included: there must be none."""
    import sys

    for k in (*storage.ENDPOINT_ENV, *storage.CREDENTIAL_ENV, "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    storage.reset_clients()
    seen: list = []
    watching = [True]

    def hook(event, args):
        if event == "socket.connect" and watching[0]:
            seen.append(args[1])

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one stops recording below
    try:
        for call in (lambda: storage.read_bytes("s3://shop/events.csv"), lambda: storage.exists("s3://shop/x")):
            with pytest.raises(storage.S3NotConfigured) as err:
                call()
            msg = str(err.value)
            assert "s3://shop/" in msg and "INTERESTFLOW_S3_ENDPOINT_URL" in msg and "AWS_ACCESS_KEY_ID" in msg
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # an endpoint but no credentials
        with pytest.raises(storage.S3NotConfigured, match="AWS_SECRET_ACCESS_KEY"):
            storage.read_bytes("s3://shop/events.csv")
    finally:
        watching[0] = False
        storage.reset_clients()
    assert seen == []


def test_only_transient_errors_are_retried(tmp_path):
    """The one retry rule of every task (tasks/_retry.py), on the errors the clients raise."""
    import requests
    from botocore.exceptions import ClientError, EndpointConnectionError

    from components.training import TrainingFailed
    from components.validation import DataValidationError

    home = tmp_path / "home"

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from components import runlock

    def locked() -> BaseException:
        try:
            with runlock.hold(home, "first", wait_s=0), runlock.hold(home, "second", wait_s=0):
                pass
        except runlock.RunLocked as e:
            return e
        raise AssertionError("the second hold did not refuse")

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    def wrapped(cause: BaseException) -> BaseException:  # as tracking.register wraps what MLflow raised
        try:
            raise cause
        except BaseException as e:
            try:
                raise tracking.RegistryUnavailable("the registry did not accept model x") from e
            except tracking.RegistryUnavailable as outer:
                return outer

    transient = [
        client_error("ServiceUnavailable", 503),
        client_error("SlowDown", 503),
        client_error("Throttling", 400),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("timed out"),
        wrapped(requests.exceptions.ConnectionError("refused")),
        wrapped(requests.exceptions.RetryError("too many 503 error responses")),
        TrainingFailed("training mf/final failed (exit -9)", -9),
        MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE),  # the SQLite store, busy
    ]
    permanent = [
        client_error("AccessDenied", 403),
        client_error("NoSuchBucket", 404),
        events.SpecError("dataset spec x: unknown key 'y'"),
        DataValidationError("1 critical expectation(s) failed"),
        storage.S3NotConfigured("s3://x: S3 is not configured"),
        FileNotFoundError("gone.csv"),
        ValueError("TrainConfig: lr must be > 0"),
        TrainingFailed("training mf/final failed (exit 1)", 1),
        tracking.RegistryUnavailable("the registry did not accept model x"),
        MlflowException("RESOURCE_DOES_NOT_EXIST", error_code=RESOURCE_DOES_NOT_EXIST),
        locked(),  # raised "from None" over filelock's Timeout (a TimeoutError): not a transport error
    ]
    from prefect.states import Failed

    from tasks._retry import transient as retry

    # Prefect hands the retry condition the failed state, holding the error
    assert [retry(None, None, Failed(data=e)) for e in transient] == [True] * len(transient)
    assert [retry(None, None, Failed(data=e)) for e in permanent] == [False] * len(permanent)
