"""The run summary: the behaviour the figures follow, per family CV mean ± std, test figures
beside the popularity and recent-interaction baselines, repeat/new targets, promotion decision."""

from __future__ import annotations

from components import lake, tracking
from components.plots import CV_FOLDS, LEARNING_CURVE

METRICS = ("hr5", "hr10", "hr20", "ndcg5", "ndcg10", "ndcg20", "mrr", "coverage10")


def verdict(fr) -> tuple[str, str]:
    """A FamilyResult's promotion decision and its reason, as two texts."""
    d = fr.decision
    return ("dry run", "nothing registered") if d is None else (d.verdict, d.reason)


def leaderboard(results: list) -> list[dict]:
    """One row per family (plus popularity): the figures people compare, version, test NDCG@10
    and the decision first. ``results``: the nightly path's FamilyResults (components/pipeline.py)."""
    rows = []
    for fr in results:
        r = fr.report
        decision, reason = verdict(fr)
        row = {
            "family": r.family,
            "version": fr.registered.version if fr.registered else "",
            "test_ndcg10": round(r.test["ndcg10"], 4),
            "decision": decision,
            "reason": reason,
        }
        row.update({f"test_{m}": round(r.test[m], 4) for m in METRICS})
        row.update({f"cv_{m}": f"{r.cv[m + '_mean']:.4f} ± {r.cv[m + '_std']:.4f}" for m in METRICS})
        rows.append(row)
    if results:
        for name, base in (
            ("popularity", results[0].report.popularity),
            ("recent interactions", results[0].report.recent),
        ):
            if base:
                rows.append({"family": name, **{f"test_{m}": round(base[m], 4) for m in METRICS}})
    return rows


def behaviour_line(report) -> str:
    """What the figures are about: the target behaviour, weights, exclusion, who is evaluated."""
    b = report.behaviour or {"target": "any", "weights": "all 1", "exclude": "interacted"}
    return (
        f"Behaviour: target **{b['target']}**, weights {b['weights']}, exclude {b['exclude']}; "
        f"{report.n_eval_users} of {report.n_users} users evaluated (the others have fewer than two target events "
        "and only train)" + _sampled(report) + "."
    )


def _sampled(report) -> str:
    sample = report.n_test_sample
    return "" if sample is None else f"; the test figures are on a fixed random sample of {sample:,} of them"


