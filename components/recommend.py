"""Batch recommendations (06_recommendations): top-K for every user from a champion, and which
champion serves."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components import evaluation, exploration, retrieval, tracking

log = logging.getLogger("interestflow")

if TYPE_CHECKING:
    from components.datasets import Dataset
    from components.recommender import Recommender


def recommend(
    rec: Recommender, data: Dataset, k: int = 10, explore_share: float = 0.0, item_cat: np.ndarray | None = None
) -> pd.DataFrame:
    """Top-k for every user from their whole history, seen items excluded.

    ``explore_share`` > 0 reserves that share of the k slots for candidates from the model's
    top 100 outside the user's usual categories, the least exposed first (``item_cat``:
    category per item), see components/exploration.py.
    """
    view = replace(data.view("serve"), behaviour=rec.behaviour)  # exclude what the served model excludes
    n = k if not explore_share else max(100, 10 * k)
    ann = None
    if retrieval.applies(rec, data.n_items):  # a large catalogue: candidates from an index, re-ranked exactly
        ann = retrieval.ann_rank(rec, data, view, n)
        top_items, top_scores = ann.top_items, ann.top_scores
        log.info(
            "recommend: %s items ranked through an HNSW index (%d candidates a user): recall@10 %.4f against "
            "exact scoring on %s users",
            f"{data.n_items:,}",
            ann.candidates,
            ann.recall10,
            f"{ann.recall_users:,}",
        )
    else:
        scorer = rec.scorer_for(data)
        _, top_items, top_scores = evaluation.rank_view(scorer, view, data.n_items, k=n, max_len=rec.max_len)
    if explore_share:
        usual = exploration.usual_categories(view.eval_hist, item_cat)
        lists = exploration.rerank(top_items, usual, item_cat, k, explore_share)
        pos = (top_items[:, :, None] == lists[:, None, :]).argmax(1)  # where each chosen item was
        top_items, top_scores = lists, np.take_along_axis(top_scores, pos, 1)
    frame = evaluation.topk_frame(data, view, top_items, top_scores, k)
    if ann is not None:  # what the run reports (pipeline.recommend writes it beside the table)
        frame.attrs["ann_recall10"] = round(ann.recall10, 4)
        frame.attrs["ann_recall_users"] = ann.recall_users
    return frame


def serving_champion(families: list[str], family: str | None = None) -> dict:
    """The champion that serves: ``family``'s, or the one with the best test NDCG@10 recorded
    on its version. Returns {family, name, version, test_ndcg10, model_uri}."""
    champions = {}
    for f in families:
        name = tracking.model_name(f)
        v = tracking.alias_version(name, tracking.CHAMPION)
        if v is not None:
            champions[f] = {
                "family": f,
                "name": name,
                "version": v,
                "test_ndcg10": float(tracking.version_tags(name, v).get("test_ndcg10", "nan")),
                "model_uri": f"models:/{name}@{tracking.CHAMPION}",
            }
    if not champions:
        raise RuntimeError(f"no champion for any of {families}: nothing to recommend from")
    chosen = family or max(champions, key=lambda f: champions[f]["test_ndcg10"])
    if chosen not in champions:
        raise RuntimeError(f"family {chosen!r} has no champion (champions: {sorted(champions)})")
    return champions[chosen]
