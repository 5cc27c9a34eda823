"""What operators do to a run, through the real CLI in real processes: a rejection is a clear
message and exit status 2; two runs on one home do not both train (the run lock); SIGINT and
SIGTERM stop a run within seconds, its training processes with it, and the next run reuses
what finished.

The CLI processes share one real Prefect server (Prefect's test harness, a server in its own
process) through PREFECT_API_URL, and a home (lake, MLflow registry, run lock) of their own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import sample_frames, write_slice

from components import runlock
from testkit.faults import BIN, run_cli, training_processes

TRAIN = ["train", "--families", "mf", "--folds", "2", "--no-profiles"]


@pytest.fixture(scope="module")
def server():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def home(tmp_path, server):
    """Environment for CLI processes: the shared server, a home of this test's own."""
    env = {
        "PREFECT_API_URL": server,
        "INTERESTFLOW_HOME": str(tmp_path / "home"),
        "INTERESTFLOW_MODEL_PREFIX": "ops",
    }
    env.pop("INTERESTFLOW_LAKE", None)
    return tmp_path / "home", env


def _training_processes(home: Path) -> list[int]:
    """The training processes of runs on ``home`` (other tests may train beside this one)."""
    return [pid for pid, request in training_processes().items() if str(home) in json.dumps(request)]


def _flow_run_states(spec: Path) -> list[str]:
    """The state types of the flow runs of ``spec``, on the shared server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return sorted(r.state.type.value for r in c.read_flow_runs() if r.parameters.get("spec") == str(spec))


@pytest.mark.slow
def test_a_rejection_is_one_clear_message_and_exit_status_2(tmp_path, home):
    ev, items = sample_frames(60)
    ev["user_id"] = ev["user_id"].astype(object)
    ev.loc[3, "user_id"] = "null"
    spec = write_slice(tmp_path / "src", ev, items, name="opsbad")
    got = run_cli([*TRAIN, "--spec", str(spec)], home[1])
    assert got["code"] == 2, got["output"][-3000:]
    assert not got["traceback"], got["output"][-3000:]
    assert not got["network"]
    message = got["stderr"].split("interestflow train: rejected: ", 1)[1]
    assert "events.csv" in message and "column 'user_id'" in message and "id_not_null_like" in message
    report = message.split("Rejected batch and report: ", 1)[1].split("\n", 1)[0]
    assert Path(report).exists() and "'null'" in Path(report).read_text()


def _start(args: list[str], env: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "interestflow"), *args],
        env={**os.environ, **env},
        stdout=open(out.with_suffix(".out"), "w"),
        stderr=open(out.with_suffix(".err"), "w"),
    )


def _epochs(log: Path) -> list[int]:
    """The epoch numbers of the training lines a run logged."""
    text = log.with_suffix(".err").read_text() + log.with_suffix(".out").read_text()
    return [int(n) for n in re.findall(r"mf fold \d epoch (\d+):", text)]


def _wait_for_training(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Until the run logged two epochs (its training process is well under way)."""
    deadline = time.time() + timeout
    while len(_epochs(log)) < 2:
        assert proc.poll() is None, log.with_suffix(".err").read_text()[-3000:]
        assert time.time() < deadline, "the run did not start training"
        time.sleep(0.5)


def _stops_within_seconds(proc: subprocess.Popen, sig: signal.Signals, log: Path, home: Path, while_running=None):
    """Once ``proc`` trains (and ``while_running()`` has run), ``sig`` stops it: exit 1 saying
    it was cancelled by that signal, within 30 s, with no training process of its left."""
    try:
        _wait_for_training(proc, log)
        if while_running:
            while_running()
        assert _training_processes(home)
        t0 = time.time()
        proc.send_signal(sig)
        proc.wait(timeout=120)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.with_suffix(".err").read_text()
    assert proc.returncode == 1 and f"cancelled: stopped by {sig.name}" in err, err[-3000:]
    assert took < 30, f"{sig.name} took {took:.1f} s"
    assert not _training_processes(home)


