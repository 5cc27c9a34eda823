"""The one data path (components/pipeline.py): stage records through Prefect, training you can
watch, and the same stages with and without Prefect."""

from __future__ import annotations

import dataclasses
import tempfile
import threading

import pytest
from conftest import sample_frames, write_slice

from components import lake, pipeline, storage, training
from components.config import TrainConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    spec = write_slice(root / "src", *sample_frames(120), name="pipeslice")
    return pipeline.data_path(spec, str(root / "lake"), 2, 0), str(root / "lake")


def test_data_path_returns_records_that_name_each_layer(dataset):
    ds, root = dataset
    assert ds.uri.startswith(root + "/04_datasets/") and lake.is_complete(ds.uri)
    feats = ds.features
    assert feats.uri.startswith(root + "/03_features/") and feats.text_uri.startswith(feats.uri + "/text-")
    assert feats.validated.uri.startswith(root + "/02_validated/") and feats.validated.raw.uri.startswith(
        root + "/01_raw/"
    )
    assert ds.data_hash == feats.validated.raw.data_hash and ds.spec == "pipeslice"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.folds = 3  # records are frozen: a stage cannot grow what it was given
    assert lake.dataset_from_dict(dataclasses.asdict(ds)) == ds  # how a training request carries it


def test_stage_records_round_trip_through_prefect_task_results(dataset, tmp_path):
    """A record a task returns is persisted as its result (Prefect's default serializer) and
    read back equal."""
    from prefect import flow, task
    from prefect.serializers import PickleSerializer
    from prefect.testing.utilities import prefect_test_harness

    ds, _ = dataset
    blob = PickleSerializer().dumps(ds)
    assert PickleSerializer().loads(blob) == ds

    @task(persist_result=True)
    def passes(record):
        return record

    @flow
    def hand_over():
        state = passes(ds, return_state=True)
        return state

    with prefect_test_harness(server_startup_timeout=120):
        state = hand_over()
        again = state.result()  # the persisted result, read back from its storage
    assert again == ds and isinstance(again, type(ds))


@pytest.mark.slow
def test_epoch_lines_reach_the_log_while_training_runs_and_request_folders_go(dataset, tmp_path, monkeypatch):
    ds, root = dataset
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where launch() makes its request folders
    cfg = TrainConfig(max_epochs=3, patience=3, num_threads=1, accelerator="cpu", model={"dim": 8})
    ckpt = training.checkpoint_uri(root, ds, "mf", cfg, "fold", 0)
    lines = []

    def on_epoch(line: str) -> None:  # the flow's tasks pass the Prefect run logger here
        done = storage.exists(lake.file(ckpt, training.RESULT))  # written when the training ends
        lines.append((line, done, threading.current_thread() is not threading.main_thread()))

    result = pipeline.train(ds, "mf", "fold", cfg, root, fold=0, on_epoch=on_epoch)
    assert [line.split(":")[0] for line, _, _ in lines] == [f"mf fold 0 epoch {e}" for e in (1, 2, 3)]
    assert all("train_loss" in line and "val_ndcg10" in line and " s)" in line for line, _, _ in lines)
    assert not any(done for _, done, _ in lines)  # every line arrived before the training finished
    assert result.epochs_run == 3 and not list(tmp_path.glob("interestflow-req-*"))


@pytest.mark.slow
def test_mf_by_alternating_least_squares_trains_through_the_launch(dataset):
    """solver="als" through a real training process: pair batches, the item step before each
    validation (so the first sweep already ranks), a best checkpoint and test figures."""
    ds, root = dataset
    cfg = TrainConfig(max_epochs=3, patience=3, num_threads=1, model={"dim": 8, "solver": "als"})
    result = pipeline.train(ds, "mf", "fold", cfg, root, fold=0)
    curve = [h["val_ndcg10"] for h in result.history]
    assert result.epochs_run == 3 and len(curve) == 3 and curve[0] > 0
    assert result.metrics["ndcg10"] >= 0 and result.best_epoch in (1, 2, 3)


@pytest.mark.slow
def test_a_failed_training_leaves_no_request_folder(dataset, tmp_path, monkeypatch):
    ds, root = dataset
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = TrainConfig(max_epochs=1, num_threads=1, accelerator="cpu", precision="no-such-precision")
    with pytest.raises(RuntimeError, match="training mf/fold fold 0 failed"):
        pipeline.train(ds, "mf", "fold", cfg, root, fold=0)
    assert not list(tmp_path.glob("interestflow-req-*"))


@pytest.mark.slow
def test_epoch_lines_reach_the_prefect_task_logs(dataset):
    """Through the flow's train-fold task: the lines are in that task run's logs, stamped
    before the training wrote its result (live, not at the end)."""
    import asyncio
    import os
    from datetime import UTC, datetime

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.testing.utilities import prefect_test_harness

    from tasks.train import train_fold

    ds, root = dataset
    cfg = TrainConfig(max_epochs=3, patience=3, num_threads=1, accelerator="cpu", seed=1, model={"dim": 8})

    @flow
    def one_fold():
        return train_fold(ds, "mf", 1, cfg, root, {}, return_state=True)

    with prefect_test_harness(server_startup_timeout=120):
        state = one_fold()
        result = state.result()

        async def logs():
            async with get_client() as c:
                flt = LogFilter(task_run_id=LogFilterTaskRunId(any_=[state.state_details.task_run_id]))
                return await c.read_logs(log_filter=flt)

        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # the log worker sends in batches: wait for it
        records = asyncio.run(logs())
    epoch = [r for r in records if " epoch " in r.message]
    assert [r.message.split(":")[0] for r in epoch] == [f"mf fold 1 epoch {e}" for e in (1, 2, 3)]
    finished = datetime.fromtimestamp(os.path.getmtime(lake.file(result.checkpoint_uri, training.RESULT)), UTC)
    assert epoch[0].timestamp < finished


def test_a_stopped_block_stops_its_own_trainings_only():
    """training.stoppable(): an interrupt sets that block's stop (its task threads see it and
    start no training); the next block, or code outside any, is not stopped."""
    from components import training

    with pytest.raises(KeyboardInterrupt):
        with training.stoppable():
            stop = training._STOP.get()
            raise KeyboardInterrupt
    assert stop.is_set() and training._STOP.get() is None
    with training.stoppable():
        assert not training._STOP.get().is_set()
    with pytest.raises(ValueError), training.stoppable():  # a failure is not a stop
        stop = training._STOP.get()
        raise ValueError("a bug")
    assert not stop.is_set()


def test_a_trainings_key_is_its_whole_model_config(monkeypatch):
    """The checkpoint key hashes the family config with its defaults: naming a default is the
    same training, and a changed default (bert's tau, say) is another one, not a reuse of a
    training ranked under the old default."""
    from types import SimpleNamespace

    from components.models.bert import BERTConfig

    ds = SimpleNamespace(uri="/lake/04_datasets/x")  # the key reads the layer's address only
    key = lambda model: training.checkpoint_uri("/lake", ds, "bert", TrainConfig(model=model), "fold", 0)  # noqa: E731
    assert key({}) == key({"popularity_adjust": BERTConfig().popularity_adjust})
    before = key({})
    monkeypatch.setattr(BERTConfig, "__init__", _with_default(BERTConfig.__init__, popularity_adjust=0.75))
    assert key({}) != before


def _with_default(init, **defaults):
    def patched(self, *args, **kwargs):
        init(self, *args, **{**defaults, **kwargs})

    return patched
