"""``interestflow``: run the nightly flow (or the demo on the shipped sample), read and change the
registry (promote, rollback) and ask for one user's recommendations."""

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
        t.add_row(
            f"cold ndcg10 ({r['test']['cold_n']} targets)",
            "",
            f"{r['test']['cold_ndcg10']:.4f}",
            f"{r['popularity']['cold_ndcg10']:.4f}",
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
    if out.get("profiles"):
        p = out["profiles"]["summary"]
        console.print(
            f"Profiles of {p['users']} users: churn AUC {p['churn_auc']:.3f} (recency only "
            f"{p['churn_auc_recency_baseline']:.3f}), median drift {p['drift_jsd_median']:.3f} nats -> "
            f"{out['profiles']['uri']}"
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


def _print_user_recommendations(args) -> None:
    from rich.console import Console
    from rich.table import Table

    from components import datasets, recommend
    from components.config import default_lake
    from components.models import MODELS

    ds = datasets.prepare(args.spec, args.lake or default_lake(), 1, 0)  # finished layers are reused
    try:
        top = recommend.for_user(args.user, ds, list(MODELS), args.k, args.family)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"interestflow recommend: {e}")
    t = Table(
        title=f"Top-{args.k} for user {args.user} ({top.attrs['history']} items so far) from {top.attrs['model']}"
    )
    for col in ("rank", "item", "title", "category", "score"):
        t.add_column(col)
    for r in top.itertuples():
        t.add_row(str(r.rank), r.item_id, str(r.title)[:60], str(r.categories).split(" > ")[-1], f"{r.score:.3f}")
    Console(width=None if sys.stdout.isatty() else 140).print(t)


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
    for name, help_ in (
        ("demo", "the nightly flow on the shipped sample"),
        ("nightly", "the nightly flow"),
        ("train", "train, evaluate, register, promote and recommend (no profiles)"),
    ):
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
    from components.models import MODELS

    families = list(MODELS)
    p = sub.add_parser("promote", help="make a registered version the champion (with a reason)")
    p.add_argument("--family", required=True, choices=families)
    p.add_argument("--version", required=True)
    p.add_argument("--reason", required=True)
    p = sub.add_parser("rollback", help="give the champion alias back to the previous champion")
    p.add_argument("--family", required=True, choices=families)
    p.add_argument("--reason", required=True)
    p = sub.add_parser("recommend", help="top-k for one user from the serving champion, with item titles")
    p.add_argument("--user", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--family", choices=families, default=None, help="default: the best champion")
    p.add_argument("--spec", default=str(ROOT / "specs" / "beauty_sample.yaml"))
    p.add_argument("--lake", default=None)
    args = parser.parse_args(argv)
    _env()
    if args.cmd in ("demo", "nightly", "train"):
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
            profiles=args.cmd != "train",
        )
        if args.json:
            print(json.dumps(out, indent=2, default=str))
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
        except ValueError as e:
            sys.exit(f"interestflow {args.cmd}: {e}")
        print(f"{out['name']}: champion v{out['previous']} -> v{out['champion']} ({args.reason})")
    elif args.cmd == "recommend":
        _print_user_recommendations(args)


if __name__ == "__main__":
    main()
