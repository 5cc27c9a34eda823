"""The nightly path on the full Amazon Beauty data: figures for issue 2.

Runs the same stages with the same settings twice, each on fresh state: once through
``components.pipeline.nightly`` with a :class:`~components.pipeline.Stages` table of
pipeline.PLAIN's functions, each wrapped in a timer (plain calls, no Prefect), and once
through the nightly flow, whose TASKS table runs those same functions as Prefect tasks.
Prints per-stage wall time of the plain run, total, peak RSS, test HR@10 and NDCG@10 of
each family and of popularity, and the orchestration overhead: the overhead ratio compares
the same stages and settings (pipeline.PLAIN vs the flow's TASKS). The flow run's lake is
--lake, so DIR/06_recommendations/test_recommendations_<family>.parquet holds the exact
test-time top-10 its metrics came from.

    .venv/bin/python bench/pipeline.py --lake bench/out/pipeline

The nightly time alone (issue 3: mf, lstm and cnn, 3 folds, under 45 minutes on CPU):

    .venv/bin/python bench/pipeline.py --lake bench/out/nightly --flow-only \
        --families mf lstm cnn --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from _common import ROOT, fresh_home, peak_rss_gib, quiet_env

# The family a per-family stage works on, from its positional arguments (components/pipeline.py).
FAMILY_OF = {
    "train_folds": lambda a: a[1],  # (dataset, family, cfg, root, tags)
    "train_final": lambda a: a[1],  # (dataset, family, folds, cfg, root, tags)
    "evaluate": lambda a: a[1].family,  # (dataset, final, folds, root)
    "register": lambda a: a[0].family,  # (report,)
    "promote": lambda a: a[1].family,  # (registered, report, dataset, gate)
}


def timed_stages(times: dict[str, float]):
    """pipeline.PLAIN with every stage timed into ``times`` (per family where a stage is)."""
    from components import pipeline

    def timed(name, fn):
        def run(*args, **kwargs):
            key = f"{name}_{FAMILY_OF[name](args)}" if name in FAMILY_OF else name
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key] = times.get(key, 0.0) + time.perf_counter() - t0

        return run

    plain = pipeline.PLAIN
    return pipeline.Stages(**{f.name: timed(f.name, getattr(plain, f.name)) for f in dataclasses.fields(plain)})


def flow_parameters(settings) -> dict:
    """The nightly flow's parameters that make it run with ``settings`` (every one, so that
    both halves run with the same settings whatever the defaults)."""
    t = settings.train
    return {
        "families": list(settings.families),
        "folds": settings.folds,
        "max_epochs": t.max_epochs,
        "patience": t.patience,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "seed": t.seed,
        "accelerator": t.accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": t.precision,
        "model": settings.model,
        "min_gain": settings.gate.min_gain,
        "tolerance": settings.gate.tolerance,
        "k": settings.k,
        "serve_family": settings.serve_family,
        "explore_share": settings.explore_share,
        "profiles": settings.profiles,
        "profile": settings.profile,
        "dry_run": settings.dry_run,
    }


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
    from components import pipeline
    from components.config import TrainConfig

    flow_dir = Path(args.lake).resolve()
    direct_dir = flow_dir.with_name(flow_dir.name + "-direct")
    # The flow's defaults (all cores, seed 0) but for the families, folds, epoch budget and precision.
    settings = pipeline.NightlySettings(
        families=tuple(args.families),
        folds=args.folds,
        train=TrainConfig(max_epochs=args.max_epochs, patience=args.patience, seed=0, precision=args.precision),
    )

    stages: dict[str, float] = {}
    direct_s = None
    if not args.flow_only:
        fresh_home(direct_dir)
        t0 = time.perf_counter()
        pipeline.nightly(args.spec, str(direct_dir), settings, stages=timed_stages(stages))
        direct_s = time.perf_counter() - t0

    fresh_home(flow_dir)
    from flows.nightly import nightly

    t0 = time.perf_counter()
    out = nightly(spec=args.spec, lake=str(flow_dir), **flow_parameters(settings))
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
    pop = out.results[0].report.popularity
    figures.update({"pop_hr10": round(pop["hr10"], 4), "pop_ndcg10": round(pop["ndcg10"], 4)})
    for r in out.results:
        f, rep = r.family, r.report
        figures.update(
            {
                f"{f}_hr10": round(rep.test["hr10"], 4),
                f"{f}_ndcg10": round(rep.test["ndcg10"], 4),
                f"{f}_cv_ndcg10_mean": round(rep.cv["ndcg10_mean"], 4),
                f"{f}_cv_ndcg10_std": round(rep.cv["ndcg10_std"], 4),
                f"{f}_epochs": rep.cv["epochs"],
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
