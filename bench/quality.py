"""Quality of every family on the full Amazon Beauty data, beside the published table.

Runs the nightly flow (dry run: nothing registered) with the protocol of DESIGN.md §5 and
prints family × HR@5/10/20, NDCG@5/10/20, MRR, coverage@10, cold-start HR@10 and NDCG@10
(test targets whose item has <= 5 training interactions), best epoch and training seconds
next to the published full-ranking figures. Each family's test-time top-10 is
written to DIR/06_recommendations/test_recommendations_<family>.parquet.

    .venv/bin/python bench/quality.py --lake bench/out/quality --families mf lstm cnn

``--folds 1`` (the default here) is the classic single validation split: early stopping
on every user's validation target, then the final fit on everything but the test targets.
"""

from __future__ import annotations

import argparse
import json
import time

from _common import PUBLISHED, ROOT, fresh_home, peak_rss_gib, quiet_env

COLS = ("hr5", "hr10", "hr20", "ndcg5", "ndcg10", "ndcg20", "mrr", "coverage10", "cold_hr10", "cold_ndcg10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--families", nargs="+", default=["mf", "lstm", "cnn", "bert"])
    ap.add_argument("--model", default="{}", help='per-family config overrides as JSON, e.g. {"bert": {"dim": 128}}')
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"))
    ap.add_argument("--folds", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="the flow's seed (folds, weights, shuffling)")
    ap.add_argument("--precision", default="auto", help="Lightning precision (auto: 32-true on CPU, bf16-mixed on GPU)")
    ap.add_argument(
        "--tuned",
        metavar="LAKE",
        help="train each family with its current tuned settings in LAKE (09_settings, written by "
        "`interestflow tune`); --model still overrides them",
    )
    args = ap.parse_args()
    quiet_env()
    model = json.loads(args.model)
    tuned = {}
    if args.tuned:
        from components import tuning
        from tasks.ingest import spec_name

        for f in args.families:
            if t := tuning.read_settings(args.tuned, spec_name(args.spec), f):
                model[f], tuned[f"{f}_tuned"] = {**t.model, **model.get(f, {})}, t.label
                print(f"{f}: tuned settings {t.label}: {model[f]}")
    lake = fresh_home(args.lake)
    from flows.nightly import nightly

    t0 = time.perf_counter()
    out = nightly(
        spec=args.spec,
        lake=str(lake),
        families=args.families,
        folds=args.folds,
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        precision=args.precision,
        model=model,
        dry_run=True,
    )
    total = time.perf_counter() - t0
    head = f"{'model':<12}" + "".join(f"{c:>11}" for c in COLS) + f"{'epochs':>8}{'train_s':>9}"
    print("\nTest, full ranking over all items, history excluded (ours), and published (HR@10, NDCG@10)")
    print(head)
    figures = dict(tuned)
    for r in (fr.report for fr in out.results):
        f, t = r.family, r.test
        train_s = r.final_train_s + r.cv["folds_train_s"]
        print(f"{f:<12}" + "".join(f"{t[c]:>11.4f}" for c in COLS) + f"{r.epochs:>8}{train_s:>9.0f}")
        figures.update({f"{f}_{c}": round(t[c], 4) for c in COLS})
        figures.update({f"{f}_epochs": r.epochs, f"{f}_train_s": round(train_s, 1)})
    pop = out.results[0].report.popularity
    n_cold = out.results[0].report.test["cold_n"]
    print(f"{'popularity':<12}" + "".join(f"{pop[c]:>11.4f}" for c in COLS))
    figures.update({f"pop_{c}": round(pop[c], 4) for c in COLS})
    for name, (hr, ndcg) in PUBLISHED.items():
        print(f"{name + '*':<12}{'':>11}{hr:>11.4f}{'':>11}{'':>11}{ndcg:>11.4f}")
    print("* published (S3-Rec repository, Zhou et al. CIKM 2020); PopRec there counted the test items too")
    print(f"cold_*: the {n_cold} test targets whose item has <= 5 training interactions")
    figures["cold_targets"] = n_cold
    figures.update({"total_s": round(total, 1), "peak_rss_gib": round(peak_rss_gib(), 2)})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
