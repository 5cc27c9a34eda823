"""prefect.yaml: every deployment's flow loads, and its parameter form is typed and documented."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def load_flow(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_the_expected_deployments_exist_with_schedules_only_on_nightly_and_catalogue():
    by_name = {d["name"]: d for d in DEPLOYMENTS}
    assert set(by_name) == {
        "nightly-retrain",
        "nightly-retrain-dask",
        "train",
        "tune",
        "promote",
        "recommend",
        "catalogue",
    }
    nightly = by_name["nightly-retrain"]
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    assert by_name["tune"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert by_name["catalogue"]["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]  # hourly
    assert all("schedules" not in d for n, d in by_name.items() if n not in ("nightly-retrain", "catalogue"))
    assert {d["work_pool"]["name"] for d in DEPLOYMENTS} == {"interestflow-local"}  # one anchor


def test_the_dask_deployment_loads_the_nightly_flow_on_the_dask_runner():
    """Its job variables set INTERESTFLOW_TASK_RUNNER=dask, and the flow, loaded in a process
    with that environment (as the worker's flow-run process loads it), gets prefect-dask's
    runner on the scheduler of INTERESTFLOW_DASK_ADDRESS; loaded without, the thread pool."""
    by_name = {d["name"]: d for d in DEPLOYMENTS}
    dask, nightly = by_name["nightly-retrain-dask"], by_name["nightly-retrain"]
    assert dask["entrypoint"] == nightly["entrypoint"] and dask["parameters"] == nightly["parameters"]
    env = dask["job_variables"]["env"]
    assert env == {"INTERESTFLOW_TASK_RUNNER": "dask"}
    probe = "import flows.nightly as n; r = n.nightly.task_runner; print(type(r).__name__, getattr(r, 'address', None))"
    base = {k: v for k, v in os.environ.items() if not k.startswith("INTERESTFLOW_TASK_RUNNER")}

    def runner(extra: dict) -> str:
        cmd = [sys.executable, "-c", probe]
        out = subprocess.run(cmd, env={**base, **extra}, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split("\n")[-2]

    assert runner({**env, "INTERESTFLOW_DASK_ADDRESS": "tcp://dask-scheduler:8786"}) == (
        "DaskTaskRunner tcp://dask-scheduler:8786"
    )
    assert runner({}) == "ThreadPoolTaskRunner None"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_every_parameter_is_typed_documented_and_defaulted_or_required(deployment):
    from prefect.utilities.callables import parameter_schema

    flow = load_flow(deployment["entrypoint"])
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    props, required = schema["properties"], set(schema.get("required", []))
    assert props, deployment["name"]
    for name, p in props.items():
        assert p.get("description"), f"{deployment['name']}.{name} has no description for the Prefect UI"
        assert "type" in p or "enum" in p or "anyOf" in p or "$ref" in p or "allOf" in p, f"{name} has no type"
        assert "default" in p or name in required, f"{deployment['name']}.{name}: no default and not required"
    # What the deployment sets must be parameters of its flow, and of the right kind.
    unknown = set(deployment.get("parameters", {})) - set(props)
    assert not unknown, f"{deployment['name']} sets unknown parameters {unknown}"
    for name in required:
        assert name in deployment.get("parameters", {}) or deployment["name"] == "promote", name


def test_promote_requires_a_family_and_a_reason():
    from prefect.utilities.callables import parameter_schema

    from flows.operations import promote

    schema = parameter_schema(promote.fn).model_dump_for_openapi()
    assert set(schema["required"]) == {"family", "reason"}


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_fixed_choices_are_one_dropdown_in_the_form(deployment):
    """A parameter with fixed choices is one ``enum`` (the Prefect UI's dropdown), its None
    among the choices where it is optional: never a str-or-None union, which the form shows
    as a type switch that starts on "Property is type None"."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(load_flow(deployment["entrypoint"]).fn).model_dump_for_openapi()
    props = schema["properties"]
    for name, p in props.items():
        alternatives = p.get("anyOf", [])
        assert not any("enum" in a for a in alternatives), f"{deployment['name']}.{name}: choices in a union"
    if "accelerator" in props:
        for name, choices in {
            "accelerator": {"auto", "cpu", "gpu"},
            "strategy": {"auto", "ddp"},
            "precision": {"auto", "32-true", "bf16-mixed"},
        }.items():
            assert choices <= set(props[name]["enum"]), name
    if "serve_family" in props:
        assert props["serve_family"]["enum"] == ["mf", "lstm", "cnn", "bert", None]
        assert props["serve_family"]["default"] is None
