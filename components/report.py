"""The run summary: per family CV mean ± std, test figures, popularity, promotion decision."""

from __future__ import annotations

METRICS = ("hr5", "hr10", "hr20", "ndcg5", "ndcg10", "ndcg20", "mrr", "coverage10")


def leaderboard(results: list) -> list[dict]:
    """One row per family (plus popularity): the figures people compare. ``results``: the
    nightly path's FamilyResults (components/pipeline.py)."""
    rows = []
    for fr in results:
        r = fr.report
        row = {"family": r.family}
        for m in METRICS:
            row[f"cv_{m}"] = f"{r.cv[m + '_mean']:.4f} ± {r.cv[m + '_std']:.4f}"
            row[f"test_{m}"] = round(r.test[m], 4)
        row["decision"] = fr.decision.reason if fr.decision else "dry run: not registered"
        row["version"] = fr.registered.version if fr.registered else ""
        rows.append(row)
    if results:
        pop = results[0].report.popularity
        rows.append({"family": "popularity", **{f"test_{m}": round(pop[m], 4) for m in METRICS}})
    return rows


def markdown(results: list, recommendations, data_hash: str, profiles=None) -> str:
    """The run summary: FamilyResults, the RecommendationsLayer and the ProfilesLayer (or None)."""
    lines = [
        f"# interestflow nightly run (data {data_hash})",
        "",
        "| family | metric | CV mean ± std | test | popularity (test) |",
        "|---|---|---|---|---|",
    ]
    for r in (fr.report for fr in results):
        for m in METRICS:
            lines.append(
                f"| {r.family} | {m} | {r.cv[m + '_mean']:.4f} ± {r.cv[m + '_std']:.4f} | "
                f"{r.test[m]:.4f} | {r.popularity[m]:.4f} |"
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
    lines += ["", "## Promotion", "", "| family | version | decision | reason |", "|---|---|---|---|"]
    for fr in results:
        d = fr.decision
        verdict = ("promoted to champion" if d.promote else "not promoted") if d else "dry run"
        lines.append(
            f"| {fr.family} | {fr.registered.version if fr.registered else '-'} | {verdict} | "
            f"{d.reason if d else 'nothing registered'} |"
        )
    if recommendations:
        r = recommendations
        lines += ["", f"Recommendations: {r.rows} rows for {r.users} users from {r.family} v{r.version} -> `{r.uri}`"]
    if profiles:
        lines += profile_lines(profiles)
    return "\n".join(lines) + "\n"


def profile_lines(profiles) -> list[str]:
    """A ProfilesLayer's figures as markdown."""
    s = profiles.summary
    lines = [
        "",
        f"## Interest profiles (`{profiles.uri}`)",
        "",
        f"Churn (time split, next {s['churn_window_days']} days): AUC {s['churn_auc']:.3f} vs recency only "
        f"{s['churn_auc_recency_baseline']:.3f}; precision in the top decile {s['churn_precision_top_decile']:.3f}. "
        f"Drift (JSD, nats): median {s['drift_jsd_median']:.3f} over {s['drift_users']} users.",
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
    lines += ["", f"Plots in MLflow run `{profiles.run_id}`: " + ", ".join(f"`{f}`" for f in profiles.figures)]
    return lines
