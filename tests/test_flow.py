"""Flow tests: the nightly flow under prefect_test_harness on a slice of the shipped sample.

Real Prefect (a temporary local API), a real MLflow registry (SQLite in a temp folder),
real Lightning training in subprocesses. Slow-ish (~2 minutes together).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sample_frames, write_slice

from components import lake, metrics, pipeline, pyfunc, storage, tracking, validation
from components.validation import DataValidationError


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def flow_env(tmp_path_factory, harness):
    root = tmp_path_factory.mktemp("flow")
    ev, items = sample_frames(600)
    spec = write_slice(root / "src", ev, items, name="flowslice")
    return {"root": root, "spec": str(spec), "lake": str(root / "lake"), "events": ev, "items": items}


def run_nightly(env, task_runner=None, **kw):
    from flows.nightly import nightly

    args = dict(spec=env["spec"], lake=env["lake"], folds=2, max_epochs=8, patience=3, seed=0)
    flow = nightly if task_runner is None else nightly.with_options(task_runner=task_runner)
    return flow(**{**args, **kw})


@pytest.mark.slow
def test_nightly_produces_a_champion_and_recommendations(flow_env, monkeypatch):
    """The whole night, its fold trainings and its validation batches (whole event months, 2,000
    events a batch here) on prefect-dask's runner over a real local Dask cluster (2 worker
    processes, a thread each): one fold trains in each worker, and the workers run Great
    Expectations. (The other flow tests run on the default thread pool.)"""
    from distributed import Client

    from flows.nightly import local_dask_cluster, task_runner

    def trained_here() -> bool:  # a worker that ran a training has started its preload server
        from components import preload

        return bool(preload._servers)

    def validated_here() -> bool:  # a worker that ran a validation batch has imported GE
        import sys

        return "great_expectations" in sys.modules

    omp = os.environ.get("OMP_NUM_THREADS")
    with (
        local_dask_cluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert not any(client.run(trained_here).values()) and not any(client.run(validated_here).values())
        monkeypatch.setenv(validation.BATCH_ROWS_ENV, "2000")
        out = run_nightly(flow_env, task_runner=task_runner("dask", address=cluster.scheduler_address))
        ran, validated = client.run(trained_here), client.run(validated_here)
    assert len(ran) == 2 and all(ran.values()), ran  # one fold in each worker process
    assert any(validated.values()), validated
    (raw,) = Path(flow_env["lake"]).glob(f"01_raw/*-{out.data_hash}")
    assert len(validation.batches(storage.partitions(str(raw / lake.EVENTS)), 2000)) > 1
    assert os.environ.get("OMP_NUM_THREADS") == omp  # the workers' one thread each stays theirs
    r = out.results[0]
    assert len(r.report.fold_metrics) == 2
    assert r.decision.promote and r.registered.version == "1"
    assert tracking.alias_version("interestflow-mf", "champion") == "1"
    assert r.report.test["ndcg10"] > r.report.popularity["ndcg10"]  # a trained model beats popularity here
    recs = storage.read_parquet(out.recommendations.uri)
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
    assert recs["user_id"].nunique() == flow_env["events"]["user_id"].nunique()
    assert (recs.groupby("user_id").size() == 10).all()
    seen = set(zip(flow_env["events"].user_id, flow_env["events"].item_id, strict=True))
    assert not any((u, i) in seen for u, i in zip(recs.user_id, recs.item_id, strict=True))

    # The test-time top-10 reproduces the logged HR@10 / NDCG@10 independently of our code.
    top = storage.read_parquet(r.report.test_recommendations_uri)
    ev = flow_env["events"].sort_values(["user_id", "timestamp", "seq_pos"], kind="stable")
    last = ev.groupby("user_id")["item_id"].last()
    hit_rank = top.merge(last.rename("target"), left_on="user_id", right_index=True)
    hit_rank = hit_rank[hit_rank.item_id == hit_rank.target].set_index("user_id")["rank"]
    ranks = np.array([hit_rank.get(u, 10_000) - 1 for u in last.index])
    m = metrics.rank_metrics(ranks, ks=(10,))
    assert m["hr10"] == pytest.approx(r.report.test["hr10"]) and m["ndcg10"] == pytest.approx(r.report.test["ndcg10"])

    # What people look at in MLflow: curves, per-fold CV, the metric table.
    c = tracking.client()
    assert {"plots/learning_curve.png", "plots/cv_folds.png"} <= {
        a.path for a in c.list_artifacts(r.report.run_id, "plots")
    }
    assert "metrics_table.json" in {a.path for a in c.list_artifacts(r.report.run_id)}
    png = c.download_artifacts(r.report.run_id, "plots/cv_folds.png", str(flow_env["root"]))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # Profiles from the serving champion, summarised in the run's report.
    prof = out.profiles
    assert lake.is_complete(prof.uri) and "## Interest profiles" in out.summary
    assert len(storage.read_parquet(storage.join(prof.uri, "profiles.parquet"))) == recs["user_id"].nunique()
    assert set(prof.summary) >= {"churn_auc", "churn_auc_recency_baseline", "next_category_acc_mf"}


@pytest.mark.slow
def test_a_worse_model_does_not_take_the_champion_alias(flow_env):
    before = tracking.alias_version("interestflow-mf", "champion")
    out = run_nightly(flow_env, max_epochs=1, patience=1, folds=1)  # one fold: the gate reads test targets
    r = out.results[0]
    assert not r.decision.promote, r.decision
    assert tracking.alias_version("interestflow-mf", "champion") == before
    assert tracking.alias_version("interestflow-mf", "challenger") == r.registered.version
    tags = tracking.client().get_run(r.report.run_id).data.tags
    assert tags["promotion.decision"] == "rejected" and "champion" in tags["promotion.reason"]
    assert tags["interestflow.flow_run_id"] not in ("", "None")  # the MLflow run names its Prefect run


@pytest.mark.slow
def test_bad_data_stops_the_flow_before_training_and_changes_nothing(flow_env):
    versions = {v.version for v in tracking.client().search_model_versions("name='interestflow-mf'")}
    champion = tracking.alias_version("interestflow-mf", "champion")
    recs_uri = storage.join(flow_env["lake"], "06_recommendations", "recommendations.parquet")
    recs_before = storage.read_bytes(recs_uri)
    ev = flow_env["events"].copy()
    ev.loc[10, "item_id"] = "NOT-IN-CATALOGUE"
    spec = write_slice(flow_env["root"] / "bad", ev, flow_env["items"], name="flowslice")
    with pytest.raises(DataValidationError, match="NOT-IN-CATALOGUE"):
        run_nightly(flow_env, spec=str(spec))
    assert {v.version for v in tracking.client().search_model_versions("name='interestflow-mf'")} == versions
    assert tracking.alias_version("interestflow-mf", "champion") == champion
    assert storage.read_bytes(recs_uri) == recs_before
    report = list((flow_env["root"] / "lake" / "quarantine").glob("*/report.md"))
    assert (
        report and "missing from the catalogue" in report[0].read_text() and "NOT-IN-CATALOGUE" in report[0].read_text()
    )
    bad_key = report[0].parent.name  # nothing downstream of validation exists for the bad input
    for layer in ("02_validated", "03_features", "04_datasets", "05_models"):
        assert not list((flow_env["root"] / "lake" / layer).glob(f"{bad_key}*")), layer
    assert isinstance(pd.read_parquet(report[0].parent / "events.parquet"), pd.DataFrame)


@pytest.mark.slow
def test_bert_trains_registers_and_serves_with_exploration(flow_env):
    out = run_nightly(flow_env, families=["bert"], max_epochs=3, folds=1, explore_share=0.2, profiles=False)
    r = out.results[0]
    assert r.registered.name == "interestflow-bert" and r.decision.promote
    assert {"cold_ndcg10", "cold_hr10", "cold_n"} <= set(r.report.test)
    recs = storage.read_parquet(out.recommendations.uri)
    assert out.recommendations.family == "bert" and (recs.groupby("user_id").size() == 10).all()
    assert recs.groupby("user_id")["item_id"].nunique().eq(10).all()


@pytest.mark.slow
def test_cli_recommends_for_one_user_through_the_served_model(flow_env, capsys):
    """`interestflow recommend --user`: the MLflow pyfunc champion gives the batch run's top-10."""
    from flows.cli import main

    user = sorted(flow_env["events"]["user_id"].unique())[3]
    main(["recommend", "--user", user, "--family", "mf", "--spec", flow_env["spec"], "--lake", flow_env["lake"]])
    printed = capsys.readouterr().out
    from components import recommend
    from components.datasets import Dataset

    ds = pipeline.data_path(flow_env["spec"], flow_env["lake"], 1, 0)
    top = pipeline.recommend_for_user(user, ds, ["mf"], 10)
    champion = pyfunc.load("models:/interestflow-mf@champion")
    batch = recommend.recommend(champion, Dataset.load(ds), 10)
    assert top["item_id"].tolist() == batch[batch.user_id == user]["item_id"].tolist()
    assert "interestflow-mf v1" in printed and all(i in printed for i in top["item_id"])
    assert top["title"].notna().all()
    with pytest.raises(SystemExit, match="not in the event log"):
        main(["recommend", "--user", "nobody", "--spec", flow_env["spec"], "--lake", flow_env["lake"]])


