"""``interestflow``: run the nightly flow (or the demo on the shipped sample), read and change the
registry (promote, rollback) and ask for one user's recommendations."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SPEC = str(ROOT / "specs" / "beauty_sample.yaml")
EPHEMERAL_STARTUP_TIMEOUT_S = 120  # seconds; see _env()
PREFECT_UI_PORT = 4200
FLOW_COMMANDS = {
    # command: (help, defaults that differ from the flow's own)
    "demo": ("the nightly flow on the shipped sample", {"spec": SAMPLE_SPEC}),
    "nightly": ("the nightly flow", {"spec": SAMPLE_SPEC}),
    "train": (
        "train, evaluate, register, promote and recommend (no profiles)",
        {"spec": SAMPLE_SPEC, "profiles": False},
    ),
}


def _env() -> None:
    """Embedded default: Prefect, MLflow and the lake under INTERESTFLOW_HOME (default ./var).

    Call it before anything imports prefect: Prefect reads its settings from the environment
    once, when ``prefect.context`` is first imported.
    """
    home = Path(os.environ.setdefault("INTERESTFLOW_HOME", str(Path("var").resolve())))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # Without PREFECT_API_URL every run starts Prefect's ephemeral API server in a subprocess
    # and waits server.ephemeral.startup_timeout_seconds (Prefect's default: 20) for its
    # /health. On a loaded machine (four jobs on two cores) that start-up took longer and the
    # run died with "Timed out while attempting to connect to ephemeral Prefect API server".
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from components.config import RUNNER_ENV, TASK_RUNNERS

    runner = os.environ.get(RUNNER_ENV, "threads")
    if runner not in TASK_RUNNERS:  # read when flows.nightly is imported: said here, not as a traceback
        choice = ", ".join(TASK_RUNNERS)
        print(f"interestflow: {RUNNER_ENV}={runner!r}: the task runner is one of {choice}", file=sys.stderr)
        sys.exit(EXIT_REJECTED)


def _print_summary(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from components.report import METRICS, behaviour_line, sentiment_line

    console = Console(width=None if sys.stdout.isatty() else 120)  # keep the table whole in logs
    if out.results:
        console.print(behaviour_line(out.results[0].report).replace("**", ""))
    for fr in out.results:
        r = fr.report
        t = Table(title=f"{r.family}: cross-validation and test (data {out.data_hash})")
        for col in ("metric", "CV mean ± std", "test", "popularity (test)", "recent interactions (test)"):
            t.add_column(col, justify="right" if col != "metric" else "left")
        for m in METRICS:
            t.add_row(
                m,
                f"{r.cv[m + '_mean']:.4f} ± {r.cv[m + '_std']:.4f}",
                f"{r.test[m]:.4f}",
                f"{r.popularity[m]:.4f}",
                f"{r.recent[m]:.4f}" if r.recent else "",
            )
        for split, n in (("cold", "cold_n"), ("repeat", "repeat_n"), ("new", "new_n")):
            t.add_row(
                f"{split} ndcg10 ({r.test[n]} targets)",
                "",
                f"{r.test[split + '_ndcg10']:.4f}",
                f"{r.popularity[split + '_ndcg10']:.4f}",
                f"{r.recent[split + '_ndcg10']:.4f}" if r.recent else "",
            )
        console.print(t)
        d = fr.decision
        if d:
            v = fr.registered
            console.print(
                f"[bold]{v.name} v{v.version}[/]: "
                f"{'PROMOTED to champion' if d.promote else 'not promoted'} — {d.reason}"
            )
    if out.recommendations:
        rc = out.recommendations
        console.print(
            f"Top-{rc.rows // max(rc.users, 1)} recommendations for {rc.users} users "
            f"(champion {rc.family} v{rc.version}): {rc.uri}"
        )
    if out.reviews:
        r = out.reviews.report
        console.print(
            f"Reviews ({r['reviews']}): {sentiment_line(r)} {r['n_topics']} topics: "
            + ", ".join(t for t, _ in out.reviews.topics)
        )
        if out.reviews.decision:
            v, d = out.reviews.registered, out.reviews.decision
            verdict = "PROMOTED to champion" if d.promote else "not promoted"
            console.print(f"[bold]{v.name} v{v.version}[/]: {verdict} — {d.reason}")
    if out.profiles:
        p = out.profiles.summary
        churn = p.get("churn_skipped") or (
            f"churn AUC {p['churn_auc']:.3f} (recency only {p['churn_auc_recency_baseline']:.3f})"
        )
        console.print(
            f"Profiles of {p['users']} users: {churn}, median drift {p['drift_jsd_median']:.3f} nats -> "
            f"{out.profiles.uri}"
        )
    from components.tracking import runs_link, tracking_uri

    home = os.environ["INTERESTFLOW_HOME"]
    console.print("\n[bold]Look at what this run recorded:[/]")
    if tracking_uri().startswith("sqlite:"):
        console.print(
            f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {tracking_uri()} --port 5000", soft_wrap=True
        )
    console.print(f"              -> {runs_link()}", soft_wrap=True)
    # The Prefect UI asks its API at PREFECT_UI_API_URL, by default on PREFECT_SERVER_API_PORT
    # (4200) whatever --port says: both are set, so another port needs changing in one place.
    console.print(
        f"  Prefect UI: PREFECT_HOME={home}/prefect PREFECT_SERVER_API_PORT={PREFECT_UI_PORT} "
        f".venv/bin/prefect server start --port {PREFECT_UI_PORT}",
        soft_wrap=True,
    )
    console.print(f"              -> http://127.0.0.1:{PREFECT_UI_PORT}/runs", soft_wrap=True)


def _print_user_recommendations(args) -> None:
    from rich.console import Console
    from rich.table import Table

    from components import pipeline
    from components.config import default_lake
    from components.models import MODELS
    from tasks.ingest import pseudonym_secret

    # The plain stages, with the pseudonymisation key from the Prefect Secret block too.
    stages = dataclasses.replace(pipeline.PLAIN, ingest=functools.partial(pipeline.ingest, secret=pseudonym_secret))
    ds = pipeline.data_path(args.spec, args.lake or default_lake(), 1, 0, stages)  # finished layers are reused
    try:
        top = pipeline.recommend_for_user(args.user, ds, list(MODELS), args.k, args.family)
    except (ValueError, RuntimeError) as e:  # an unknown user, no champion yet
        sys.exit(f"interestflow recommend: {e}")
    t = Table(
        title=f"Top-{args.k} for user {args.user} ({top.attrs['history']} items so far) from {top.attrs['model']}"
    )
    for col in ("rank", "item", "title", "category", "score"):
        t.add_column(col)
    for r in top.itertuples():
        t.add_row(str(r.rank), r.item_id, str(r.title)[:60], str(r.categories).split(" > ")[-1], f"{r.score:.3f}")
    Console(width=None if sys.stdout.isatty() else 140).print(t)


def _print_study(args) -> None:
    """The study's best trials and the family's current tuned settings (``interestflow tune --show``)."""
    import optuna

    from components import tuning
    from components.config import default_lake
    from tasks.ingest import spec_name

    spec, family = spec_name(args.spec), getattr(args, "family", "mf")
    name = tuning.study_name(spec, family)
    try:
        study = optuna.load_study(study_name=name, storage=tuning.storage_url())
    except KeyError:
        sys.exit(f"interestflow tune: no study {name!r} in {tuning.storage_url()} (run `interestflow tune` first)")
    frame = tuning.trials_frame(study)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in frame["state"].value_counts().items())
    print(f"study {name} ({tuning.storage_url()}): {len(frame)} trials ({counts})")
    for line in tuning.best_lines(study):
        print("  " + line)
    tuned = tuning.read_settings(getattr(args, "lake", None) or default_lake(), spec, family)
    print(f"current settings: {tuned.label}: {tuned.model}" if tuned else "current settings: none written yet")


def _print_registry() -> None:
    """Per family: champion and challenger versions with the test figures recorded on them."""
    from rich.console import Console
    from rich.table import Table

    from components import tracking
    from components.models import MODELS

    t = Table(title=f"MLflow registry ({tracking.tracking_uri()})")
    columns = ("registered model", "alias", "version", "test ndcg10 (sentiment: auc)", "test hr10", "data", "decision")
    for col in columns:
        t.add_column(col)
    for family in [*MODELS, "sentiment"]:  # the recommenders, then the review sentiment model (test AUC)
        name = tracking.model_name(family)
        for alias in (tracking.CHAMPION, tracking.CHALLENGER):
            v = tracking.alias_version(name, alias)
            if v is None:
                continue
            tags = tracking.version_tags(name, v)
            t.add_row(
                name,
                alias,
                v,
                tags.get("test_ndcg10", tags.get("test_auc", ""))[:6],
                tags.get("test_hr10", "")[:6],
                tags.get("data_hash", ""),
                tags.get("promotion.decision", ""),
            )
    Console(width=None if sys.stdout.isatty() else 120).print(t)


def _resolve(prop: dict, defs: dict) -> dict:
    """A JSON-schema property with its $ref / single allOf resolved against the definitions."""
    prop = dict(prop)
    while True:
        if "$ref" in prop:
            target = defs.get(prop.pop("$ref").split("/")[-1], {})
            prop = {**target, **prop}
        elif len(prop.get("allOf", ())) == 1:
            prop = {**prop.pop("allOf")[0], **prop}
        else:
            return prop


def _alternatives(prop: dict, defs: dict) -> tuple[list[dict], bool]:
    """The non-null types a property allows, and whether it also allows null (``X | None``)."""
    prop = _resolve(prop, defs)
    alts = [_resolve(a, defs) for a in prop.get("anyOf", [prop])]
    typed = [a for a in alts if a.get("type") != "null"]
    return typed, len(typed) < len(alts)


def _json_type(option: str, kind: str | None, values: str | None = None):
    """argparse type: the text parsed as JSON, checked against the schema's top-level type."""
    python = {"object": dict, "array": list}.get(kind or "")

    def parse(text: str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}, char {e.pos}): {text!r}") from None
        if python and not isinstance(value, python):
            raise argparse.ArgumentTypeError(f"expected a JSON {kind}, got {text!r}")
        if values == "object" and isinstance(value, dict):
            bad = [k for k, v in value.items() if not isinstance(v, dict)]
            if bad:
                raise argparse.ArgumentTypeError(f"expected a JSON object for each key, not for {bad}: {text!r}")
        return value

    return parse


