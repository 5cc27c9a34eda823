"""Distributed training: every family under DDP with 2 CPU processes (gloo), against one process.

Real Lightning DDP (each rank its own process, started by Lightning's launcher from the
training entry point), a real MLflow registry. Marked slow: about 20 s per training.
"""

from __future__ import annotations

import pytest
from conftest import sample_frames, write_slice

from components import pipeline, tracking
from components.config import TrainConfig
from components.lake import TestReport
from components.models import MODELS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    spec = write_slice(root / "src", *sample_frames(300), name="ddpslice")
    lake = str(root / "lake")
    ds = pipeline.data_path(spec, lake, 2, 0)
    return ds, lake


def small(family: str) -> dict:
    return {"dim": 16} if family != "lstm" else {"dim": 16, "hidden": 16}


@pytest.mark.slow
@pytest.mark.parametrize("family", MODELS)
def test_ddp_splits_the_data_and_matches_one_process(dataset, family):
    ds, lake = dataset
    base = {"max_epochs": 3, "patience": 3, "accelerator": "cpu", "num_threads": 1, "seed": 0, "model": small(family)}
    one = pipeline.train(ds, family, "fold", TrainConfig(**base, batch_size=64), lake, fold=0)
    # Two ranks with half the per-rank batch: the same global batch and epoch budget.
    two = pipeline.train(ds, family, "fold", TrainConfig(**base, batch_size=32, devices=2), lake, fold=0)
    assert one.world_size == 1 and two.world_size == 2
    s = two.sampler
    assert len(s["users_per_rank"]) == 2
    assert abs(s["users_per_rank"][0] - s["users_per_rank"][1]) <= 1  # DistributedSampler: equal halves
    assert s["users_on_several_ranks"] <= 1  # disjoint, up to the one user padded onto both
    assert s["users_total"] == one.sampler["users_total"] == one.train_users
    loss1, loss2 = one.history[-1]["train_loss"], two.history[-1]["train_loss"]
    assert loss2 == pytest.approx(loss1, rel=0.15), (loss1, loss2)
    assert two.metrics["ndcg10"] == pytest.approx(one.metrics["ndcg10"], abs=0.03)


@pytest.mark.slow
def test_ddp_final_fit_records_one_run_and_one_model_version(dataset, monkeypatch):
    monkeypatch.setenv("INTERESTFLOW_MODEL_PREFIX", "ddp-test")  # keep the flow tests' registry clean
    ds, lake = dataset
    cfg = TrainConfig(max_epochs=2, accelerator="cpu", devices=2, num_threads=1, model={"dim": 16})
    before = {r.info.run_id for r in tracking.client().search_runs([tracking.experiment_id()])}
    final = pipeline.train(ds, "mf", "final", cfg, lake, epochs=2, tags={"test": "ddp-final"})
    runs = [r for r in tracking.client().search_runs([tracking.experiment_id()]) if r.info.run_id not in before]
    assert [r.info.run_id for r in runs] == [final.run_id]
    logged = tracking.client().search_logged_models(
        [tracking.experiment_id()], filter_string=f"source_run_id = '{final.run_id}'"
    )
    assert len(logged) == 1
    report = TestReport(
        family="mf",
        data_hash=ds.data_hash,
        test={"ndcg10": 0.0, "hr10": 0.0},
        popularity={"ndcg10": 0.0},
        cv={"ndcg10_mean": 0.0, "ndcg10_std": 0.0},
        fold_metrics=(),
        epochs=2,
        final_train_s=final.train_s,
        run_id=final.run_id,
        model_uri=final.model_uri,
        test_recommendations_uri="",
    )
    reg = pipeline.register(report)
    versions = tracking.client().search_model_versions(f"name='{reg.name}' and run_id='{final.run_id}'")
    assert len(versions) == 1


@pytest.mark.slow
def test_bf16_mixed_on_cpu_trains_like_fp32(dataset):
    """precision=bf16-mixed on CPU (bf16 matmuls in the fused cross-entropy): same learning."""
    ds, lake = dataset
    base = {"max_epochs": 3, "patience": 3, "accelerator": "cpu", "num_threads": 1, "seed": 0, "model": small("cnn")}
    fp32 = pipeline.train(ds, "cnn", "fold", TrainConfig(**base), lake, fold=1)
    bf16 = pipeline.train(ds, "cnn", "fold", TrainConfig(**base, precision="bf16-mixed"), lake, fold=1)
    assert not bf16.reused and bf16.checkpoint_uri != fp32.checkpoint_uri
    losses = [[h["train_loss"] for h in r.history] for r in (fp32, bf16)]
    assert losses[1][-1] < losses[1][0]  # it learns
    assert losses[1][-1] == pytest.approx(losses[0][-1], rel=0.05), losses
    assert bf16.metrics["ndcg10"] == pytest.approx(fp32.metrics["ndcg10"], abs=0.03)
