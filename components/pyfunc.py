"""The MLflow pyfunc face of a Recommender: DataFrame in (user_id, history), top-K out.

The model class subclasses MLflow's PythonModel (what ``mlflow models serve`` loads); logging
and loading go through components/tracking.py, the only MLflow code. Scoring, id mapping
and the top-K table are the Recommender's (components/recommender.py): this class only
unpacks the request frame.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel

from components import tracking
from components.recommender import Recommender


class RecommenderModel(PythonModel):
    """Input: ``user_id`` (str), ``history`` (list of item ids, oldest first) and, optionally,
    ``event_types`` (their contract event types). Output: ``user_id, rank, item_id, score``,
    top ``k`` (param, default 10), what the exclusion policy names left out."""

    def load_context(self, context):
        with open(context.artifacts["recommender"], "rb") as f:
            self.recommender = Recommender.from_bytes(f.read())

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        types = _column(model_input, "event_types")
        return self.recommender.recommend(list(model_input["user_id"]), list(model_input["history"]), k, types)


def _column(frame: pd.DataFrame, name: str) -> list | None:
    """An optional request column as a list (None where absent or null)."""
    if name not in frame.columns:
        return None
    return [None if v is None or (isinstance(v, float) and pd.isna(v)) else list(v) for v in frame[name]]


def log(run_id: str, rec: Recommender, input_example: pd.DataFrame) -> str:
    """Log ``rec`` as an MLflow pyfunc model in ``run_id``; returns its ``runs:/`` URI."""
    output = rec.recommend(
        list(input_example["user_id"]), list(input_example["history"]), types=_column(input_example, "event_types")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recommender.pt"
        path.write_bytes(rec.to_bytes())
        return tracking.log_pyfunc(
            run_id, RecommenderModel(), {"recommender": str(path)}, input_example, output, optional=("event_types",)
        )


def load(model_uri: str) -> Recommender:
    """A logged or registered model (``runs:/…``, ``models:/name@champion``) as a Recommender."""
    return tracking.load_pyfunc(model_uri).recommender
