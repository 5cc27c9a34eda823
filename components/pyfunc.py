"""The MLflow pyfunc face of a Recommender: DataFrame in (user_id, history), top-K out.

Kept apart from components/tracking.py so that loading a model needs only this module,
components/recommend.py and the families, not the MLflow client code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel


class RecommenderModel(PythonModel):
    """Input: ``user_id`` (str) and ``history`` (list of item ids, oldest first).
    Output: ``user_id, rank, item_id, score``, top ``k`` (param, default 10), history excluded."""

    def load_context(self, context):
        from components.recommender import Recommender

        with open(context.artifacts["recommender"], "rb") as f:
            self.recommender = Recommender.from_bytes(f.read())

    def predict_with(self, model_bytes: bytes, model_input: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        from components.recommender import Recommender

        self.recommender = Recommender.from_bytes(model_bytes)
        out = self.predict(None, model_input, {"k": k})
        del self.recommender  # not pickled with the model: load_context restores it
        return out

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from components import metrics
        from components.models.base import pad_left

        rec, k = self.recommender, int((params or {}).get("k", 10))
        n_items, n_users = len(rec.item_ids), len(rec.user_ids)
        item_pos = {x: i for i, x in enumerate(rec.item_ids)}
        user_pos = {x: i for i, x in enumerate(rec.user_ids)}
        hists = [np.array([item_pos[x] for x in h if x in item_pos], dtype=np.int64) for h in model_input["history"]]
        batch = {
            "users": torch.tensor([user_pos.get(str(u), n_users) for u in model_input["user_id"]]),
            "seq": pad_left(hists, rec.max_len, n_items),
        }
        with torch.no_grad():
            scores = rec.model.score(batch).float()
        metrics.exclude_seen(scores, *metrics.seen_pairs(hists))
        vals, idx = metrics.top_k(scores, k)
        return pd.DataFrame(
            {
                "user_id": np.repeat(model_input["user_id"].astype(str).to_numpy(), k),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(hists)),
                "item_id": rec.item_ids[idx.reshape(-1).numpy()],
                "score": vals.reshape(-1).numpy().astype(np.float64),
            }
        )
