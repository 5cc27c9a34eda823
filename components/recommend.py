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
