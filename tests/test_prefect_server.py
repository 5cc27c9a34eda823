"""The deployments against a real local Prefect server (SQLite), started and stopped by this test.

`prefect deploy --all` from prefect.yaml, the nightly schedule producing upcoming runs,
the `train` deployment triggered with parameters and executed by a `process` worker run
once, and the MLflow run and model version that flow run left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, sample_frames, write_slice

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect(env: dict, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "INTERESTFLOW_HOME": str(root / "home"),
        "INTERESTFLOW_MODEL_PREFIX": "srv",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped with everything it started
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"Prefect server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(1)
        yield env, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def api(env: dict, path: str, body: dict) -> list | dict:
    req = urllib.request.Request(
        env["PREFECT_API_URL"] + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


@pytest.mark.slow
def test_deploy_schedule_trigger_and_run_with_a_worker(server):
    env, root = server
    prefect(env, "work-pool", "create", "interestflow-local", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all", timeout=300)
    deployments = {d["name"]: d for d in api(env, "/deployments/filter", {})}
    assert set(deployments) == {"nightly-retrain", "train", "promote", "recommend", "catalogue"}
    nightly = deployments["nightly-retrain"]
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

    # The scheduler service fills in upcoming nightly runs at 02:00 UTC.
    deadline, upcoming = time.time() + 90, []
    while time.time() < deadline and not upcoming:
        runs = api(env, "/flow_runs/filter", {"deployments": {"id": {"any_": [nightly["id"]]}}})
        upcoming = [r for r in runs if r["state_type"] == "SCHEDULED"]
        time.sleep(2)
    assert upcoming, "no scheduled runs for nightly-retrain"
    assert all(r["expected_start_time"][11:16] == "02:00" for r in upcoming)

    spec = write_slice(root / "src", *sample_frames(150), name="srvslice")
    params = {"spec": str(spec), "lake": str(root / "lake"), "families": ["mf"], "folds": 2, "max_epochs": 2}
    out = prefect(env, "deployment", "run", "nightly-retrain/train", "--params", json.dumps(params))
    assert "Created flow run" in out
    prefect(env, "worker", "start", "--pool", "interestflow-local", "--run-once", timeout=600)

    train_runs = api(env, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployments["train"]["id"]]}}})
    assert [r["state_type"] for r in train_runs] == ["COMPLETED"], train_runs
    flow_run_id = train_runs[0]["id"]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'home' / 'mlflow.db'}")
    versions = client.search_model_versions("name='srv-mf'")
    assert [str(v.version) for v in versions] == ["1"]
    run = client.get_run(versions[0].run_id)
    assert run.data.tags["interestflow.flow_run_id"] == flow_run_id
    assert str(client.get_model_version_by_alias("srv-mf", "champion").version) == "1"


@pytest.mark.slow
def test_two_nightly_runs_started_together_one_runs_one_is_cancelled(server):
    """The deployment concurrency limit (1, CANCEL_NEW): of two nightly runs due at once,
    the worker runs one and the server cancels the other."""
    env, root = server
    deployments = {d["name"]: d for d in api(env, "/deployments/filter", {})}
    if "nightly-retrain" not in deployments:  # this test alone: deploy first
        prefect(env, "work-pool", "create", "interestflow-local", "--type", "process")
        prefect(env, "--no-prompt", "deploy", "--all", timeout=300)
        deployments = {d["name"]: d for d in api(env, "/deployments/filter", {})}
    spec = write_slice(root / "src2", *sample_frames(120), name="concurrent")
    params = {
        "spec": str(spec),
        "lake": str(root / "lake2"),
        "families": ["mf"],
        "folds": 2,
        "max_epochs": 2,
        "profiles": False,
    }
    for _ in range(2):
        prefect(env, "deployment", "run", "nightly-retrain/nightly-retrain", "--params", json.dumps(params))
    prefect(env, "worker", "start", "--pool", "interestflow-local", "--run-once", timeout=600)
    runs = api(env, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployments["nightly-retrain"]["id"]]}}})
    states = sorted(r["state_type"] for r in runs if r["state_type"] != "SCHEDULED" or r["parameters"].get("lake"))
    assert states == ["CANCELLED", "COMPLETED"], [(r["state_type"], r["state_name"]) for r in runs]
