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
from urllib.parse import urlsplit

import pytest
import yaml
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


def wait_until_up(health: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Until ``health`` answers; fails with the end of the server's ``log`` if it exits or
    does not answer in time."""
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(health, timeout=2)
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail(f"{proc.args[:3]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_PORT": str(port),  # where the server's own UI pages ask for its API
        # the MLflow UI the browser test starts: the links in the logs and the summary point there
        "INTERESTFLOW_MLFLOW_UI": f"http://127.0.0.1:{free_port()}",
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
        wait_until_up(f"{env['PREFECT_API_URL']}/health", proc, root / "server.log")
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


@pytest.fixture(scope="module")
def deployed(server):
    """``prefect deploy --all``, then the ``train`` deployment run by a ``process`` worker once:
    (deployments by name, the ``train`` flow runs)."""
    env, root = server
    prefect(env, "work-pool", "create", "interestflow-local", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all", timeout=300)
    deployments = {d["name"]: d for d in api(env, "/deployments/filter", {})}
    spec = write_slice(root / "src", *sample_frames(150), name="srvslice")
    params = {"spec": str(spec), "lake": str(root / "lake"), "families": ["mf"], "folds": 2, "max_epochs": 2}
    out = prefect(env, "deployment", "run", "nightly-retrain/train", "--params", json.dumps(params))
    assert "Created flow run" in out
    prefect(env, "worker", "start", "--pool", "interestflow-local", "--run-once", timeout=600)
    train_runs = api(env, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployments["train"]["id"]]}}})
    return deployments, train_runs


@pytest.mark.slow
def test_deploy_schedule_trigger_and_run_with_a_worker(server, deployed):
    env, root = server
    deployments, train_runs = deployed
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]  # test_deployments pins them
    assert set(deployments) == {d["name"] for d in declared}
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

    assert [r["state_type"] for r in train_runs] == ["COMPLETED"], train_runs
    flow_run_id = train_runs[0]["id"]
    # a readable name and the spec and family as tags, though the deployment started it
    assert train_runs[0]["name"].startswith("nightly-srvslice-20")
    assert {"spec:srvslice", "family:mf"} <= set(train_runs[0]["tags"])

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
        "folds": 1,
        "max_epochs": 2,
        "profiles": False,
    }
    for _ in range(2):
        prefect(env, "deployment", "run", "nightly-retrain/nightly-retrain", "--params", json.dumps(params))
    prefect(env, "worker", "start", "--pool", "interestflow-local", "--run-once", timeout=600)
    runs = api(env, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployments["nightly-retrain"]["id"]]}}})
    states = sorted(r["state_type"] for r in runs if r["state_type"] != "SCHEDULED" or r["parameters"].get("lake"))
    assert states == ["CANCELLED", "COMPLETED"], [(r["state_type"], r["state_name"]) for r in runs]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (make test installs it)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package, driven by Playwright (its own browser download
    is never used). Absent outside CI: skipped; in CI (CI=true) its absence fails."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            # no sandbox as root; no calls to Google's services on a closed network
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def mlflow_ui(server):
    """``mlflow ui`` on the home the worker's flow run wrote, at INTERESTFLOW_MLFLOW_UI, as the
    README starts it."""
    env, root = server
    url = env["INTERESTFLOW_MLFLOW_UI"]
    log = open(root / "mlflow-ui.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{root / 'home' / 'mlflow.db'}"]
        + ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]],
        env={**env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_up(f"{url}/health", proc, root / "mlflow-ui.log")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


class Pages:
    """One browser page per visit: fails on an uncaught script error, a 5xx from the UI's own
    server, a Prefect or MLflow error banner, or a page that shows nothing; writes a screenshot
    of each to ``folder`` (INTERESTFLOW_SCREENSHOTS, default: the test's temporary folder)."""

    ERRORS = ("Something went wrong", "Can't connect to Server API", "Error loading shared view", "Page not found")

    @staticmethod
    def _problem(status: int, url: str) -> str | None:
        """A 5xx from the UI's own server, except MLflow's presigned-URL probe: MLflow >= 3.18's
        artifact views first ask for a presigned download URL (``.../presigned-download-url``,
        ``get-artifact?...&presigned=true``) and, by design, fall back to the proxied download
        on 400/404/501/503 (PRESIGNED_DOWNLOAD_FALLBACK_STATUSES, mlflow/mlflow#24748). A local
        artifact store answers 501 Not Implemented; what the page falls back to is checked.

        Nor a 500 from MLflow's own assistant panel (``/ajax-api/3.0/mlflow/assistant/...``), an
        MLflow 3.18 fault this stack cannot avoid: every GraphQL request imports
        ``mlflow.server.auth`` (handlers.py, ``_get_graphql_auth_middleware``), which raises
        ImportError without Flask-WTF (``mlflow[auth]``, not installed: no auth app here) and so
        is imported again by the next one; a concurrent assistant request reads the
        half-imported module from ``sys.modules`` (assistant/identity.py,
        ``auth_plugin_active``): "partially initialized module 'mlflow.server.auth' has no
        attribute 'is_auth_enabled'". The panel retries and the page is checked as usual."""
        parts = urlsplit(url)
        probe = parts.path.endswith("/presigned-download-url") or "presigned=true" in parts.query.split("&")
        assistant = parts.path.startswith("/ajax-api/3.0/mlflow/assistant/")
        if status < 500 or "127.0.0.1" not in url or (status == 501 and probe) or (status == 500 and assistant):
            return None
        return f"{status} from {url}"

    def __init__(self, browser, folder: Path):
        self.browser, self.folder = browser, folder
        folder.mkdir(parents=True, exist_ok=True)

    def visit(
        self, name: str, url: str, expect: list[str], wait_for: str | None = None, show: str = "", plot: bool = False
    ) -> str:
        """Load ``url``; the screenshot shows the part of the page with the text ``show``; with
        ``plot``, the page must show a decoded image at least 300 pixels wide (a plot, not an icon)."""
        page = self.browser.new_page(viewport={"width": 2200, "height": 1100})
        problems = []
        page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
        page.on("response", lambda r: (p := self._problem(r.status, r.url)) and problems.append(p))
        try:
            page.goto(url, wait_until="load", timeout=60_000)
            page.get_by_text(wait_for or expect[0], exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # the rest of the page's requests
            if plot:
                widest = "() => Math.max(0, ...[...document.images].map(i => i.complete ? i.naturalWidth : 0))"
                page.wait_for_function(f"({widest})() >= 300", timeout=30_000)
            if show:
                page.get_by_text(show, exact=True).first.scroll_into_view_if_needed()
            page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
            text = page.inner_text("body")
        finally:
            page.close()
        shown = [e for e in self.ERRORS if e in text]
        assert not problems and not shown, f"{name} ({url}): {problems + shown}"
        missing = [e for e in expect if e not in text]
        assert not missing, f"{name} ({url}) lacks {missing}; it shows:\n{text[:3000]}"
        return text


@pytest.mark.slow
def test_both_uis_show_the_night_in_a_browser(server, deployed, mlflow_ui, browser):
    """The train deployment's run, as a platform engineer opens it: MLflow's runs table (the
    saved view), a run's plots, the registered version with its description; the Prefect flow
    run with its stage lines and links, and its summary artifact."""
    from mlflow import MlflowClient

    from components import tracking

    env, root = server
    deployments, train_runs = deployed
    assert [r["state_type"] for r in train_runs] == ["COMPLETED"], train_runs
    run = train_runs[0]
    client = MlflowClient(f"sqlite:///{root / 'home' / 'mlflow.db'}")
    version = client.get_model_version("srv-mf", "1")
    final = client.get_run(version.run_id)
    night = client.get_run(final.data.tags["mlflow.parentRunId"])  # folds and final under one parent
    exp = final.info.experiment_id
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{night.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["mf-final", "mf-fold0", "mf-fold1"]
    assert night.data.tags["promotion.decision"] == "promoted" and "test_ndcg10" in night.data.metrics
    metrics = sorted(final.data.metrics)  # test figures first, then training, validation, baselines
    assert metrics[0].startswith("test_") and {m.split("_")[0] for m in metrics} == {"test", "train", "val", "vs"}
    assert all(len(v.split(".")[-1]) <= 4 for k, v in version.tags.items() if k.startswith(("test_", "cv_")))
    assert "trained on 150 users of `srvslice`" in version.description
    mine = {"flow_run_id": {"any_": [run["id"]]}}  # the other test's night left artifacts too
    leaderboard = api(env, "/artifacts/filter", {"artifacts": {"key": {"any_": ["leaderboard"]}, **mine}})
    rows = json.loads(leaderboard[0]["data"])
    assert list(rows[0])[:5] == ["family", "version", "test_ndcg10", "decision", "reason"], rows[0]
    shots = Path(os.environ.get("INTERESTFLOW_SCREENSHOTS") or root / "screenshots")
    pages = Pages(browser, shots)
    prefect_ui = env["PREFECT_API_URL"].removesuffix("/api")

    # MLflow: the printed link opens the runs table in its saved view, not the GenAI pages
    table = pages.visit(
        "mlflow-runs",
        tracking.runs_link(exp).replace(tracking.ui_url(), mlflow_ui),
        [night.info.run_name, "interestflow's nightly retrains"],
    )
    assert "test_ndcg10" in table and "promotion.decision" in table and "promoted" in table
    pages.visit(
        "mlflow-run-plots",
        f"{mlflow_ui}/#/experiments/{exp}/runs/{final.info.run_id}/artifacts/plots/learning_curve.png",
        ["learning_curve.png", "cv_folds.png"],
        plot=True,
    )
    pages.visit(
        "mlflow-model-version",
        f"{mlflow_ui}/#/models/srv-mf/versions/1",
        ["trained on", "promoted to champion by the gate: no champion yet", "champion"],
    )
    pages.visit("mlflow-model", f"{mlflow_ui}/#/models/srv-mf", ["interestflow's mf recommender", "Version 1"])

    # Prefect: the flow run's log tells the night, with links to MLflow
    pages.visit(
        "prefect-flow-run",
        f"{prefect_ui}/runs/flow-run/{run['id']}",
        [run["name"], "spec:srvslice", "ingest srvslice: ", "validate: suite events: "],
        wait_for="ingest srvslice: ",
    )
    # the whole log (the page renders the lines in view): a line per stage, links to MLflow
    logs = api(env, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})
    text = "\n".join(entry["message"] for entry in logs)
    for line in (
        "features: vocabularies of",
        "datasets: 2 folds",
        f"train mf-final: MLflow run {mlflow_ui}/#/experiments/{exp}/runs/{final.info.run_id}",
        "mf fold 0 epoch 1: train_loss",
        "evaluate mf: test NDCG@10",
        f"register srv-mf v1 (alias challenger): {mlflow_ui}/#/models/srv-mf/versions/1",
        "promote srv-mf v1: promoted to champion",
        "recommend: top-10 for",
    ):
        assert line in text, f"the flow run's log lacks {line!r}:\n{text[:4000]}"
    form = pages.visit(  # the custom-run form: fixed choices as dropdowns, not "Property is type None"
        "prefect-run-form",
        f"{prefect_ui}/deployments/deployment/{deployments['train']['id']}/run",
        ["accelerator", "precision", "serve_family", "families"],
        show="strategy (Optional)",
    )
    assert 'Property is type "None"' not in form.split("serve_family")[1].split("explore_share")[0]
    artifacts = api(env, "/artifacts/filter", {"artifacts": {"key": {"any_": ["nightly-summary"]}, **mine}})
    assert artifacts, "no summary artifact"
    summary = pages.visit(
        "prefect-summary-artifact", f"{prefect_ui}/artifacts/artifact/{artifacts[0]['id']}", ["Promotion"]
    )
    assert "learning curve" in summary and "promoted to champion" in summary
    assert str(root / "lake") not in summary.replace(f"Lake: {root / 'lake'}", "")  # lake paths are relative
    for name in ("mlflow-runs", "mlflow-run-plots", "mlflow-model-version", "prefect-flow-run"):
        assert (shots / f"{name}.png").stat().st_size > 20_000, f"{name}: an empty screenshot"
