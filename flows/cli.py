"""``interestflow``: run the nightly flow (or the demo on the shipped sample) and read the registry."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env() -> None:
    """Embedded default: Prefect, MLflow and the lake under INTERESTFLOW_HOME (default ./var)."""
    home = Path(os.environ.setdefault("INTERESTFLOW_HOME", str(Path("var").resolve())))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _print_summary(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from components.report import METRICS

    console = Console(width=None if sys.stdout.isatty() else 120)  # keep the table whole in logs
    for r in out["results"]:
        t = Table(title=f"{r['family']}: cross-validation and test (data {out['data_hash']})")
        for col in ("metric", "CV mean ± std", "test", "popularity (test)"):
            t.add_column(col, justify="right" if col != "metric" else "left")
        for m in METRICS:
            t.add_row(
                m,
                f"{r['cv'][m + '_mean']:.4f} ± {r['cv'][m + '_std']:.4f}",
                f"{r['test'][m]:.4f}",
                f"{r['popularity'][m]:.4f}",
            )
        console.print(t)
        d = r.get("decision")
        if d:
            v = r["registered"]
            console.print(
                f"[bold]{v['name']} v{v['version']}[/]: "
                f"{'PROMOTED to champion' if d['promote'] else 'not promoted'} — {d['reason']}"
            )
    if out.get("recommendations"):
        rc = out["recommendations"]
        console.print(
            f"Top-{rc['rows'] // max(rc['users'], 1)} recommendations for {rc['users']} users "
            f"(champion {rc['family']} v{rc['version']}): {rc['uri']}"
        )
    from components.tracking import tracking_uri

    home = os.environ["INTERESTFLOW_HOME"]
    console.print("\n[bold]Look at what this run recorded:[/]")
    console.print(
        f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {tracking_uri()} --port 5000   -> http://127.0.0.1:5000"
    )
    console.print(
        f"  Prefect UI: PREFECT_HOME={home}/prefect .venv/bin/prefect server start --port 4200"
        "   -> http://127.0.0.1:4200"
    )


def _print_registry() -> None:
    """Per family: champion and challenger versions with the test figures recorded on them."""
    from rich.console import Console
    from rich.table import Table

    from components import tracking
    from components.models import MODELS

    t = Table(title=f"MLflow registry ({tracking.tracking_uri()})")
    for col in ("registered model", "alias", "version", "test ndcg10", "test hr10", "data", "decision"):
        t.add_column(col)
    for family in MODELS:
        name = tracking.model_name(family)
        for alias in (tracking.CHAMPION, tracking.CHALLENGER):
            v = tracking.alias_version(name, alias)
            if v is None:
                continue
            tags = tracking.client().get_model_version(name, v).tags
            t.add_row(
                name,
                alias,
                v,
                tags.get("test_ndcg10", "")[:6],
                tags.get("test_hr10", "")[:6],
                tags.get("data_hash", ""),
                tags.get("promotion.decision", ""),
            )
    Console(width=None if sys.stdout.isatty() else 120).print(t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="interestflow", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("demo", "the nightly flow on the shipped sample"), ("nightly", "the nightly flow")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--spec", default=str(ROOT / "specs" / "beauty_sample.yaml"))
        p.add_argument("--lake", default=None)
        p.add_argument("--families", nargs="+", default=["mf"])
        p.add_argument("--folds", type=int, default=3)
        p.add_argument("--max-epochs", type=int, default=30)
        p.add_argument("--patience", type=int, default=5)
        p.add_argument("--devices", type=int, default=1)
        p.add_argument("--dry-run", action="store_true")
        p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    sub.add_parser("registry", help="each family's champion and challenger")
    args = parser.parse_args(argv)
    _env()
    if args.cmd in ("demo", "nightly"):
        from flows.nightly import nightly

        out = nightly(
            spec=args.spec,
            lake=args.lake,
            families=args.families,
            folds=args.folds,
            max_epochs=args.max_epochs,
            patience=args.patience,
            devices=args.devices,
            dry_run=args.dry_run,
        )
        if args.json:
            print(json.dumps(out, indent=2, default=str))
        else:
            _print_summary(out)
    elif args.cmd == "registry":
        _print_registry()


if __name__ == "__main__":
    main()
