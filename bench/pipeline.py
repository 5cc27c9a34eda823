"""The nightly path on the full Amazon Beauty data: figures for issue 2.

Runs the same stages twice on fresh state, once called directly (no Prefect) and once
through the nightly flow, and prints per-stage wall time, total, peak RSS, test HR@10 and
NDCG@10 of each family and of popularity, and the orchestration overhead. The flow run's
lake is --lake, so DIR/06_recommendations/test_recommendations_<family>.parquet holds the
exact test-time top-10 its metrics came from.

    .venv/bin/python bench/pipeline.py --lake bench/out/pipeline

The nightly time alone (issue 3: mf, lstm and cnn, 3 folds, under 45 minutes on CPU):

    .venv/bin/python bench/pipeline.py --lake bench/out/nightly --flow-only \
        --families mf lstm cnn --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import ROOT, fresh_home, peak_rss_gib, quiet_env


def direct(spec: str, lake: str, families: list[str], cfg: dict, folds: int) -> tuple[dict, dict]:
    """The flow's stages as plain calls, timed one by one."""
    from components import datasets, evaluation, events, features, promotion, recommend, tracking, training, validation

    t: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        t[name] = t.get(name, 0.0) + time.perf_counter() - t0
        return out

    raw = timed("ingest", events.ingest, spec, lake)
    val = timed("validate", validation.validate, raw, lake)
    feat = timed("features", features.build_features, val, lake)
    ds = timed("datasets", datasets.build_datasets, feat, lake, folds, cfg["seed"])
    reports = {}
    for fam in families:
        fold_res = [
            timed(f"train_folds_{fam}", training.run_stage, ds, fam, "fold", cfg, lake, None, fold=k)
            for k in range(folds)
        ]
        cv = training.summarize_folds(fold_res)
        final = timed(f"train_final_{fam}", training.run_stage, ds, fam, "final", cfg, lake, None, epochs=cv["epochs"])
        rep = timed(f"evaluate_{fam}", evaluation.evaluate_final, ds, {**final, "cv": cv}, lake, cv)
        reg = timed(f"register_{fam}", tracking.register_challenger, rep, ds["data_hash"])
        timed(f"promote_{fam}", promotion.run_gate, reg, rep, ds)
        reports[fam] = rep
    timed("recommend", recommend.batch_recommendations, ds, families, lake, 10)
    return t, reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="folder for the flow run's lake, MLflow and Prefect state")
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"))
    ap.add_argument("--families", nargs="+", default=["mf"])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--precision", default="auto", help="the flow's precision parameter (Lightning precision)")
    ap.add_argument("--flow-only", action="store_true", help="time the flow alone (no direct-call half)")
    args = ap.parse_args()
    quiet_env()
    flow_dir = Path(args.lake).resolve()
    direct_dir = flow_dir.with_name(flow_dir.name + "-direct")
    # The same training config as the flow's defaults (all cores, seed 0).
    cfg = {"max_epochs": args.max_epochs, "patience": args.patience, "seed": 0, "precision": args.precision}

    stages, direct_s = {}, None
    if not args.flow_only:
        fresh_home(direct_dir)
        t0 = time.perf_counter()
        stages, _ = direct(args.spec, str(direct_dir), args.families, {**cfg, "model": {}}, args.folds)
        direct_s = time.perf_counter() - t0

    fresh_home(flow_dir)
    from flows.nightly import nightly

    t0 = time.perf_counter()
    out = nightly(
        spec=args.spec,
        lake=str(flow_dir),
        families=args.families,
        folds=args.folds,
        max_epochs=args.max_epochs,
        patience=args.patience,
        precision=args.precision,
        seed=0,
    )
    flow_s = time.perf_counter() - t0

    figures = {
        "total_s": round(flow_s, 1),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "families": " ".join(args.families),
        "folds": args.folds,
        "precision": args.precision,
    }
    if direct_s is not None:
        figures.update({"direct_s": round(direct_s, 1), "overhead_ratio": round((flow_s - direct_s) / flow_s, 4)})
    pop = out["results"][0]["popularity"]
    figures.update({"pop_hr10": round(pop["hr10"], 4), "pop_ndcg10": round(pop["ndcg10"], 4)})
    for r in out["results"]:
        f = r["family"]
        figures.update(
            {
                f"{f}_hr10": round(r["test"]["hr10"], 4),
                f"{f}_ndcg10": round(r["test"]["ndcg10"], 4),
                f"{f}_cv_ndcg10_mean": round(r["cv"]["ndcg10_mean"], 4),
                f"{f}_cv_ndcg10_std": round(r["cv"]["ndcg10_std"], 4),
                f"{f}_epochs": r["cv"]["epochs"],
            }
        )
    if stages:
        print("\nStage wall times (direct calls, no Prefect), seconds")
        for name, s in stages.items():
            print(f"  {name:<24}{s:9.1f}")
        print(f"  {'total (direct)':<24}{direct_s:9.1f}")
    print(f"  {'total (Prefect flow)':<24}{flow_s:9.1f}")
    print("\nTest figures (full ranking, history excluded; popularity ties broken by item id)")
    for k, v in figures.items():
        print(f"  {k:<24}{v}")
    print(json.dumps({**figures, **{f"stage_{k}_s": round(v, 1) for k, v in stages.items()}}))


if __name__ == "__main__":
    main()
