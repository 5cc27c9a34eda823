"""Reliability: bad input is rejected and changes nothing, a re-run trains nothing, a
killed training resumes from its checkpoint.

One module lake holds a validated layer and a champion made by a real nightly run; every
bad input of the matrix (tests/faults.py) then runs the real nightly flow against it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import sample_frames, write_slice
from faults import BAD_INPUTS

from components import events, storage, tracking, training, validation
from components.validation import DataValidationError

PREFIX = "reliab"
NIGHTLY = dict(families=["mf"], folds=2, max_epochs=3, patience=2, seed=0, profiles=False)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A lake and a registry with a champion, made by one real nightly run."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import nightly

    root = tmp_path_factory.mktemp("reliability")
    ev, items = sample_frames(150)
    spec = write_slice(root / "good", ev, items, name="reliab")
    with pytest.MonkeyPatch.context() as mp, prefect_test_harness(server_startup_timeout=120):
        mp.setenv("INTERESTFLOW_MODEL_PREFIX", PREFIX)
        first = nightly(spec=str(spec), lake=str(root / "lake"), **NIGHTLY)
        assert first["results"][0]["decision"]["promote"]
        yield {"root": root, "lake": root / "lake", "spec": spec, "events": ev, "items": items, "nightly": nightly}


def lake_files(lake: Path) -> dict[str, bytes]:
    """Every file of the lake but the quarantine, by relative path."""
    files = (p for p in lake.rglob("*") if p.is_file() and "quarantine" not in p.relative_to(lake).parts)
    return {str(p.relative_to(lake)): p.read_bytes() for p in files}


def registry_state() -> dict:
    """Every version of this module's registered models: run, tags, aliases."""
    c = tracking.client()
    out = {}
    for m in c.search_registered_models(f"name LIKE '{PREFIX}-%'"):
        for v in c.search_model_versions(f"name='{m.name}'"):
            out[(m.name, v.version)] = (v.run_id, dict(v.tags), sorted(v.aliases))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_rejected_clearly_and_changes_nothing(guarded, case, tmp_path):
    bad = BAD_INPUTS[case]
    spec = bad.make(tmp_path / "src", guarded["events"].copy(), guarded["items"].copy())
    lake = guarded["lake"]
    before, registry = lake_files(lake), registry_state()
    quarantined = set((lake / "quarantine").glob("*")) if (lake / "quarantine").exists() else set()
    if bad.outcome == "reject":
        with pytest.raises((events.SpecError, DataValidationError)) as err:
            guarded["nightly"](spec=str(spec), lake=str(lake), **NIGHTLY)
        msg = str(err.value)
        new_q = set((lake / "quarantine").glob("*")) - quarantined
        assert len(new_q) == 1 and (new_q.pop() / "report.md").exists(), "no quarantine report"
    else:  # warnings and harmless extras: the data stages go on
        out = validation.validate(events.ingest(spec, str(lake)), str(lake))
        assert storage.layer_done(out["uri"])
        msg = "\n".join(out["warnings"])
        assert (bad.outcome == "warn") == bool(out["warnings"]), out["warnings"]
    for part in bad.names:
        assert part in msg, f"{case}: {part!r} not in the message:\n{msg[:2000]}"
    after = lake_files(lake)
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"{case} changed {changed[:5]}"
    new = [p for p in after if p not in before and not p.startswith(("01_raw", "02_validated"))]
    if bad.outcome == "reject":
        new += [p for p in after if p not in before and p.startswith("02_validated")]
    assert not new, f"{case} wrote {new[:5]}"
    assert registry_state() == registry


@pytest.mark.slow
def test_a_rerun_trains_nothing_and_one_changed_event_retrains(guarded):
    c = tracking.client()

    def training_runs():
        return {r.info.run_id for r in c.search_runs([tracking.experiment_id()], "tags.`interestflow.stage` != ''")}

    runs, registry = training_runs(), registry_state()
    models = {p: p.stat().st_mtime_ns for p in (guarded["lake"] / "05_models").rglob("*") if p.is_file()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERESTFLOW_MODEL_PREFIX", PREFIX)
        again = guarded["nightly"](spec=str(guarded["spec"]), lake=str(guarded["lake"]), **NIGHTLY)
        r = again["results"][0]
        assert r["reused_training"] and r["registered"]["reused"]
        assert not r["decision"]["promote"] and "already the champion" in r["decision"]["reason"]
        assert training_runs() == runs  # no fold or final training ran
        assert registry_state() == registry
        assert {p: p.stat().st_mtime_ns for p in (guarded["lake"] / "05_models").rglob("*") if p.is_file()} == models

        ev = guarded["events"].copy()
        ev.loc[0, "timestamp"] = ev.loc[0, "timestamp"] - 86400  # one event, one day earlier
        spec = write_slice(guarded["root"] / "changed", ev, guarded["items"], name="reliab")
        changed = guarded["nightly"](spec=str(spec), lake=str(guarded["lake"]), **NIGHTLY)
    assert changed["data_hash"] != again["data_hash"]
    assert storage.layer_done(str(guarded["lake"] / "02_validated" / f"reliab-{changed['data_hash']}"))
    assert not changed["results"][0]["reused_training"]
    assert len(training_runs() - runs) == NIGHTLY["folds"] + 1  # every fold and the final fit ran


def _training_process(ckpt_uri: str) -> int | None:
    """PID of the ``python -m components.training`` process whose request trains into ``ckpt_uri``."""
    import json

    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"components.training" not in argv or b"--request" not in argv:
                continue
            request = json.loads(Path(argv[argv.index(b"--request") + 1].decode()).read_text())
        except (OSError, ValueError, IndexError):
            continue
        if request.get("checkpoint_uri") == ckpt_uri:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_checkpoint_and_registers_once(guarded):
    """SIGKILL the final fit's process once its first epoch's checkpoint is in the lake: the
    task's retry resumes from that epoch, and the model is registered once."""
    from prefect import flow

    from components import datasets
    from tasks.evaluate import evaluate
    from tasks.register import register
    from tasks.train import train_final

    lake, epochs = str(guarded["lake"]), 25
    dataset = datasets.prepare(str(guarded["spec"]), lake, 2, 0)
    cfg = {"max_epochs": epochs, "patience": epochs, "seed": 7, "batch_size": 16}
    folds = [{"fold": 0, "best_epoch": epochs, "train_s": 0.0, "metrics": {"ndcg10": 0.0, "hr10": 0.0, "mrr": 0.0}}]
    ckpt = training.checkpoint_uri(lake, dataset, "mf", cfg, "final", None, epochs)
    killed = {}

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            pid = _training_process(ckpt)
            if pid and storage.exists(storage.join(ckpt, "last.ckpt")):
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
            time.sleep(0.02)

    @flow
    def final_fit():
        final = train_final.with_options(retry_delay_seconds=0)(dataset, "mf", folds, cfg, lake, {})
        report = evaluate(dataset, final, lake)
        return final, register(report, dataset)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERESTFLOW_MODEL_PREFIX", PREFIX + "kill")
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        final, registered = final_fit()
        t.join(timeout=5)
        versions = tracking.client().search_model_versions(f"name='{registered['name']}'")
    assert killed, "the training finished before it could be killed"
    assert final["resumed_from_epoch"] is not None and 1 <= final["resumed_from_epoch"] < epochs
    assert final["epochs_run"] == epochs
    assert len(final["history"]) == epochs - final["resumed_from_epoch"]  # not from scratch
    assert [v.run_id for v in versions] == [final["run_id"]]  # registered once, from the resumed run
