"""`interestflow demo|nightly|train`: one option per flow parameter, generated from the flow itself,
and the embedded default's ephemeral Prefect API server given time to start on a loaded machine."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from flows import cli

TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


@pytest.fixture(scope="module")
def flow():
    from flows.nightly import nightly

    return nightly


@pytest.fixture(scope="module")
def parser(flow):
    return cli.build_parser(flow)


def subparser(parser, cmd: str):
    parser, _ = parser
    return next(a for a in parser._actions if a.dest == "cmd").choices[cmd]


def parse(parser, *argv: str) -> dict:
    p, names = parser
    return cli.flow_kwargs(p.parse_args(list(argv)), names)


def test_every_flow_parameter_is_an_option_with_its_default_in_the_help(parser, flow):
    params = inspect.signature(flow.fn).parameters
    assert len(params) >= 15
    for cmd in cli.FLOW_COMMANDS:
        actions = {a.dest: a for a in subparser(parser, cmd)._actions}
        for name in params:
            assert name in actions, f"interestflow {cmd} has no option for the flow parameter {name!r}"
            a = actions[name]
            assert "--" + name.replace("_", "-") in a.option_strings
            assert "default" in (a.help or ""), f"interestflow {cmd} --{name}: no default in the help"
    help_ = subparser(parser, "nightly").format_help()
    assert "(default: 30)" in help_ and "(default: mf)" in help_ and "--no-profiles" in help_


# Flow parameters a user sets from the Prefect UI, as CLI options.
OPTIONS = [
    "--precision",
    "bf16-mixed",
    "--model",
    '{"mf": {"dim": 8}}',
    "--seed",
    "3",
    "--lr",
    "0.01",
    "--serve-family",
    "mf",
    "--explore-share",
    "0.2",
    "--no-profiles",
]
# ... and the keyword arguments they give the flow.
PARSED = {
    "precision": "bf16-mixed",
    "model": {"mf": {"dim": 8}},
    "seed": 3,
    "lr": 0.01,
    "serve_family": "mf",
    "explore_share": 0.2,
    "profiles": False,
}


def test_options_parse_to_the_flows_keyword_arguments(parser):
    kw = parse(
        parser,
        "nightly",
        *OPTIONS,
        "--families",
        "mf",
        "lstm",
        "--profile",
        '{"half_life_days": 90}',
    )
    assert kw == {
        "spec": cli.SAMPLE_SPEC,
        **PARSED,
        "families": ["mf", "lstm"],
        "profile": {"half_life_days": 90},
    }
    assert type(kw["seed"]) is int and type(kw["lr"]) is float and type(kw["explore_share"]) is float


def test_options_not_given_leave_the_flows_own_defaults(parser):
    assert parse(parser, "nightly") == {"spec": cli.SAMPLE_SPEC}
    assert parse(parser, "demo") == {"spec": cli.SAMPLE_SPEC}
    assert parse(parser, "train") == {"spec": cli.SAMPLE_SPEC, "profiles": False}  # train: no profiles
    assert parse(parser, "train", "--profiles")["profiles"] is True
    assert parse(parser, "nightly", "--dry-run")["dry_run"] is True


def test_tune_takes_settings_to_enqueue_as_json_objects(parser, capsys):
    args = parser[0].parse_args(
        ["tune", "--family", "bert", "--enqueue", '{"dim": 128}', '{"dim": 64, "dropout": 0.3}']
    )
    kw = cli.flow_kwargs(args, args.flow_names)
    assert kw["enqueue"] == [{"dim": 128}, {"dim": 64, "dropout": 0.3}] and kw["family"] == "bert"
    with pytest.raises(SystemExit):
        parse(parser, "tune", "--enqueue", "dim=128")
    assert "--enqueue" in (err := capsys.readouterr().err) and "not valid JSON" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", '{"mf": {"dim": 8}'], ["--model", "not valid JSON"]),
        (["--model", '["mf"]'], ["--model", "JSON object"]),
        (["--model", '{"mf": 8}'], ["--model", "JSON object"]),
        (["--profile", "half_life_days=90"], ["--profile", "not valid JSON"]),
        (["--serve-family", "gpt"], ["--serve-family", "invalid choice"]),
        (["--families", "mf", "gpt"], ["--families", "invalid choice"]),
        (["--seed", "three"], ["--seed", "invalid int"]),
    ],
)
def test_a_bad_value_is_an_argparse_error_naming_the_option(parser, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        parse(parser, "nightly", *argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


def test_main_calls_the_flow_with_the_options_given(flow, monkeypatch, capsys):
    calls = []

    class Recorder:
        """Stands in for the nightly flow only so that no training runs: same parameters, records the call."""

        name = flow.name
        parameters = flow.parameters
        fn = flow.fn

        def __call__(self, **kwargs):
            calls.append(kwargs)
            from components.pipeline import NightlyResult

            return NightlyResult(data_hash="recorded", results=(), recommendations=None, profiles=None, summary="")

    monkeypatch.setattr("flows.nightly.nightly", Recorder())
    monkeypatch.setenv(TIMEOUT_VAR, "120")  # what _env() would set; undone after the test
    cli.main(
        [
            "nightly",
            *OPTIONS,
            "--json",
        ]
    )
    assert calls == [{"spec": cli.SAMPLE_SPEC, **PARSED}]
    assert json.loads(capsys.readouterr().out)["data_hash"] == "recorded"  # --json prints the record
    cli.main(["train", "--json"])
    assert calls[-1] == {"spec": cli.SAMPLE_SPEC, "profiles": False}


PROBE = """
import json
from flows import cli

cli._env()  # as `interestflow` does, before prefect is imported

from prefect import flow
from prefect.runtime import flow_run
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import get_current_settings


@flow
def probe():
    server = SubprocessASGIServer._instances.get(None)
    return {
        "startup_timeout_seconds": get_current_settings().server.ephemeral.startup_timeout_seconds,
        "flow_run_id": str(flow_run.id),
        "ephemeral_server_running": bool(server and server.running),
    }


print("PROBE " + json.dumps(probe()))
"""


def test_a_run_starts_with_the_longer_ephemeral_server_startup_timeout(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INTERESTFLOW_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        INTERESTFLOW_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )  # no PREFECT_API_URL: the run needs the ephemeral server; no timeout set: _env() must set it
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    out = json.loads(line.removeprefix("PROBE "))
    assert out["startup_timeout_seconds"] == cli.EPHEMERAL_STARTUP_TIMEOUT_S == 120
    assert out["ephemeral_server_running"] and out["flow_run_id"] not in ("", "None")
    print(f"probe run took {time.time() - t0:.1f}s")


def test_the_printed_ui_commands_open_the_runs_view_and_a_prefect_ui_that_reaches_its_api(capsys):
    """The two commands printed after a run: MLflow's link opens the runs table in its saved
    view, and the Prefect UI command sets the API port its page asks (else, on any port but
    4200, the page cannot reach its own API)."""
    from components import pipeline, tracking

    cli._print_summary(pipeline.NightlyResult("abc", (), None, None, ""))
    out = capsys.readouterr().out
    assert f"mlflow ui --backend-store-uri {tracking.tracking_uri()} --port 5000" in out
    assert "-> http://127.0.0.1:5000/#/experiments/" in out
    assert "/runs?viewStateShareKey=nightly&workflowType=machine_learning" in out
    port = cli.PREFECT_UI_PORT
    assert f"PREFECT_SERVER_API_PORT={port} .venv/bin/prefect server start --port {port}" in out
