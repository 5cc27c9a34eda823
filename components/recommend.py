"""Batch recommendations (06_recommendations): top-K for every user from a champion."""

from __future__ import annotations

import pandas as pd

from components import evaluation, storage
from components.datasets import Dataset
from components.recommender import Recommender


def recommend(rec: Recommender, data: Dataset, k: int = 10) -> pd.DataFrame:
    """Top-k for every user from their whole history, seen items excluded."""
    view = data.view("serve")
    _, top_items, top_scores = evaluation.rank_view(rec.scorer_for(data), view, data.n_items, k=k, max_len=rec.max_len)
    return evaluation.topk_frame(data, view, top_items, top_scores, k)


def write_recommendations(frame: pd.DataFrame, uri: str, meta: dict[str, str]) -> None:
    storage.write_parquet(frame, uri, metadata={f"interestflow.{k}": str(v) for k, v in meta.items()})


def batch_recommendations(
    dataset: dict, families: list[str], lake: str, k: int = 10, family: str | None = None
) -> dict:
    """Top-k for every user from a family's champion -> 06_recommendations/recommendations.parquet.

    ``family``: which champion serves; default the champion with the best test NDCG@10
    (as recorded on its model version).
    """
    from components import tracking

    champions = {}
    for f in families:
        name = tracking.model_name(f)
        v = tracking.alias_version(name, tracking.CHAMPION)
        if v is not None:
            tags = tracking.client().get_model_version(name, v).tags
            champions[f] = {"name": name, "version": v, "test_ndcg10": float(tags.get("test_ndcg10", "nan"))}
    if not champions:
        raise RuntimeError(f"no champion for any of {families}: nothing to recommend from")
    chosen = family or max(champions, key=lambda f: champions[f]["test_ndcg10"])
    if chosen not in champions:
        raise RuntimeError(f"family {chosen!r} has no champion (champions: {sorted(champions)})")
    c = champions[chosen]
    rec = tracking.load_recommender(f"models:/{c['name']}@{tracking.CHAMPION}")
    frame = recommend(rec, Dataset.load(dataset), k)
    uri = storage.join(lake, "06_recommendations", "recommendations.parquet")
    write_recommendations(
        frame, uri, {"family": chosen, "model": c["name"], "version": c["version"], "data_hash": dataset["data_hash"]}
    )
    return {
        "uri": uri,
        "family": chosen,
        "version": c["version"],
        "rows": len(frame),
        "users": frame["user_id"].nunique(),
    }
