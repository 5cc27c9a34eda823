"""Behaviours used vs every event alike, on a multi-behaviour log (default: the Taobao sample).

For each family: test NDCG@10 / HR@10 on the spec's target behaviour (purchases for
specs/taobao_sample.yaml) with the event types used (behaviour embedding, iALS
confidences, target-type objective) and with every event treated alike (the family's
``behaviours: false``), beside the popularity and recent-interaction baselines, each split
into repeat targets (the item was in the history) and new ones. Both variants are scored
under the spec's own target, history and exclusion rule, so they differ only in what the
model reads. Runs the nightly path without Prefect (``pipeline.nightly``, dry run, no
profiles). Writes each test-time top-10 to DIR/06_recommendations/test_recommendations_<family>.parquet
(behaviours used; the alike runs under DIR/alike/) and the test targets to
DIR/04_datasets/test_targets.parquet; ends with one JSON line.

    .venv/bin/python bench/behaviour.py --lake bench/out/behaviour --families mf lstm cnn bert
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from _common import ROOT, fresh_home, peak_rss_gib, quiet_env

COLS = ("ndcg10", "hr10", "repeat_ndcg10", "new_ndcg10", "repeat_hr10", "new_hr10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "taobao_sample.yaml"))
    ap.add_argument("--families", nargs="+", default=["mf", "lstm", "cnn", "bert"])
    ap.add_argument("--model", default="{}", help='per-family config overrides as JSON, e.g. {"bert": {"dim": 128}}')
    ap.add_argument("--folds", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64, help="users per batch (815 users: 13 steps an epoch)")
    ap.add_argument("--no-alike", action="store_true", help="skip the every-event-alike runs")
    args = ap.parse_args()
    quiet_env()
    lake = fresh_home(args.lake)
    from components import lake as lake_
    from components import pipeline, storage
    from components.config import TrainConfig
    from components.datasets import Dataset
    from components.report import behaviour_line

    overrides = json.loads(args.model)
    settings = pipeline.NightlySettings(
        families=tuple(args.families),
        folds=args.folds,
        train=TrainConfig(
            max_epochs=args.max_epochs, patience=args.patience, seed=args.seed, batch_size=args.batch_size
        ),
        model=overrides,
        profiles=False,
        dry_run=True,
    )
    t0 = time.perf_counter()
    variants = {"typed": pipeline.nightly(args.spec, str(lake), settings)}
    if not args.no_alike:
        alike = {f: {**overrides.get(f, {}), "behaviours": False} for f in args.families}
        variants["alike"] = pipeline.nightly(args.spec, str(lake / "alike"), replace(settings, model=alike))
    total = time.perf_counter() - t0

    # The test targets the figures are about (user_id, item_id, ts), beside the top-10s.
    dataset = pipeline.data_path(args.spec, str(lake), args.folds, args.seed)
    data = Dataset.load(dataset)
    users = storage.read_parquet(lake_.file(dataset.features.uri, "users.parquet"))
    rows = [
        {"user_id": data.user_ids[u], "item_id": data.item_ids[data.seqs[u][p]], "ts": int(users["ts"][u][p])}
        for u, p in enumerate(data.test_pos)
        if p >= 0
    ]
    import pandas as pd

    storage.write_parquet(pd.DataFrame(rows), str(lake / "04_datasets" / "test_targets.parquet"))

    first = variants["typed"].results[0].report
    print(f"\n{dataset.spec}: {behaviour_line(first).replace('**', '')}")
    target = first.behaviour["target"].replace(",", "_")
    print(f"{'model':<22}" + "".join(f"{c:>15}" for c in COLS) + f"{'epochs':>8}{'train_s':>9}")
    figures = {}
    for name, out in variants.items():
        for r in (fr.report for fr in out.results):
            t, key = r.test, r.family if name == "typed" else f"{r.family}_alike"
            train_s = r.final_train_s + r.cv["folds_train_s"]
            label = f"{r.family} ({'behaviours' if name == 'typed' else 'all alike'})"
            print(f"{label:<22}" + "".join(f"{t[c]:>15.4f}" for c in COLS) + f"{r.epochs:>8}{train_s:>9.0f}")
            figures.update(
                {f"{key}_{target}_{c}" if c in ("ndcg10", "hr10") else f"{key}_{c}": round(t[c], 4) for c in COLS}
            )
    for label, key, base in (("popularity", "pop", first.popularity), ("recent interactions", "recent", first.recent)):
        print(f"{label:<22}" + "".join(f"{base[c]:>15.4f}" for c in COLS))
        figures.update({f"{key}_{c}": round(base[c], 4) for c in COLS})
    figures.update(
        {
            "target": first.behaviour["target"],
            "eval_users": first.n_eval_users,
            "users": first.n_users,
            "repeat_targets": first.test["repeat_n"],
            "new_targets": first.test["new_n"],
            "total_s": round(total, 1),
            "peak_rss_gib": round(peak_rss_gib(), 2),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
