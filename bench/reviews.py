"""What shoppers say, on a log with review text (default: Amazon Musical Instruments, 10,261 reviews).

Runs the data path (ingest of the JSON Lines file, validation, features, item and review text),
the reviews stage (sentiment beside VADER on a time split: trained on the earlier reviews,
tested on the later ones; BERTopic topics), registers the sentiment model through the
gate, times the profile stage with the review columns and the churn model with and without
sentiment, and trains bert with and without review text in its item vectors (3-fold CV for
the epoch budget, then the final fit; validation and test NDCG@10).

    .venv/bin/python bench/reviews.py --out bench/out/reviews [--spec specs/amazon_music_reviews.yaml]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from _common import ROOT, fresh_home, peak_rss_gib, quiet_env


def bert(ds, lake: str, cfg, review_text: bool) -> dict:
    """3-fold CV and the final fit of bert; its validation (CV mean) and test NDCG@10 / HR@10."""
    from components import pipeline

    cfg = replace(cfg, model={**cfg.model, "review_text": review_text})
    t0 = time.perf_counter()
    folds = pipeline.train_folds(ds, "bert", cfg, lake, {"bench": "reviews"})
    final = pipeline.train_final(ds, "bert", folds, cfg, lake, {"bench": "reviews"})
    rep = pipeline.evaluate(ds, final, folds, lake)
    return {
        "val_ndcg10": rep.cv["ndcg10_mean"],
        "test_ndcg10": rep.test["ndcg10"],
        "test_hr10": rep.test["hr10"],
        "epochs": rep.epochs,
        "seconds": time.perf_counter() - t0,
        "pop_ndcg10": rep.popularity["ndcg10"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_music_reviews.yaml"))
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bert", action="store_true", help="skip the two bert trainings")
    args = ap.parse_args()
    quiet_env()
    lake = str(fresh_home(args.out))
    from components import pipeline
    from components.config import TrainConfig

    t0 = time.perf_counter()
    ds = pipeline.data_path(args.spec, lake, 3, 0)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rev = pipeline.analyse_reviews(ds, lake, tags={"bench": "reviews"})
    reviews_s = time.perf_counter() - t0
    r = rev.report

    t0 = time.perf_counter()
    prof = pipeline.build_profiles(ds, lake, {}, None, {}, {"bench": "reviews"}, rev)
    profile_s = time.perf_counter() - t0
    s = prof.summary

    print(f"\n{r['reviews']} reviews; data path {data_s:.0f} s (review text: {ds.features.review_stats})")
    print(
        f"sentiment, {r['sentiment_test_reviews']} later reviews (from {r['sentiment_cut']}), trained on the "
        f"{r['sentiment_train_reviews']} before:"
    )
    print("| model | AUC pos vs neg | macro-F1 (3 classes) |\n|---|---|---|")
    print(f"| MiniLM + logistic regression | {r['sentiment_auc']:.4f} | {r['sentiment_macro_f1']:.4f} |")
    print(f"| VADER | {r['vader_auc']:.4f} | {r['vader_macro_f1']:.4f} |")
    print(f"gate: {rev.registered.name} v{rev.registered.version}: {rev.decision.reason}")
    print(f"\n{r['n_topics']} topics ({reviews_s:.1f} s for sentiment and topics):")
    print("| topic | keywords |\n|---|---|")
    for label, words in rev.topics:
        print(f"| {label} | {', '.join(words)} |")
    print(
        f"\nprofile stage {profile_s:.1f} s for {s['users']} users; churn (next {s['churn_window_days']} days) "
        f"AUC {s['churn_auc']:.4f} with sentiment, {s['churn_auc_no_sentiment']:.4f} without "
        f"(recency only {s['churn_auc_recency_baseline']:.4f}); {s['users_praising']} users praise, "
        f"{s['users_complaining']} complain about a topic"
    )
    out = {
        "reviews": r["reviews"],
        "sentiment_auc": round(r["sentiment_auc"], 4),
        "vader_auc": round(r["vader_auc"], 4),
        "sentiment_macro_f1": round(r["sentiment_macro_f1"], 4),
        "vader_macro_f1": round(r["vader_macro_f1"], 4),
        "n_topics": r["n_topics"],
        "profile_s": round(profile_s, 1),
        "churn_auc": round(s["churn_auc"], 4),
        "churn_auc_no_sentiment": round(s["churn_auc_no_sentiment"], 4),
    }
    if not args.no_bert:
        cfg = TrainConfig(max_epochs=args.max_epochs, patience=args.patience, num_threads=args.threads, seed=0)
        plain, mixed = bert(ds, lake, cfg, False), bert(ds, lake, cfg, True)
        print(f"\nbert on this log (3-fold CV chooses the epochs; popularity test NDCG@10 {plain['pop_ndcg10']:.4f}):")
        print("| item vectors | validation NDCG@10 | test NDCG@10 | test HR@10 | epochs | seconds |")
        print("|---|---|---|---|---|---|")
        for name, m in (("item text", plain), ("item text + training-time review text", mixed)):
            print(
                f"| {name} | {m['val_ndcg10']:.4f} | {m['test_ndcg10']:.4f} | {m['test_hr10']:.4f} | "
                f"{m['epochs']} | {m['seconds']:.0f} |"
            )
        out.update(
            bert_ndcg10=round(plain["test_ndcg10"], 4),
            bert_ndcg10_review_text=round(mixed["test_ndcg10"], 4),
            bert_val_ndcg10=round(plain["val_ndcg10"], 4),
            bert_val_ndcg10_review_text=round(mixed["val_ndcg10"], 4),
        )
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