@pytest.mark.slow
def test_one_run_at_a_time_and_a_signal_stops_a_run_within_seconds(tmp_path, home, server):
    """Run A trains; run B, started meanwhile on the same home, refuses at once naming A.
    SIGINT stops A: its training process is gone, the flow run is Cancelled, no model layer
    is complete, the lock is free. Run C then reuses A's finished data layers, and SIGTERM
    stops it the same way."""
    path, env = home
    spec = write_slice(tmp_path / "src", *sample_frames(150), name="opsrun")
    long = [*TRAIN, "--spec", str(spec), "--max-epochs", "100000", "--patience", "100000"]  # until stopped
    a = _start(long, env, tmp_path / "a")

    def second_run_refuses():
        assert json.loads((path / "run.lock.json").read_text())["pid"] == a.pid
        b = run_cli(long, env, timeout=300)
        assert b["code"] == 1 and not b["traceback"], b["output"][-3000:]
        assert f"(pid {a.pid} on" in b["stderr"] and "holds the run lock" in b["stderr"]

    _stops_within_seconds(a, signal.SIGINT, tmp_path / "a", path, second_run_refuses)
    lake = path / "lake"
    data = {p.parent for p in lake.glob("0[1-4]_*/*/_SUCCESS")}
    assert len(data) == 4  # raw, validated, features, datasets: finished before the signal
    assert not list((lake / "05_models").rglob("_SUCCESS")), "an interrupted training looks complete"
    with runlock.hold(path, "test", wait_s=0):  # released
        pass

    marks = {p: p.stat().st_mtime_ns for p in lake.glob("0[1-4]_*/*/_SUCCESS")}
    _stops_within_seconds(_start(long, env, tmp_path / "c"), signal.SIGTERM, tmp_path / "c", path)
    assert {p: p.stat().st_mtime_ns for p in lake.glob("0[1-4]_*/*/_SUCCESS")} == marks  # reused, not redone
    assert _epochs(tmp_path / "c")[0] > 1  # and fold 0 resumed from the checkpoint A left
    assert _flow_run_states(spec) == ["CANCELLED", "CANCELLED", "FAILED"]  # A and C; B refused


def _history(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return [s.name for s in sorted(c.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)]


FRESHNESS = "freshness:\n  retry_minutes: {retry}\n  deadline_hours: {deadline}\n"


@pytest.mark.slow
def test_input_that_is_not_there_yet_reschedules_the_run_until_it_is(tmp_path, server):
    """The event file is missing when the run starts: the run goes back to Scheduled
    (AwaitingRetry, Prefect's flow retry) instead of failing, and trains once the file is there."""
    import threading

    from flows.nightly import nightly

    spec = write_slice(tmp_path / "src", *sample_frames(60), name="opsfresh")
    spec.write_text(spec.read_text() + FRESHNESS.format(retry=0.05, deadline=0.05))  # every 3 s, for 3 min
    events = tmp_path / "src" / "events.csv"
    events.rename(events.with_suffix(".later"))
    threading.Timer(4, lambda: events.with_suffix(".later").rename(events)).start()  # the export lands
    state = nightly(
        spec=str(spec),
        lake=str(tmp_path / "lake"),
        families=["mf"],
        folds=1,
        max_epochs=1,
        patience=1,
        profiles=False,
        dry_run=True,
        return_state=True,
    )
    assert state.is_completed(), state.message
    history = _history(state.state_details.flow_run_id)
    assert "AwaitingRetry" in history and history[-1] == "Completed", history
    assert history.index("AwaitingRetry") < history.index("Running", history.index("AwaitingRetry"))


@pytest.mark.slow
def test_stale_input_is_retried_until_the_deadline_then_fails_saying_what_is_missing(tmp_path, server):
    from flows.nightly import nightly

    spec = write_slice(tmp_path / "src", *sample_frames(60), name="opsstale")  # events of 2010-2014
    rule = FRESHNESS.format(retry=0.03, deadline=0.002) + "  max_age_hours: 26\n"  # every 2 s, for 7 s
    spec.write_text(spec.read_text() + rule)
    state = nightly(spec=str(spec), lake=str(tmp_path / "lake"), families=["mf"], return_state=True)
    assert state.is_failed()
    assert "newest event is from 2014" in state.message and "still so at the deadline" in state.message
    history = _history(state.state_details.flow_run_id)
    assert history.count("AwaitingRetry") >= 2 and history[-1] == "Failed", history
    assert not (tmp_path / "lake").exists()  # nothing was read into the lake, let alone trained


@pytest.mark.slow
def test_a_failed_nightly_runs_once_more_by_the_automation_in_prefect_yaml(tmp_path, server):
    """The trigger declared with the nightly deployment in prefect.yaml, applied to the real
    server: a failed run of the deployment gets one re-run (rerun_of set, named rerun-...),
    and the re-run failing too starts nothing more."""
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.flow_engine import run_flow

    from flows.nightly import RERUN_PREFIX, nightly

    (declared,) = next(
        d
        for d in yaml.safe_load((Path(__file__).parent.parent / "prefect.yaml").read_text())["deployments"]
        if d["name"] == "nightly-retrain"
    )["triggers"]
    deployment_id = nightly.to_deployment(name="nightly-retrain", triggers=[DeploymentEventTrigger(**declared)]).apply()
    params = {"spec": str(tmp_path / "not-there.yaml"), "lake": str(tmp_path / "lake")}  # fails at ingest

    def runs():
        from prefect.client.schemas.filters import DeploymentFilter

        with get_client(sync_client=True) as c:
            return c.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [deployment_id]}))

    with get_client(sync_client=True) as c:
        first = c.create_flow_run_from_deployment(deployment_id, parameters=params)
    assert run_flow(nightly, flow_run=first, parameters=params, return_type="state").is_failed()
    deadline = time.time() + 60
    while len(runs()) < 2:
        assert time.time() < deadline, "the automation did not start a re-run"
        time.sleep(1)
    (again,) = [r for r in runs() if r.id != first.id]
    assert again.parameters["rerun_of"] == f"prefect.flow-run.{first.id}"
    state = run_flow(nightly, flow_run=again, parameters={**params, **again.parameters}, return_type="state")
    assert state.is_failed()
    with get_client(sync_client=True) as c:
        assert c.read_flow_run(again.id).name.startswith(RERUN_PREFIX)
    time.sleep(8)  # the automation reacts within a second or two: nothing more may come
    assert len(runs()) == 2