@pytest.mark.slow
def test_a_shop_log_trains_for_purchases_end_to_end(tmp_path, harness):
    """The shipped Taobao slice (views, favourites, carts, purchases) through the real flow:
    purchase targets, both baselines in the report and MLflow, only bought items excluded."""
    from flows.nightly import nightly

    spec = str(Path(__file__).resolve().parent.parent / "specs" / "taobao_shipped.yaml")
    out = nightly(
        spec=spec,
        lake=str(tmp_path / "lake"),
        families=["cnn"],
        folds=1,
        max_epochs=2,
        patience=1,
        batch_size=64,
        profile={"churn_window_days": 3},
    )
    r = out.results[0].report
    assert r.behaviour == {"target": "purchase", "weights": "cart=3,favorite=2,purchase=4,view=1", "exclude": "target"}
    assert 0 < r.n_eval_users < r.n_users
    assert r.recent["ndcg10"] > r.popularity["ndcg10"] and r.recent["repeat_n"] + r.recent["new_n"] == r.n_eval_users
    assert "recent interactions" in out.summary and "target **purchase**" in out.summary
    logged = tracking.client().get_run(r.run_id).data
    assert {"vs_recent_ndcg10", "vs_popularity_ndcg10", "test_repeat_ndcg10"} <= set(logged.metrics)
    assert logged.params["protocol.behaviour.exclude"] == "target"

    # Recommendations keep viewed items and leave out only what each shopper bought.
    ds = pipeline.data_path(spec, str(tmp_path / "lake"), 1, 0)
    events = storage.read_partitioned(lake.file(ds.features.validated.uri, lake.EVENTS))
    recs = storage.read_parquet(out.recommendations.uri)
    bought = set(zip(*events[events.event_type == "purchase"][["user_id", "item_id"]].to_numpy().T, strict=True))
    touched = set(zip(events.user_id, events.item_id, strict=True))
    pairs = set(zip(recs.user_id, recs.item_id, strict=True))
    assert not pairs & bought and pairs & touched
    assert out.profiles.summary["churn_eval_users"] > 0
