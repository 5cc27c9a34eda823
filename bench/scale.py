"""How a night grows with the shop: Beauty replicated x1, x5, x10, x50, users *and items*
copied per replica (each copy a shop of its own; titles copied, so the text cache embeds
each distinct title once), each size in its own process. Prints each stage's time and the
process's peak RSS after it, batch top-10 for every user exact and from the item index
(recall@10 of the index against exact scoring on a fixed sample of users), and the growth
exponent of each stage's time in the number of events (least squares on log-log); ends
with one JSON line (``x50_data_s``, ``x50_mf_fit_s``, ``x50_recommend_s``,
``x50_ann_recall10``, ``x50_peak_rss_gib``, ``growth_exponent_<stage>``, ...).

    INTERESTFLOW_SHARED_DATA=../shared/data .venv/bin/python bench/scale.py --out bench/out/scale \\
        [--sizes 1 5 10 50] [--families mf] [--model '{"mf": {"solver": "als"}}'] [--epochs 15] [--reuse] \\
        [--repeat 3]

mf trains by alternating least squares by default here (the fast path at scale), a fixed
number of sweeps (one final fit, no folds: the exponent then measures the pipeline, not
where early stopping stopped). Trainings run as plain child processes
(``INTERESTFLOW_PRELOAD=0``) so that their peak RSS is counted. ``--epoch-family lstm
--epoch-size 10`` adds one epoch of a sequence family at that size (seconds per epoch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import ROOT, fresh_home, peak_rss_gib, quiet_env

STAGES = (
    "ingest",
    "validate",
    "features",
    "item_text",
    "datasets",
    "fit",
    "evaluate",
    "recommend_exact",
    "recommend_ann",
)
DATA_STAGES = ("ingest", "validate", "features", "item_text", "datasets")
RECALL_USERS = 2_000  # the fixed sample of users the index's recall@10 is measured on
EXACT_MAX = 3 * 10**10  # users x items above which exact top-10 is scored on the sample only (x10: 2.7e10)


def replicate(factor: int, out: Path) -> tuple[Path, int]:
    """Beauty with every user and every item copied ``factor`` times (copy k: ids + "~k",
    the events of copy k only between copy k's users and items), as Parquet, and a spec."""
    d = out / f"x{factor}"
    spec = d / "spec.yaml"
    src = Path(os.environ["INTERESTFLOW_SHARED_DATA"]) / "amazon_beauty"
    ev = pd.read_csv(src / "interactions.csv.gz", dtype={"user_id": str, "item_id": str})
    if spec.exists():
        return spec, len(ev) * factor
    items = pd.read_csv(src / "items.csv", dtype={"item_id": str})
    d.mkdir(parents=True, exist_ok=True)

    def copies(df: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
        parts = []
        for k in range(factor):
            part = df.copy()
            for c in cols:
                part[c] = part[c] + (f"~{k}" if k else "")
            if "seq_pos" in part:
                part["seq_pos"] = part["seq_pos"] + k * len(df)
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    copies(ev, ("user_id", "item_id")).to_parquet(d / "events.parquet", index=False)
    copies(items, ("item_id",)).to_parquet(d / "items.parquet", index=False)
    text = (ROOT / "specs" / "amazon_beauty.yaml").read_text()
    text = text.replace("name: amazon_beauty", f"name: beauty_x{factor}")
    text = text.replace("${INTERESTFLOW_SHARED_DATA}/amazon_beauty/interactions.csv.gz", str(d / "events.parquet"))
    text = text.replace("${INTERESTFLOW_SHARED_DATA}/amazon_beauty/items.csv", str(d / "items.parquet"))
    spec.write_text(text)
    return spec, len(ev) * factor


def one(spec: str, home: str, families: list[str], epochs: int, model: dict, epoch_family: str | None) -> None:
    """One size, in this process: every stage timed, the peak RSS after each."""
    fresh_home(home)
    os.environ["INTERESTFLOW_PRELOAD"] = "0"  # trainings as direct children: their RSS counts
    from components import evaluation, lake, pipeline, retrieval, storage, training
    from components.config import TrainConfig
    from components.datasets import Dataset
    from components.recommender import Recommender

    row: dict = {}

    def timed(stage: str, f):
        t0 = time.perf_counter()
        out = f()
        row[f"{stage}_s"] = time.perf_counter() - t0
        row[f"{stage}_peak_rss_gib"] = peak_rss_gib()
        print(f"  {stage}: {row[f'{stage}_s']:.1f} s, peak RSS {row[f'{stage}_peak_rss_gib']:.2f} GiB", flush=True)
        return out

    raw = timed("ingest", lambda: pipeline.ingest(spec, home))
    validated = timed("validate", lambda: pipeline.validate(raw, home))
    feats = timed("features", lambda: pipeline.build_features(validated, home))
    feats = timed("item_text", lambda: pipeline.embed_items(feats, home))
    ds = timed("datasets", lambda: pipeline.build_datasets(feats, home, 1, 0))
    row["data_s"] = sum(row[f"{s}_s"] for s in DATA_STAGES)
    for family in families:
        cfg = TrainConfig(max_epochs=epochs, patience=epochs, num_threads=2, model=model.get(family, {}), seed=0)
        final = timed("fit", lambda: pipeline.train(ds, family, "final", cfg, home, epochs=epochs))  # noqa: B023
        timed("evaluate", lambda: pipeline.evaluate(ds, final, [], home))  # noqa: B023
        rec = Recommender.from_bytes(storage.read_bytes(lake.file(final.checkpoint_uri, training.RECOMMENDER)))
        data = Dataset.load(ds)
        view = data.view("serve")
        ann = timed("recommend_ann", lambda: retrieval.ann_rank(rec, data, view, 10, recall_users=0))  # noqa: B023
        sample = np.sort(
            np.random.default_rng(0).choice(len(ann.top_items), min(RECALL_USERS, len(ann.top_items)), False)
        )
        scorer = rec.scorer_for(data)
        if len(view.eval_users) * data.n_items <= EXACT_MAX:  # exact top-10 for every user too
            exact = timed(
                "recommend_exact",
                lambda: evaluation.rank_view(scorer, view, data.n_items, k=10, max_len=rec.max_len)[1],  # noqa: B023
            )[sample]
        else:  # too slow for every user: exact on the sample only (the recall's reference)
            exact = evaluation.rank_view(scorer, view.subset(sample), data.n_items, k=10, max_len=rec.max_len)[1]
        row["ann_recall10"] = float(
            np.mean([len(np.intersect1d(ann.top_items[u], e)) / 10 for u, e in zip(sample, exact, strict=True)])
        )
        row["users"], row["items"] = len(view.eval_users), data.n_items
        print(f"  index recall@10 on {len(sample)} users: {row['ann_recall10']:.4f}", flush=True)
    if epoch_family:
        cfg = TrainConfig(max_epochs=1, patience=1, num_threads=2, model=model.get(epoch_family, {}), seed=0)
        r = timed("epoch", lambda: pipeline.train(ds, epoch_family, "final", cfg, home, epochs=1))
        row["epoch_family"], row["epoch_s"] = epoch_family, r.history[0]["train_epoch_s"]
    row["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(row))


def fastest(runs: list[dict]) -> dict:
    """One size's figures over its runs: each stage's fastest time (as timeit reports: what the
    slower runs add is the machine's other load), the largest peak RSS, the rest from run 1."""
    row = dict(runs[0])
    for key in row:
        if key.endswith("_s"):
            row[key] = min(r[key] for r in runs)
        elif key.endswith("peak_rss_gib"):
            row[key] = max(r[key] for r in runs)
    row["data_s"] = min(r["data_s"] for r in runs)  # the fastest whole run, not a sum of bests
    return row


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def exponent(rows: list[dict], key: str) -> float | None:
    pts = [(math.log(r["events"]), math.log(r[key])) for r in rows if r.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1, 5, 10, 50])
    ap.add_argument("--families", nargs="*", default=["mf"], help="none: the data stages only")
    ap.add_argument("--model", default='{"mf": {"solver": "als", "dim": 64}}', help="per-family config (JSON)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--epoch-family", default=None, help="also time one epoch of this family...")
    ap.add_argument("--epoch-size", type=int, default=10, help="...at this size")
    ap.add_argument("--reuse", action="store_true", help="take a size's figures from an earlier run of the same code")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; a stage's time is its fastest run's")
    ap.add_argument("--one", nargs=2, metavar=("SPEC", "HOME"), help=argparse.SUPPRESS)
    ap.add_argument("--with-epoch", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    quiet_env()
    model = json.loads(args.model)
    if args.one:
        return one(
            args.one[0], args.one[1], args.families, args.epochs, model, args.epoch_family if args.with_epoch else None
        )
    out = Path(args.out).resolve()
    rows = []
    for f in args.sizes:
        saved = out / "rows" / f"x{f}.json"  # a size's figures, kept for --reuse
        if args.reuse and saved.exists():
            rows.append(json.loads(saved.read_text()))
            print(f"x{f}: {rows[-1]['events']:,} events (figures of {saved})", flush=True)
            continue
        spec, n = replicate(f, out / "data")
        print(f"x{f}: {n:,} events", flush=True)
        cmd = [sys.executable, __file__, "--out", str(out), "--epochs", str(args.epochs), "--model", args.model]
        cmd += ["--families", *args.families, "--one", str(spec), str(out / f"home-x{f}")]
        if args.epoch_family and f == args.epoch_size:
            cmd += ["--epoch-family", args.epoch_family, "--with-epoch"]
        runs = []
        for r in range(args.repeat):
            if args.repeat > 1:
                print(f" run {r + 1} of {args.repeat}", flush=True)
            last = ""
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
                for line in proc.stdout:  # each stage as it ends
                    if line.startswith("  "):
                        print(line, end="", flush=True)
                    last = line
            if proc.returncode != 0:
                raise SystemExit(f"x{f} failed (exit {proc.returncode})")
            runs.append(json.loads(last))
        rows.append({"size": f, "events": n, **fastest(runs), "runs": runs})
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(rows[-1]))
    figures: dict = {}
    print(f"\n{'stage':<17}" + "".join(f"{'x' + str(r['size']):>10}" for r in rows) + f"{'exponent':>10}")
    for stage in (*STAGES, "data"):
        g = exponent(rows, f"{stage}_s")
        cells = "".join(f"{r.get(f'{stage}_s', float('nan')):>10.1f}" for r in rows)
        print(f"{stage + ' (s)':<17}{cells}{'' if g is None else f'{g:>10.3f}'}")
        if g is not None:
            figures[f"growth_exponent_{stage}"] = round(g, 3)
    print(f"{'peak RSS (GiB)':<17}" + "".join(f"{r['peak_rss_gib']:>10.2f}" for r in rows))
    for r in rows:
        x = f"x{r['size']}"
        figures |= {  # null where a size did not measure it (exact top-10 above EXACT_MAX)
            f"{x}_events": r["events"],
            f"{x}_data_s": round(r["data_s"], 1),
            f"{x}_mf_fit_s": _round(r.get("fit_s"), 1),
            f"{x}_recommend_s": _round(r.get("recommend_ann_s"), 1),
            f"{x}_recommend_exact_s": _round(r.get("recommend_exact_s"), 1),
            f"{x}_ann_recall10": _round(r.get("ann_recall10"), 4),
            f"{x}_peak_rss_gib": round(r["peak_rss_gib"], 2),
        }
        if "epoch_s" in r:
            figures[f"{x}_{r['epoch_family']}_epoch_s"] = round(r["epoch_s"], 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
