"""User interest profiles on the full Beauty data: stage time, churn, next category, exploration.

Trains one family's final model on everything but the test targets (a fixed epoch budget),
evaluates it (writing its test-time top-10), then times the profile stage that the nightly
flow runs after recommendations: profiles, drift, transitions, the churn model on a time
split (AUC beside a recency-only baseline), next-category accuracy and the exploration
table for shares 0, 0.1, 0.2, 0.3 (NDCG@10, coverage@10, intra-list diversity, novelty).

    .venv/bin/python bench/profiles.py --lake bench/out/profiles [--family bert --epochs 20] [--model JSON]
"""

from __future__ import annotations

import argparse
import json
import time

from _common import ROOT, fresh_home, peak_rss_gib, quiet_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"))
    ap.add_argument("--family", default="bert")
    ap.add_argument(
        "--epochs", type=int, default=20, help="final-fit epochs (bench/RESULTS.md: bert's best validation epoch: 20)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="{}", help='the family\'s settings as JSON, e.g. {"popularity_adjust": 0}')
    args = ap.parse_args()
    quiet_env()
    lake = str(fresh_home(args.lake))
    from components import pipeline
    from components.config import TrainConfig

    t0 = time.perf_counter()
    ds = pipeline.data_path(args.spec, lake, 1, 0)
    cfg = TrainConfig(max_epochs=args.epochs, num_threads=args.threads, seed=0, model=json.loads(args.model))
    final = pipeline.train(ds, args.family, "final", cfg, lake, epochs=args.epochs)
    rep = pipeline.evaluate(ds, final, [], lake)  # no folds: the test figures after the budget
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = pipeline.build_profiles(
        ds, lake, {}, final.model_uri, {args.family: rep.test_recommendations_uri}, {"bench": "profiles"}
    )
    profile_s = time.perf_counter() - t0
    s = out.summary

    print(f"\n{args.family} final model: test NDCG@10 {rep.test['ndcg10']:.4f} ({train_s:.0f} s to prepare and train)")
    print(f"profile stage: {profile_s:.1f} s for {s['users']} users, {s['categories']} categories")
    print(
        f"churn (next {s['churn_window_days']} days, eval churn rate {s['churn_rate_eval']:.2f}): "
        f"AUC {s['churn_auc']:.4f} vs recency only {s['churn_auc_recency_baseline']:.4f}; "
        f"precision@top decile {s['churn_precision_top_decile']:.4f} "
        f"vs {s['churn_precision_top_decile_recency_baseline']:.4f}"
    )
    print(
        f"next-category accuracy: {args.family} {s['next_category_acc_' + args.family]:.4f}, "
        f"most frequent category {s['next_category_acc_most_frequent_category']:.4f}"
    )
    print(
        f"drift (JSD, nats): mean {s['drift_jsd_mean']:.4f}, median {s['drift_jsd_median']:.4f}, "
        f"{s['drift_users']} users"
    )
    print(f"\n{'share':>6}{'NDCG@10':>10}{'HR@10':>9}{'cov@10':>9}{'diversity':>11}{'novelty':>9}")
    base = out.exploration[0]
    for r in out.exploration:
        print(
            f"{r['share']:>6.1f}{r['ndcg10']:>10.4f}{r['hr10']:>9.4f}{r['coverage10']:>9.4f}"
            f"{r['diversity']:>11.3f}{r['novelty']:>9.2f}"
            f"   NDCG {100 * (r['ndcg10'] / base['ndcg10'] - 1):+.1f}%,"
            f" coverage {100 * (r['coverage10'] / base['coverage10'] - 1):+.1f}%"
        )
    figures = {
        "family": args.family,
        "profile_s": round(profile_s, 1),
        "churn_auc": round(s["churn_auc"], 4),
        "churn_auc_recency_baseline": round(s["churn_auc_recency_baseline"], 4),
        "churn_precision_top_decile": round(s["churn_precision_top_decile"], 4),
        "churn_precision_top_decile_recency_baseline": round(s["churn_precision_top_decile_recency_baseline"], 4),
        "next_category_acc_model": round(s["next_category_acc_" + args.family], 4),
        "next_category_acc_most_frequent": round(s["next_category_acc_most_frequent_category"], 4),
        "drift_jsd_median": round(s["drift_jsd_median"], 4),
        "model_test_ndcg10": round(rep.test["ndcg10"], 4),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    for r in out.exploration:
        key = f"share{int(round(r['share'] * 100)):02d}"
        figures[f"{key}_ndcg10"] = round(r["ndcg10"], 4)
        figures[f"{key}_coverage10"] = round(r["coverage10"], 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
