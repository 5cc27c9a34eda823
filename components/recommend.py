"""Batch recommendations (06_recommendations): top-K for every user from a champion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components import evaluation, exploration, storage
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
    view = data.view("serve")
    n = k if not explore_share else max(100, 10 * k)
    _, top_items, top_scores = evaluation.rank_view(rec.scorer_for(data), view, data.n_items, k=n, max_len=rec.max_len)
    if explore_share:
        usual = exploration.usual_categories(view.eval_hist, item_cat)
        lists = exploration.rerank(top_items, usual, item_cat, k, explore_share)
        pos = (top_items[:, :, None] == lists[:, None, :]).argmax(1)  # where each chosen item was
        top_items, top_scores = lists, np.take_along_axis(top_scores, pos, 1)
    return evaluation.topk_frame(data, view, top_items, top_scores, k)


def serving_champion(families: list[str], family: str | None = None) -> dict:
    """The champion that serves: ``family``'s, or the one with the best test NDCG@10 recorded
    on its version. Returns {family, name, version, test_ndcg10}."""
    from components import tracking

    champions = {}
    for f in families:
        name = tracking.model_name(f)
        v = tracking.alias_version(name, tracking.CHAMPION)
        if v is not None:
            tags = tracking.client().get_model_version(name, v).tags
            champions[f] = {
                "family": f,
                "name": name,
                "version": v,
                "test_ndcg10": float(tags.get("test_ndcg10", "nan")),
            }
    if not champions:
        raise RuntimeError(f"no champion for any of {families}: nothing to recommend from")
    chosen = family or max(champions, key=lambda f: champions[f]["test_ndcg10"])
    if chosen not in champions:
        raise RuntimeError(f"family {chosen!r} has no champion (champions: {sorted(champions)})")
    return champions[chosen]


def for_user(user_id: str, dataset: dict, families: list[str], k: int = 10, family: str | None = None) -> pd.DataFrame:
    """Top-k for one user through the served MLflow model (``models:/<name>@champion``), with
    the items' titles and categories; the user's history is read from the dataset."""
    import mlflow

    from components import tracking

    data = Dataset.load(dataset)
    pos = np.flatnonzero(data.user_ids == str(user_id))
    if not len(pos):
        raise ValueError(f"user {user_id!r} is not in the event log {dataset['uri']}")
    history = [str(x) for x in data.item_ids[data.seqs[pos[0]]]]
    c = serving_champion(families, family)
    tracking.client()  # sets the tracking URI
    model = mlflow.pyfunc.load_model(f"models:/{c['name']}@{tracking.CHAMPION}")
    top = model.predict(pd.DataFrame({"user_id": [str(user_id)], "history": [history]}), params={"k": k})
    items = storage.read_parquet(storage.join(dataset["features_uri"], "items.parquet"))[
        ["item_id", "title", "categories"]
    ]
    out = top.merge(items.astype({"item_id": str}), on="item_id", how="left")
    out.attrs.update({"model": f"{c['name']} v{c['version']}", "history": len(history)})
    return out


def write_recommendations(frame: pd.DataFrame, uri: str, meta: dict[str, str]) -> None:
    storage.write_parquet(frame, uri, metadata={f"interestflow.{k}": str(v) for k, v in meta.items()})


def batch_recommendations(
    dataset: dict,
    families: list[str],
    lake: str,
    k: int = 10,
    family: str | None = None,
    explore_share: float = 0.0,
    category_depth: int = 3,
) -> dict:
    """Top-k for every user from a family's champion -> 06_recommendations/recommendations.parquet.

    ``family``: which champion serves; default the champion with the best test NDCG@10
    (as recorded on its model version).
    """
    from components import tracking

    c = serving_champion(families, family)
    chosen = c["family"]
    rec = tracking.load_recommender(f"models:/{c['name']}@{tracking.CHAMPION}")
    item_cat = None
    if explore_share:
        from components.profiles import item_categories

        items = storage.read_parquet(storage.join(dataset["features_uri"], "items.parquet"))
        item_cat, _ = item_categories(items, category_depth)
    frame = recommend(rec, Dataset.load(dataset), k, explore_share, item_cat)
    uri = storage.join(lake, "06_recommendations", "recommendations.parquet")
    meta = {"family": chosen, "model": c["name"], "version": c["version"], "data_hash": dataset["data_hash"]}
    write_recommendations(frame, uri, {**meta, "explore_share": explore_share})
    return {
        "uri": uri,
        "family": chosen,
        "version": c["version"],
        "rows": len(frame),
        "users": frame["user_id"].nunique(),
        "explore_share": explore_share,
        "model_uri": f"models:/{c['name']}@{tracking.CHAMPION}",
    }
