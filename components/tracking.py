"""The only MLflow code: runs, model logging, the registry and its aliases.

Embedded default: SQLite tracking and registry plus local artifacts under the project's
home folder (``INTERESTFLOW_HOME``, default ``./var``). Any tracking server works by
setting ``MLFLOW_TRACKING_URI``. Nothing connects at import.

This module imports nothing of interestflow's (it sits at the bottom of the import graph) and
is the only one that imports mlflow; components/pyfunc.py subclasses MLflow's PythonModel
but logs and loads through here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

EXPERIMENT = os.environ.get("INTERESTFLOW_EXPERIMENT", "interestflow")
CHAMPION, CHALLENGER = "champion", "challenger"
EXPERIMENT_DESCRIPTION = (
    "interestflow's nightly retrains: per family and night a parent run with the family's test figures and "
    "promotion decision, its cross-validation folds and final fit as child runs; plus the profiles and reviews "
    "runs. Open the saved view `nightly` for test NDCG@10, HR@10, the data hash and the decision."
)
RUNS_VIEW = "nightly"
"""The experiment's saved runs-table view (MLflow's shared view state, an experiment tag):
the columns people compare nights by."""
RUNS_VIEW_COLUMNS = (
    "attributes.`Models`",
    "metrics.`test_ndcg10`",
    "metrics.`test_hr10`",
    "metrics.`vs_popularity_ndcg10`",
    "tags.`interestflow.data_hash`",
    "tags.`promotion.decision`",
    "tags.`promotion.reason`",
)
PIP_REQUIREMENTS = ["torch==2.13.0", "mlflow>=3,<4", "pandas", "numpy", "transformers>=5,<6"]


def home() -> Path:
    """The embedded store's folder: ``INTERESTFLOW_HOME`` (default ./var), as components.config.home."""
    p = Path(os.environ.get("INTERESTFLOW_HOME", "var")).resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def ui_url() -> str:
    """Where people open the MLflow UI (``INTERESTFLOW_MLFLOW_UI``; default: the tracking
    server itself when it is one, else ``mlflow ui``'s http://127.0.0.1:5000): the base of
    every link in the logs and the run summary."""
    configured = os.environ.get("INTERESTFLOW_MLFLOW_UI")
    if configured:
        return configured.rstrip("/")
    uri = tracking_uri()
    return redacted(uri).rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"


def runs_link(experiment: str | None = None) -> str:
    """The experiment's runs table (not MLflow 3's GenAI pages) in its saved view."""
    return (
        f"{ui_url()}/#/experiments/{experiment or experiment_id()}/runs"
        f"?viewStateShareKey={RUNS_VIEW}&workflowType=machine_learning"
    )


def run_link(run_id: str, experiment: str | None = None) -> str:
    return f"{ui_url()}/#/experiments/{experiment or experiment_id()}/runs/{run_id}"


def artifact_link(run_id: str, path: str, experiment: str | None = None) -> str:
    return f"{run_link(run_id, experiment)}/artifacts/{path}"


def version_link(name: str, version: str) -> str:
    return f"{ui_url()}/#/models/{name}/versions/{version}"


def _mlflow():
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def client():
    from mlflow import MlflowClient

    _mlflow()
    return MlflowClient(tracking_uri())


