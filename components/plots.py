"""The figures logged to MLflow (matplotlib, headless): training curves, CV folds, profiles.

Each function returns {artifact path: figure}; ``tracking.log_figure`` logs and closes them.
"""

from __future__ import annotations

import numpy as np

LEARNING_CURVE, CV_FOLDS = "plots/learning_curve.png", "plots/cv_folds.png"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def learning_curve(history: list[dict], title: str, best_epoch: int | None = None) -> dict:
    """Training loss and (for folds) validation NDCG@10 per epoch, with a legend; the best
    epoch (the checkpoint kept) is marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    epochs = [h["epoch"] for h in history]
    lines = ax.plot(
        epochs, [h.get("train_loss", np.nan) for h in history], marker=".", color="#4c72b0", label="training loss"
    )
    ax.set(xlabel="epoch", ylabel="training loss", title=title)
    if any("val_ndcg10" in h for h in history):
        ax2 = ax.twinx()
        val = [h.get("val_ndcg10", np.nan) for h in history]
        lines += ax2.plot(epochs, val, marker=".", color="#dd8452", label="validation NDCG@10")
        ax2.set_ylabel("validation NDCG@10", color="#dd8452")
        if best_epoch is None and np.isfinite(val).any():
            best_epoch = epochs[int(np.nanargmax(val))]
    if best_epoch is not None:
        lines.append(ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch})"))
    ax.legend(handles=lines, fontsize=8, loc="best")
    fig.tight_layout()
    return {LEARNING_CURVE: fig}


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
    return {CV_FOLDS: fig}


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
    for fig in out.values():
        fig.tight_layout()  # no axis label cut off at the edge
    return out


def clipped_texts(fig) -> list[str]:
    """What of ``fig`` lies outside the figure once drawn (each axes with its title, labels,
    tick labels, legend and annotations, as matplotlib's tight bounding box measures it):
    empty when nothing is clipped."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    for ax in fig.axes:
        e = ax.get_tightbbox(renderer)
        if e is not None and (e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1):
            out.append(f"axes {ax.get_title() or ax.get_ylabel()!r}: {e.bounds} outside {box.bounds}")
    return out
