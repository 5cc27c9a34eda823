"""How the nightly flow grows with the data: Beauty replicated 1x, 2x, 4x (users duplicated
with new ids), each size in its own process; prints time and peak RSS per size and the
growth exponent of time in the number of events (least squares on log-log).

    .venv/bin/python bench/scale.py --out bench/out/scale [--sizes 1 2 4] [--families mf]

A fixed epoch budget (patience = max epochs) so that every size trains the same number of
epochs: the exponent then measures the pipeline, not where early stopping happened to stop.
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

import pandas as pd
from _common import ROOT, fresh_home, peak_rss_gib, quiet_env


def replicate(factor: int, out: Path) -> tuple[Path, int]:
    """Write Beauty with every user copied ``factor`` times (new ids) and a spec for it."""
    src = Path(os.environ["INTERESTFLOW_SHARED_DATA"]) / "amazon_beauty"
    ev = pd.read_csv(src / "interactions.csv.gz", dtype={"user_id": str, "item_id": str})
    copies = [
        ev.assign(user_id=ev["user_id"] + (f"~{k}" if k else ""), seq_pos=ev["seq_pos"] + k * len(ev))
        for k in range(factor)
    ]
    big = pd.concat(copies, ignore_index=True)
    d = out / f"x{factor}"
    d.mkdir(parents=True, exist_ok=True)
    big.to_csv(d / "events.csv.gz", index=False)
    spec = (ROOT / "specs" / "amazon_beauty.yaml").read_text()
    spec = spec.replace("name: amazon_beauty", f"name: beauty_x{factor}")
    spec = spec.replace("${INTERESTFLOW_SHARED_DATA}/amazon_beauty/interactions.csv.gz", str(d / "events.csv.gz"))
    (d / "spec.yaml").write_text(spec)
    return d / "spec.yaml", len(big)


def one(spec: str, home: str, families: list[str], epochs: int) -> None:
    fresh_home(home)
    from flows.nightly import nightly

    t0 = time.perf_counter()
    nightly(spec=spec, families=families, folds=1, max_epochs=epochs, patience=epochs)
    print(json.dumps({"total_s": time.perf_counter() - t0, "peak_rss_gib": peak_rss_gib()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--families", nargs="+", default=["mf"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--one", nargs=2, metavar=("SPEC", "HOME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    quiet_env()
    if args.one:
        return one(args.one[0], args.one[1], args.families, args.epochs)
    out = Path(args.out).resolve()
    rows = []
    for f in args.sizes:
        spec, n = replicate(f, out / "data")
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--out",
                str(out),
                "--epochs",
                str(args.epochs),
                "--families",
                *args.families,
                "--one",
                str(spec),
                str(out / f"home-x{f}"),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"size": f, "events": n, **r})
        print(f"x{f}: {n} events, {r['total_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    xs, ys = [math.log(r["events"]) for r in rows], [math.log(r["total_s"]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    print(f"growth exponent of time in events: {slope:.3f}")
    figures = {"growth_exponent": round(slope, 3)}
    for r in rows:
        figures.update(
            {
                f"x{r['size']}_s": round(r["total_s"], 1),
                f"x{r['size']}_peak_rss_gib": round(r["peak_rss_gib"], 2),
                f"x{r['size']}_events": r["events"],
            }
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