def experiment_id(name: str = EXPERIMENT) -> str:
    """The experiment's id, created with its description, kind and saved view when new; an
    experiment an older release created gets the ones it lacks (once per process)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if (tracking_uri(), name) not in _DESCRIBED:
            for k, v in _experiment_tags().items():
                if k not in exp.tags:  # a description or view someone edited stays
                    c.set_experiment_tag(exp.experiment_id, k, v)
            _DESCRIBED.add((tracking_uri(), name))
        return exp.experiment_id
    artifacts = None
    if tracking_uri().startswith("sqlite:"):  # embedded: keep artifacts beside the DB, not in ./mlruns
        artifacts = (home() / "mlartifacts").resolve().as_uri()
    try:
        return c.create_experiment(name, artifact_location=artifacts, tags=_experiment_tags())
    except Exception:  # created concurrently by another task
        return c.get_experiment_by_name(name).experiment_id


_DESCRIBED: set[tuple[str, str]] = set()


def _experiment_tags() -> dict[str, str]:
    return {
        "mlflow.note.content": EXPERIMENT_DESCRIPTION,  # the experiment's description in the UI
        # MLflow 3 opens an experiment of no declared kind on its GenAI pages (an empty Traces
        # list): this one is model training, so it opens on the runs table
        "mlflow.experimentKind": "custom_model_development",
        f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps(_runs_view()),
    }


def _runs_view() -> dict:
    """MLflow's runs-table view state (what its UI stores when a view is shared): newest
    runs first, the columns of :data:`RUNS_VIEW_COLUMNS`."""
    return {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": list(RUNS_VIEW_COLUMNS),
        "runsExpanded": {},
    }


def create_run(name: str, params: dict, tags: dict, parent_run_id: str | None = None) -> str:
    c = client()
    tags = {k: str(v) for k, v in tags.items()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(experiment_id(), run_name=name, tags=tags)
    log_params(run.info.run_id, params)
    return run.info.run_id


def find_run(tags: dict) -> str | None:
    """The newest active run of the experiment whose tags have these values, or None."""
    if any("'" in str(v) or "`" in str(k) for k, v in tags.items()):
        raise ValueError(f"tag keys or values with quotes cannot be searched for: {tags}")
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client().search_runs([experiment_id()], where, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def log_params(run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client().log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, values: dict[str, float], step: int | None = None) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step or 0) for k, v in values.items()]
    for i in range(0, len(items), 500):
        client().log_batch(run_id, metrics=items[i : i + 500])


def run_tags(run_id: str) -> dict[str, str]:
    return dict(client().get_run(run_id).data.tags)


def set_tags(run_id: str, tags: dict) -> None:
    c = client()
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status)


def log_text(run_id: str, text: str, path: str) -> None:
    client().log_text(run_id, text, path)


def log_artifacts(run_id: str, folder: str | Path, path: str) -> None:
    """Every file in ``folder`` as artifacts of the run under ``path``."""
    client().log_artifacts(run_id, str(folder), path)


def log_table(run_id: str, frame: pd.DataFrame, path: str) -> None:
    client().log_table(run_id, frame, path)


def log_pyfunc(
    run_id: str,
    python_model,
    artifacts: dict[str, str],
    input_example: pd.DataFrame,
    output,
    optional=(),
    extra_requirements: list[str] | tuple = (),
    params: dict | None = None,
    input_schema: bool = True,
) -> str:
    """Log ``python_model`` (an mlflow PythonModel) with its artifacts in ``run_id``; returns its URI.
    ``optional``: input columns a request may leave out; ``extra_requirements``: pip
    requirements beside torch, mlflow, pandas, numpy and transformers; ``params``: the
    inference parameters a request may set, with their defaults. ``input_schema = False``:
    the signature declares the output and the params but no input columns, so MLflow
    neither casts nor checks a request's columns (the model checks them itself); the input
    example is still logged."""
    mlflow = _mlflow()
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    signature = infer_signature(input_example, output, params)
    if optional:
        cols = [ColSpec(c.type, c.name, required=c.name not in optional) for c in signature.inputs.inputs]
        signature = ModelSignature(Schema(cols), signature.outputs, signature.params)
    if not input_schema:
        signature = ModelSignature(None, signature.outputs, signature.params)

    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts=artifacts,
            signature=signature,
            input_example=input_example,
            pip_requirements=[*PIP_REQUIREMENTS, *extra_requirements],
        )
    return info.model_uri if hasattr(info, "model_uri") else f"runs:/{run_id}/model"


def load_pyfunc(model_uri: str):
    """The PythonModel behind a logged or registered model (``runs:/…``, ``models:/name@champion``)."""
    return _mlflow().pyfunc.load_model(model_uri).unwrap_python_model()


def predict(model_uri: str, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
    """``model_uri`` loaded as MLflow serves it (``mlflow.pyfunc.load_model``), asked for ``frame``."""
    return _mlflow().pyfunc.load_model(model_uri).predict(frame, params=params)


def invalid_request(message: str) -> Exception:
    """The exception a served model raises for a request it cannot answer: MLflow's scoring
    server answers it with a 400 and the message (any other exception: also a 400, with
    MLflow's generic message)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)


class RegistryUnavailable(RuntimeError):
    """The model registry did not take a write (the register task retries it)."""


def register(model_uri: str, name: str, tags: dict) -> str:
    """Register ``model_uri`` as a new version of ``name``; returns the version."""
    mlflow = _mlflow()
    try:
        mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    except Exception as e:  # noqa: BLE001 - whatever the transport said, name the registry
        detail = str(e).splitlines()[0][:300]
        raise RegistryUnavailable(
            f"MLflow registry {redacted(tracking_uri())} did not accept model {name} "
            f"({type(e).__name__}: {detail}); nothing was registered or promoted"
        ) from e
    return str(mv.version)


def redacted(uri: str) -> str:
    """A tracking URI without any user:password part (it goes into logs)."""
    from urllib.parse import urlsplit, urlunsplit

    p = urlsplit(uri)
    return urlunsplit(p._replace(netloc=p.hostname + (f":{p.port}" if p.port else ""))) if p.password else uri


def _upsert(write, *args, attempts: int = 5) -> None:
    """A registry write that two writers may race on (alias, version tag). On a SQLite store
    the two upserts can collide (a UNIQUE violation); the loser retries, so the value always
    ends as the last writer's and neither caller sees the collision."""
    import random
    import time

    for attempt in range(attempts):
        try:
            write(*args)
            return
        except Exception as e:  # noqa: BLE001 - only the collision is retried
            if "UNIQUE constraint" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)


