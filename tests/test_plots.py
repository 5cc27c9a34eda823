"""The figures logged to MLflow: each opens as a PNG of the expected size, and once drawn
no title, axis label, tick label, legend or annotation lies outside the figure."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from components import plots


def _history(n: int, val: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for e in range(1, n + 1):
        row = {"epoch": e, "train_loss": 150.0 / e + rng.random()}
        if val:
            row["val_ndcg10"] = 0.05 * (1 - np.exp(-e / 3)) - 0.002 * max(0, e - 7)
        rows.append(row)
    return rows


def _figures() -> dict:
    out = {}
    out.update({f"fold/{k}": v for k, v in plots.learning_curve(_history(12, True), "bert-fold0").items()})
    out.update({f"final/{k}": v for k, v in plots.learning_curve(_history(8, False), "bert-final", 8).items()})
    folds = [{"ndcg10": 0.05 + i / 100, "hr10": 0.09, "mrr": 0.04} for i in range(3)]
    out.update(plots.cv_folds(folds))
    fpr = np.linspace(0, 1, 20)
    curves = {"churn model (AUC 0.80)": (fpr, np.sqrt(fpr)), "recency only (AUC 0.68)": (fpr, fpr**0.7)}
    table = [
        {"share": s, "ndcg10": 0.06 - s / 20, "coverage10": 0.30 + s / 2, "diversity": 0.5, "novelty": 9.0}
        for s in (0.0, 0.1, 0.2, 0.5, 1.0)
    ]
    drifts = np.random.default_rng(1).beta(2, 5, 500) * 0.69
    out.update(plots.profile_figures(drifts, curves, table))
    return out


FIGURES = _figures()


@pytest.mark.parametrize("path", sorted(FIGURES))
def test_a_logged_figure_is_a_png_of_its_size_with_every_label_inside(path):
    fig = FIGURES[path]
    assert plots.clipped_texts(fig) == [], f"{path}: labels outside the figure"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # as tracking.log_figure writes it
    image = Image.open(io.BytesIO(buf.getvalue()))
    w, h = fig.get_size_inches() * fig.dpi
    assert image.format == "PNG" and image.size == (round(w), round(h))
    assert np.asarray(image.convert("L")).std() > 10, f"{path}: a blank image"


def test_the_learning_curve_has_a_legend_and_marks_the_best_epoch():
    fig = FIGURES["fold/plots/learning_curve.png"]
    legend = fig.axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:2] == ["training loss", "validation NDCG@10"]
    best = 1 + int(np.argmax([h["val_ndcg10"] for h in _history(12, True)]))
    assert labels[2] == f"best epoch ({best})"


def test_a_clipped_label_is_found():
    """The check itself: a label pushed past the right edge is reported."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xlabel("a label far too long for a figure only three inches wide, so it runs off both sides")
    assert plots.clipped_texts(fig)