def _json_or_text(text: str):
    """argparse type for a parameter of several (or no declared) types: JSON if it parses, else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


_SCALARS = {"integer": int, "number": float, "string": str}


def _show(value, option: str) -> str:
    if isinstance(value, bool):
        return option if value else "--no-" + option[2:]
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "[]"
    if isinstance(value, dict):
        return json.dumps(value)
    return "none" if value is None else str(value)


def add_flow_options(parser: argparse.ArgumentParser, flow, exclude=(), defaults=None) -> list[str]:
    """One ``--kebab-name`` option per parameter of the Prefect ``flow``, from its own schema.

    The schema (``flow.parameters``) is the one the Prefect UI shows: built from the flow's
    signature and the ``Args:`` of its docstring, so nothing is listed twice. Each option's help
    is the parameter's description plus its default; ints, floats, strings, ``Literal`` choices,
    lists (``nargs="+"``), ``--x/--no-x`` booleans and dicts as JSON. An option the user does not
    give stays out of the parsed namespace (the flow's own default applies), except for those in
    ``defaults``: the command's own defaults, always passed. Returns the parameter names.
    """
    defaults = defaults or {}
    schema = flow.parameters.model_dump_for_openapi()
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    props = sorted(schema["properties"].items(), key=lambda kv: kv[1].get("position", 0))
    names = []
    for name, prop in props:
        if name in exclude:
            continue
        names.append(name)
        option = "--" + name.replace("_", "-")
        typed, _ = _alternatives(prop, defs)  # X | None: the option's absence is the None
        default = defaults.get(name, prop.get("default"))
        description = (prop.get("description") or prop.get("title") or name).strip()
        help_ = description.replace("%", "%%")
        if not (default is None and "default" in description.lower()):  # "(default: each family's own)"
            help_ += f" (default: {_show(default, option)})".replace("%", "%%")
        kw = {"dest": name, "help": help_, "default": defaults.get(name, argparse.SUPPRESS)}
        spec = typed[0] if len(typed) == 1 else {}
        kind = spec.get("type")
        if kind == "boolean":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "array":
            items = _resolve(spec.get("items", {}), defs)
            kw["nargs"] = "+"
            kw["type"] = _SCALARS.get(items.get("type"), _json_or_text)
            if items.get("type") == "object":  # a list of JSON objects, one per word
                kw["type"], kw["metavar"] = _json_type(option, "object"), "JSON"
            if "enum" in items:
                kw["choices"] = items["enum"]
        elif kind == "object":
            values = spec.get("additionalProperties")  # true, or the schema of each value
            values = _resolve(values, defs).get("type") if isinstance(values, dict) else None
            kw["type"] = _json_type(option, "object", values)
            kw["metavar"] = "JSON"
        elif kind in _SCALARS or "enum" in spec:
            kw["type"] = _SCALARS.get(kind, _json_or_text)
            if "enum" in spec:
                kw["choices"] = spec["enum"]
        else:  # several types, or none declared: JSON if it parses, else the text
            kw["type"] = _json_or_text
        parser.add_argument(option, **kw)
    return names


def _runner_options(p: argparse.ArgumentParser) -> None:
    from components.config import TASK_RUNNERS

    p.add_argument(
        "--runner",
        choices=TASK_RUNNERS,
        default=None,
        help="where the submitted tasks (fold trainings, tuning trials) run: Prefect's thread pool or Dask "
        "(default: $INTERESTFLOW_TASK_RUNNER, else threads)",
    )
    p.add_argument(
        "--dask-address",
        default=None,
        help="a running Dask scheduler, e.g. tcp://dask-scheduler:8786 (default: $INTERESTFLOW_DASK_ADDRESS, "
        "else a local cluster of $INTERESTFLOW_FOLD_WORKERS worker processes)",
    )


def _with_runner(flow, args: argparse.Namespace, workers: int):
    """``flow`` on the runner the options name (as it is, where they name none)."""
    if args.runner is None and args.dask_address is None:
        return flow
    import flows.nightly

    kind = args.runner or ("dask" if args.dask_address else None)
    return flow.with_options(task_runner=flows.nightly.task_runner(kind, workers, args.dask_address))


def flow_kwargs(args: argparse.Namespace, names: list[str]) -> dict:
    """The flow's keyword arguments: the options given, plus the command's own defaults."""
    given = vars(args)
    return {n: given[n] for n in names if n in given}


def build_parser(flow) -> tuple[argparse.ArgumentParser, list[str]]:
    """The ``interestflow`` parser; demo, nightly and train get one option per ``flow`` parameter."""
    parser = argparse.ArgumentParser(prog="interestflow", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    names: list[str] = []
    for name, (help_, defaults) in FLOW_COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_,
            description=f"{help_}. Every parameter of the flow {flow.name!r} is an option.",
        )
        names = add_flow_options(p, flow, exclude=("json",), defaults=defaults)
        p.add_argument(
            "--json", action="store_true", help="print the result as JSON instead of tables (default: tables)"
        )
        _runner_options(p)
    sub.add_parser("registry", help="each family's champion and challenger")
    from components.models import MODELS

    families = list(MODELS)
    registered = [*families, "sentiment"]  # the recommenders and the review sentiment model
    p = sub.add_parser("promote", help="make a registered version the champion (with a reason)")
    p.add_argument("--family", required=True, choices=registered)
    p.add_argument("--version", required=True)
    p.add_argument("--reason", required=True)
    p = sub.add_parser("rollback", help="give the champion alias back to the previous champion")
    p.add_argument("--family", required=True, choices=registered)
    p.add_argument("--reason", required=True)
    p = sub.add_parser("recommend", help="top-k for one user from the serving champion, with item titles")
    p.add_argument("--user", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--family", choices=families, default=None, help="default: the best champion")
    p.add_argument("--spec", default=str(ROOT / "specs" / "beauty_sample.yaml"))
    p.add_argument("--lake", default=None)
    p = sub.add_parser(
        "serve",
        help="MLflow's model server on a family's champion (per-request answers with reasons)",
        description="Start `mlflow models serve` on models:/interestflow-<family>@champion (this environment, "
        "no new one). POST /invocations {'dataframe_records': [{'user_id': ..., 'history': [...], "
        "'event_types': [...], 'timestamps': [...]}], 'params': {'k': 10}}; see README 'Serving'.",
    )
    p.add_argument("--family", required=True, choices=families)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        help="server processes (default 4: two per core, the best in bench/serve.py)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (default 1: workers x threads <= cores)"
    )
    p.add_argument("--env-manager", default="local", choices=["local", "virtualenv", "uv", "conda"])
    import flows.nightly

    p = sub.add_parser(
        "tune",
        help="search a family's settings (an Optuna study); the best become its nightly settings",
        description="An Optuna study per spec and family: each trial trains one fold and scores on its "
        "validation targets; the best trial's settings are written to 09_settings/<spec>/<family> in the lake, "
        "which the nightly run reads. Every parameter of the flow 'tune' is an option.",
    )
    tune_names = add_flow_options(p, flows.nightly.tune, defaults={"spec": SAMPLE_SPEC})
    p.add_argument(
        "--show", action="store_true", help="print the study's best trials and current settings, run nothing"
    )
    _runner_options(p)
    p.set_defaults(flow_names=tune_names)
    p = sub.add_parser("catalogue", help="publish today's catalogue for the served champions (no training)")
    p.add_argument("--spec", default=str(ROOT / "specs" / "beauty_sample.yaml"))
    p.add_argument("--lake", default=None)
    return parser, names


EXIT_REJECTED = 2
"""Exit status of a run that bad data, a bad spec or missing settings stopped (1: anything else)."""


def main(argv: list[str] | None = None) -> None:
    _env()  # before prefect is imported (by flows.nightly): its settings are read at import
    from prefect.exceptions import CancelledRun

    import flows.nightly
    from components.events import InputNotReady
    from components.runlock import RunLocked
    from components.tracking import RegistryUnavailable

    flow = flows.nightly.nightly
    parser, names = build_parser(flow)
    args = parser.parse_args(argv)
    # A SIGINT stops a run (KeyboardInterrupt) even where the shell started us with SIGINT
    # ignored, as it does for a background job; SIGTERM is Prefect's during a flow run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _command(args, flow, names)
    except flows.nightly.REJECTIONS as e:  # the message says what and where
        print(f"interestflow {args.cmd}: rejected: {e}", file=sys.stderr)
        sys.exit(EXIT_REJECTED)
    except (RunLocked, RegistryUnavailable, InputNotReady, CancelledRun) as e:
        print(f"interestflow {args.cmd}: {'cancelled: ' if isinstance(e, CancelledRun) else ''}{e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before or after the run proper (a stop during it ends Cancelled, above)
        print(f"interestflow {args.cmd}: interrupted", file=sys.stderr)
        sys.exit(1)


def _command(args: argparse.Namespace, flow, names: list[str]) -> None:
    if args.cmd in FLOW_COMMANDS:
        import flows.nightly

        out = _with_runner(flow, args, flows.nightly.FOLD_WORKERS)(**flow_kwargs(args, names))
        if args.json:
            print(json.dumps(dataclasses.asdict(out), indent=2, default=str))
        else:
            _print_summary(out)
    elif args.cmd == "registry":
        _print_registry()
    elif args.cmd in ("promote", "rollback"):
        from components import promotion

        try:
            if args.cmd == "promote":
                out = promotion.promote_version(args.family, args.version, args.reason)
            else:
                out = promotion.rollback(args.family, args.reason)
        except ValueError as e:  # no such version, no previous champion
            sys.exit(f"interestflow {args.cmd}: {e}")
        print(f"{out['name']}: champion v{out['previous']} -> v{out['champion']} ({args.reason})")
    elif args.cmd == "recommend":
        _print_user_recommendations(args)
    elif args.cmd == "serve":
        _serve(args)
    elif args.cmd == "tune":
        if args.show:
            _print_study(args)
        else:
            import flows.nightly

            tune = _with_runner(flows.nightly.tune, args, flows.nightly.TRIAL_WORKERS)
            tune(**flow_kwargs(args, args.flow_names))
    elif args.cmd == "catalogue":
        from components import catalogue
        from components.config import default_lake

        out = catalogue.publish(args.spec, args.lake or default_lake())
        verdict = "published" if out.changed else "unchanged (already current)"
        counts = f"{out.items} items ({out.embedded} texts embedded now, {out.cached} cached)"
        print(f"catalogue {verdict}: {counts} -> {out.uri}")


def _serve(args: argparse.Namespace) -> None:
    """Replace this process by ``mlflow models serve`` on the champion (its PID is the server's)."""
    from components import tracking

    name = tracking.model_name(args.family)
    version = tracking.alias_version(name, tracking.CHAMPION)
    if version is None:
        sys.exit(f"interestflow serve: {name} has no champion yet (run `interestflow train` first)")
    uri = f"models:/{name}@{tracking.CHAMPION}"
    bin_dir = str(Path(sys.executable).parent)  # uvicorn and mlflow of this environment
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(),
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
    }
    cmd = [
        str(Path(bin_dir) / "mlflow"),
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        args.env_manager,
        "-h",
        args.host,
        "-p",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    print(f"serving {name} v{version} ({uri}) on http://{args.host}:{args.port}/invocations", flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
