"""The figures logged to MLflow (matplotlib, headless): training curves, CV folds, profiles.

Each function returns {artifact path: figure}; ``tracking.log_figure`` logs and closes them.
"""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def learning_curve(history: list[dict], title: str) -> dict:
    """Training loss and (for folds) validation NDCG@10 per epoch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h.get("train_loss", np.nan) for h in history], marker=".", color="#4c72b0")
    ax.set(xlabel="epoch", ylabel="training loss", title=title)
    if any("val_ndcg10" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [h.get("val_ndcg10", np.nan) for h in history], marker=".", color="#dd8452")
        ax2.set_ylabel("validation NDCG@10", color="#dd8452")
    fig.tight_layout()
    return {"plots/learning_curve.png": fig}


def cv_folds(fold_metrics: list[dict], keys=("ndcg10", "hr10", "mrr")) -> dict:
    """Per-fold validation figures with their mean."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    width = 0.8 / len(fold_metrics)
    x = np.arange(len(keys))
    for i, m in enumerate(fold_metrics):
        ax.bar(x + i * width, [m[k] for k in keys], width, label=f"fold {i}")
    for j, k in enumerate(keys):
        mean = np.mean([m[k] for m in fold_metrics])
        ax.hlines(mean, x[j] - width / 2, x[j] + 0.8 - width / 2, colors="black", linestyles=":")
    ax.set_xticks(x + 0.4 - width / 2, keys)
    ax.set(title="Cross-validation per fold (dotted: mean)", ylabel="validation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return {"plots/cv_folds.png": fig}


def profile_figures(drifts: np.ndarray, curves: dict, table: list[dict]) -> dict:
    """Drift distribution, churn ROC, exploration trade-off."""
    plt = _plt()
    out = {}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(drifts, bins=40, color="#4c72b0")
    ax.set(xlabel="Jensen–Shannon divergence (nats), older vs recent window", ylabel="users", title="Interest drift")
    out["plots/drift_distribution.png"] = fig
    if curves:  # none when the log is too short for two churn windows
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for name, (fpr, tpr) in curves.items():
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Churn ROC (evaluation window)")
        ax.legend()
        out["plots/churn_roc.png"] = fig
    if table:
        k = next(c for c in table[0] if c.startswith("ndcg"))
        cov = next(c for c in table[0] if c.startswith("coverage"))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r[cov] for r in table], [r[k] for r in table], marker="o")
        for r in table:
            ax.annotate(f"{r['share']:.1f}", (r[cov], r[k]))
        ax.set(xlabel=cov, ylabel=k, title="Exploration share: accuracy vs coverage")
        out["plots/exploration_tradeoff.png"] = fig
    return out