def _does_not_exist(e: Exception) -> bool:
    """True when a tracking call failed because what it asked for does not exist."""
    return "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower()


def run_exists(run_id: str | None) -> bool:
    """True when ``run_id`` names a run this tracking store still has (not deleted)."""
    if not run_id:
        return False
    try:
        return client().get_run(run_id).info.lifecycle_stage == "active"
    except Exception as e:
        if _does_not_exist(e):
            return False
        raise


def set_alias(name: str, alias: str, version: str) -> None:
    _upsert(client().set_registered_model_alias, name, alias, version)


def alias_version(name: str, alias: str) -> str | None:
    """The version holding ``alias`` on registered model ``name``, or None."""
    c = client()
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception as e:  # no such model or alias
        if _does_not_exist(e):
            return None
        raise


def version_run_id(name: str, version: str) -> str:
    return client().get_model_version(name, version).run_id


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of a model version (raises if the version does not exist)."""
    return dict(client().get_model_version(name, version).tags)


def version_status(name: str, version: str) -> str:
    """READY, PENDING_REGISTRATION or FAILED_REGISTRATION (raises if the version does not exist)."""
    return client().get_model_version(name, version).status


def version_of_run(name: str, run_id: str) -> str | None:
    """The version of ``name`` registered from ``run_id``, if any."""
    same = [v for v in client().search_model_versions(f"name='{name}'") if v.run_id == run_id]
    return str(same[0].version) if same else None


def describe_version(name: str, version: str, text: str) -> None:
    """The model version's description (shown on its page in the registry)."""
    client().update_model_version(name, version, description=text)


def version_description(name: str, version: str) -> str:
    return client().get_model_version(name, version).description or ""


def describe_model(name: str, text: str) -> None:
    """The registered model's description, where it has none yet (one written by hand stays)."""
    c = client()
    if not (c.get_registered_model(name).description or "").strip():
        c.update_registered_model(name, description=text)


def set_version_tags(name: str, version: str, tags: dict) -> None:
    c = client()
    for k, v in tags.items():
        _upsert(c.set_model_version_tag, name, version, k, str(v))


def model_name(family: str) -> str:
    return f"{os.environ.get('INTERESTFLOW_MODEL_PREFIX', 'interestflow')}-{family}"


def log_figure(run_id: str, figure, path: str) -> None:
    """A matplotlib figure as an image artifact of the run (then closed)."""
    from matplotlib import pyplot as plt

    client().log_figure(run_id, figure, path)
    plt.close(figure)
