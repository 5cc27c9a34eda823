"""Pseudonymised user ids, and no raw id or secret in what MLflow and the logs keep."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import sample_frames, write_slice

from components import events, pipeline, storage, tracking
from components.config import TrainConfig, home

MARKER = "RAWUSER-MARKER-7731"
SECRET = "pseudonym-key-s3cr3t-4410"


def private_slice(tmp_path: Path, n_users: int = 120) -> Path:
    ev, items = sample_frames(n_users)
    ev.loc[ev["user_id"] == ev["user_id"].iloc[0], "user_id"] = MARKER  # a raw id we can search for
    spec = write_slice(tmp_path / "src", ev, items, name="private")
    spec.write_text(spec.read_text() + "privacy:\n  pseudonymise_users: true\n")
    return spec


def test_user_ids_are_keyed_hashes_and_the_key_matters(tmp_path, monkeypatch):
    spec = private_slice(tmp_path)
    monkeypatch.setenv("INTERESTFLOW_PSEUDONYM_KEY", SECRET)
    a = events.ingest(spec, str(tmp_path / "lake"))
    ids = storage.read_partitioned(storage.join(a.uri, "events"))["user_id"]
    assert ids.str.fullmatch(r"u_[0-9a-f]{20}").all() and MARKER not in set(ids)
    again = events.ingest(spec, str(tmp_path / "lake"))
    assert again.uri == a.uri  # same key, same pseudonyms, same layer
    monkeypatch.setenv("INTERESTFLOW_PSEUDONYM_KEY", "another key")
    b = events.ingest(spec, str(tmp_path / "lake"))
    other = storage.read_partitioned(storage.join(b.uri, "events"))["user_id"]
    assert b.data_hash != a.data_hash and not set(other) & set(ids)


def test_a_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    spec = private_slice(tmp_path)
    monkeypatch.delenv("INTERESTFLOW_PSEUDONYM_KEY", raising=False)
    with pytest.raises(events.SpecError, match="INTERESTFLOW_PSEUDONYM_KEY.*interestflow-pseudonym-key"):
        events.ingest(spec, str(tmp_path / "lake"))


@pytest.mark.slow
def test_no_raw_id_or_secret_reaches_mlflow_or_the_logs(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("INTERESTFLOW_PSEUDONYM_KEY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET + "-aws")
    monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", "privacy")
    lake = str(tmp_path / "lake")
    ds = pipeline.data_path(private_slice(tmp_path), lake, 2, 0)
    cfg = TrainConfig(max_epochs=2, num_threads=1, model={"dim": 8})
    final = pipeline.train(ds, "mf", "final", cfg, lake, epochs=2)
    pipeline.register(pipeline.evaluate(ds, final, [], lake))

    run = tracking.client().get_run(final.run_id)
    texts = [str(run.data.params), str(run.data.tags), capfd.readouterr().out, caplog.text]
    files = [home() / "mlflow.db", *(p for p in (home() / "mlartifacts").rglob("*") if p.is_file())]
    blobs = [f.read_bytes() for f in files]
    assert len(blobs) > 5  # the model, its signature and example, the tables, the DB
    for needle in (MARKER, SECRET):
        assert not any(needle in t for t in texts), needle
        assert not any(needle.encode() in b for b in blobs), needle
