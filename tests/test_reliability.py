"""Reliability: bad input is rejected and changes nothing, a re-run trains nothing, a
killed training resumes from its checkpoint.

One module lake holds a validated layer and a champion made by a real nightly run; every
bad input of the flow matrix (the kinds of testkit/faults.py's catalogue marked ``flow``;
tests/test_validation.py runs every entry through ingest and validate) then runs the real
nightly flow against it.
"""

from __future__ import annotations

import pytest
from conftest import sample_frames, write_slice

from components import lake, tracking
from testkit.faults import FLOW_MATRIX, in_process, killed_final_fit, registry_state, try_bad_input

PREFIX = "reliab"
NIGHTLY = dict(families=["mf"], folds=1, max_epochs=3, patience=2, seed=0, profiles=False)


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
        assert first.results[0].decision.promote
        yield {"root": root, "lake": root / "lake", "spec": spec, "events": ev, "items": items, "nightly": nightly}


@pytest.mark.slow
@pytest.mark.parametrize("case", FLOW_MATRIX)
def test_bad_input_is_rejected_clearly_and_changes_nothing(guarded, case, tmp_path):
    bad, registry = FLOW_MATRIX[case], registry_state(PREFIX)
    got = try_bad_input(
        bad,
        tmp_path / "src",
        guarded["events"],
        guarded["items"],
        guarded["lake"],
        in_process(lambda spec: guarded["nightly"](spec=spec, lake=str(guarded["lake"]), **NIGHTLY)),
    )
    assert got["outcome"] == bad.outcome, got["message"][:2000]
    assert not got["missing"], f"{got['missing']} not in the message:\n{got['message'][:2000]}"
    assert got["quarantined"] == (bad.outcome == "reject"), "a rejection leaves a quarantine report"
    assert not got["changed"], got["changed"][:5]
    assert registry_state(PREFIX) == registry


@pytest.mark.slow
def test_a_rerun_trains_nothing_and_one_changed_event_retrains(guarded):
    c = tracking.client()

    def training_runs():
        return {
            r.info.run_id
            for r in c.search_runs(
                [tracking.experiment_id()], "tags.`interestflow.stage` != '' and tags.`interestflow.stage` != 'night'"
            )
        }

    runs, registry = training_runs(), registry_state(PREFIX)
    models = {p: p.stat().st_mtime_ns for p in (guarded["lake"] / "05_models").rglob("*") if p.is_file()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERESTFLOW_MODEL_PREFIX", PREFIX)
        again = guarded["nightly"](spec=str(guarded["spec"]), lake=str(guarded["lake"]), **NIGHTLY)
        r = again.results[0]
        assert r.report.reused_training and r.registered.reused
        assert not r.decision.promote and "already the champion" in r.decision.reason
        assert training_runs() == runs  # no fold or final training ran
        assert registry_state(PREFIX) == registry
        assert {p: p.stat().st_mtime_ns for p in (guarded["lake"] / "05_models").rglob("*") if p.is_file()} == models

        ev = guarded["events"].copy()
        ev.loc[0, "timestamp"] = ev.loc[0, "timestamp"] - 86400  # one event, one day earlier
        spec = write_slice(guarded["root"] / "changed", ev, guarded["items"], name="reliab")
        changed = guarded["nightly"](spec=str(spec), lake=str(guarded["lake"]), **NIGHTLY)
    assert changed.data_hash != again.data_hash
    assert lake.is_complete(str(guarded["lake"] / "02_validated" / f"reliab-{changed.data_hash}"))
    assert not changed.results[0].report.reused_training
    assert len(training_runs() - runs) == NIGHTLY["folds"] + 1  # every fold and the final fit ran


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_checkpoint_and_registers_once(guarded):
    """SIGKILL the final fit's process once its first epoch's checkpoint is in the lake: the
    task's retry resumes from that epoch, and the model is registered once."""
    epochs = 12
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERESTFLOW_MODEL_PREFIX", PREFIX + "kill")
        got = killed_final_fit(str(guarded["spec"]), str(guarded["lake"]), epochs)
    final = got["final"]
    assert got["killed"], "the training finished before it could be killed"
    assert final.resumed_from_epoch is not None and 1 <= final.resumed_from_epoch < epochs
    assert final.epochs_run == epochs
    assert len(final.history) == epochs - final.resumed_from_epoch  # not from scratch
    assert got["versions"] == [final.run_id]  # registered once, from the resumed run