def markdown(results: list, recommendations, data_hash: str, profiles=None, reviews=None, root: str = "") -> str:
    """The run summary: FamilyResults, the RecommendationsLayer, the ProfilesLayer and the
    ReviewsLayer (each may be None). Lake URIs are shown relative to the lake ``root``; MLflow
    runs, versions and plots are links (tracking.ui_url)."""
    lines = [f"# interestflow nightly run (data {data_hash})", ""]
    if results:
        lines += [behaviour_line(results[0].report), ""]
        lines += [f"Lake: `{root}`; MLflow: [runs]({tracking.runs_link()})", ""] if root else []
    lines += [
        "| family | metric | CV mean ± std | test | popularity (test) | recent interactions (test) |",
        "|---|---|---|---|---|---|",
    ]
    for r in (fr.report for fr in results):
        for m in METRICS:
            recent = f"{r.recent[m]:.4f}" if r.recent else ""
            lines.append(
                f"| {r.family} | {m} | {r.cv[m + '_mean']:.4f} ± {r.cv[m + '_std']:.4f} | "
                f"{r.test[m]:.4f} | {r.popularity[m]:.4f} | {recent} |"
            )
    lines += [
        "",
        "## Repeat and new targets (was the target item already in the user's history?)",
        "",
        "| family | repeat targets | NDCG@10 | recent interactions | new targets | NDCG@10 | popularity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (fr.report for fr in results):
        t, p = r.test, r.popularity
        recent = f"{r.recent['repeat_ndcg10']:.4f}" if r.recent else ""
        if "repeat_n" in t:
            lines.append(
                f"| {r.family} | {t['repeat_n']} | {t['repeat_ndcg10']:.4f} | {recent} | "
                f"{t['new_n']} | {t['new_ndcg10']:.4f} | {p['new_ndcg10']:.4f} |"
            )
    lines += [
        "",
        "## Cold start (test targets whose item has <= 5 training interactions)",
        "",
        "| family | targets | HR@10 | NDCG@10 | popularity NDCG@10 |",
        "|---|---|---|---|---|",
    ]
    for r in (fr.report for fr in results):
        t, p = r.test, r.popularity
        lines.append(
            f"| {r.family} | {t['cold_n']} | {t['cold_hr10']:.4f} | {t['cold_ndcg10']:.4f} | {p['cold_ndcg10']:.4f} |"
        )
    lines += [
        "",
        "## Promotion",
        "",
        "| family | version | test NDCG@10 | decision | reason | popularity | recent interactions |",
        "|---|---|---|---|---|---|---|",
    ]
    for fr in results:
        r = fr.report
        decision, reason = verdict(fr)
        v = fr.registered
        version = f"[v{v.version}]({tracking.version_link(v.name, v.version)})" if v else "-"
        recent = f"{r.recent['ndcg10']:.4f}" if r.recent else ""
        lines.append(
            f"| {fr.family} | {version} | {r.test['ndcg10']:.4f} | {decision} | {reason} | "
            f"{r.popularity['ndcg10']:.4f} | {recent} |"
        )
    if results:
        lines += ["", "## Plots (MLflow)", ""]
        lines += [
            f"- {fr.family}: [learning curve]({tracking.artifact_link(fr.report.run_id, LEARNING_CURVE)})"
            + (
                f", [cross-validation folds]({tracking.artifact_link(fr.report.run_id, CV_FOLDS)})"
                if fr.report.fold_metrics
                else ""
            )
            + f", [final run]({tracking.run_link(fr.report.run_id)})"
            for fr in results
        ]
    if recommendations:
        r = recommendations
        where = lake.relative(root, r.uri)
        lines += ["", f"Recommendations: {r.rows} rows for {r.users} users from {r.family} v{r.version} -> `{where}`"]
    if reviews:
        lines += review_lines(reviews)
    if profiles:
        lines += profile_lines(profiles, root)
    return "\n".join(lines) + "\n"


def sentiment_line(r: dict) -> str:
    """A reviews report's sentiment figures beside VADER's, or why there are none."""
    if r.get("sentiment_skipped"):
        return r["sentiment_skipped"]
    return (
        f"Sentiment on the {r['sentiment_test_reviews']} reviews from {r['sentiment_cut']} on (trained on the "
        f"{r['sentiment_train_reviews']} before): AUC positive vs negative {r['sentiment_auc']:.4f} "
        f"(VADER {r['vader_auc']:.4f}), macro-F1 {r['sentiment_macro_f1']:.4f} (VADER {r['vader_macro_f1']:.4f})."
    )


def review_lines(reviews) -> list[str]:
    """A ReviewsLayer's figures as markdown: sentiment beside VADER, the gate, the topics."""
    r = reviews.report
    lines = ["", f"## What the reviews say ({r['reviews']} reviews)", "", sentiment_line(r)]
    if reviews.decision is not None:
        d = reviews.decision
        verdict = "promoted to champion" if d.promote else "not promoted"
        lines.append(
            f"Sentiment model {reviews.registered.name} v{reviews.registered.version}: {verdict} ({d.reason})."
        )
    lines += ["", "| topic | keywords |", "|---|---|"]
    lines += [f"| {label} | {', '.join(words)} |" for label, words in reviews.topics]
    return lines


def profile_lines(profiles, root: str = "") -> list[str]:
    """A ProfilesLayer's figures as markdown (its URI relative to the lake ``root``)."""
    s = profiles.summary
    churn = (
        s["churn_skipped"]
        if s.get("churn_skipped")
        else f"Churn (time split, next {s['churn_window_days']} days): AUC {s['churn_auc']:.3f} vs recency only "
        f"{s['churn_auc_recency_baseline']:.3f}; precision in the top decile {s['churn_precision_top_decile']:.3f}."
    )
    lines = [
        "",
        f"## Interest profiles (`{lake.relative(root, profiles.uri)}`)",
        "",
        f"{churn} Drift (JSD, nats): median {s['drift_jsd_median']:.3f} over {s['drift_users']} users.",
        "",
        "| next-category accuracy | |",
        "|---|---|",
    ]
    lines += [
        f"| {k.removeprefix('next_category_acc_')} | {v:.3f} |" for k, v in s.items() if "next_category_acc_" in k
    ]
    if profiles.exploration:
        lines += ["", "| exploration share | NDCG@10 | coverage@10 | diversity | novelty |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['share']:.1f} | {r['ndcg10']:.4f} | {r['coverage10']:.4f} | {r['diversity']:.3f} | "
            f"{r['novelty']:.2f} |"
            for r in profiles.exploration
        ]
    lines += [
        "",
        f"Plots in MLflow run [profiles]({tracking.run_link(profiles.run_id)}): "
        + ", ".join(f"[{f.split('/')[-1]}]({tracking.artifact_link(profiles.run_id, f)})" for f in profiles.figures),
    ]
    return lines