@pytest.mark.slow
def test_a_stopped_study_resumes_and_runs_only_the_trials_it_lacks(tmp_path, home, monkeypatch, capsys):
    """`interestflow tune` stopped by SIGTERM in its second trial: the study keeps its finished
    trial; the next `tune` runs only the one it lacks, with the stopped trial's settings, and
    that training resumes from its last lake checkpoint. `tune --show` reads the study."""
    import optuna

    path, env = home
    spec = write_slice(tmp_path / "src", *sample_frames(150), name="opstune")
    args = ["tune", "--family", "mf", "--spec", str(spec), "--trials", "2", "--folds", "1", "--no-prune"]
    args += ["--max-epochs", "30", "--patience", "30"]  # a few seconds a trial: time to stop one
    a, log = _start(args, env, tmp_path / "a"), tmp_path / "a"
    try:
        deadline = time.time() + 300
        while len(_epochs(log)) < 30 + 1:  # trial 0's epochs, then the first of trial 1
            assert a.poll() is None, log.with_suffix(".err").read_text()[-3000:]
            assert time.time() < deadline, "the study did not reach its second trial"
            time.sleep(0.5)
        a.send_signal(signal.SIGTERM)
        a.wait(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 1 and "cancelled: stopped by SIGTERM" in log.with_suffix(".err").read_text()
    assert not _training_processes(path)

    storage = f"sqlite:///{path / 'optuna.db'}"
    stopped = optuna.load_study(study_name="opstune-mf", storage=storage).trials
    assert [t.state.name for t in stopped] == ["COMPLETE", "RUNNING"]  # a killed process tells nothing

    b = run_cli(args, env, timeout=600)
    assert b["code"] == 0, b["output"][-3000:]
    assert "1 of 2 trials finished, 1 to run" in b["output"] and "trials [1] were left running" in b["output"]
    trials = optuna.load_study(study_name="opstune-mf", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == stopped[1].params and trials[2].user_attrs["retry_of"] == 1
    resumed = [int(n) for n in re.findall(r"mf fold \d epoch (\d+):", b["output"])]
    assert resumed and resumed[0] > 1, b["output"][-5000:]  # from the checkpoint of the stopped trial's last epoch

    from flows.cli import main

    monkeypatch.setenv("INTERESTFLOW_HOME", str(path))  # in this process: the CLI runs' home
    main(["tune", "--show", "--family", "mf", "--spec", str(spec)])
    shown = capsys.readouterr().out
    assert "3 trials (2 complete, 1 fail)" in shown and "current settings: opstune/mf v1" in shown, shown
