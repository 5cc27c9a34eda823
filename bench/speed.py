"""Training speed per family on full Amazon Beauty, side by side with peer implementations.

Ours: seconds per training epoch (no validation) and training samples per second
(next-item targets for the sequence families, users for mf), at the peers' dimensions.
Peers, in the same run and at the same thread count: RecBole 1.2.1's GRU4Rec (vs our
lstm) and Caser (vs our cnn), and the `implicit` library's ALS and BPR (vs our mf), each
in the separate peers venv (.venv-peers, created here per ../shared/PEERS.md if missing).
Prints the time ratio ours/peer and each side's test NDCG@10 after its budget. Ours runs
at each of ``--precisions`` (Lightning precisions; peers run fp32, the only precision they offer
on CPU): ``bf16-mixed`` only pays on a CPU with native bf16 (AVX512-BF16 / AMX).

    .venv/bin/python bench/speed.py --lake bench/out/speed [--epochs 3] [--families mf lstm cnn]
        [--precisions 32-true bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from _common import ROOT, fresh_home, quiet_env

PEERS_VENV = ROOT / ".venv-peers"
PEER_OF = {"lstm": "GRU4Rec", "cnn": "Caser"}
# Our configs at the peers' dimensions (RecBole defaults we set in bench/peers/recbole_peer.py).
ALS_SHORT = 5  # sweeps of the second, shorter ALS fit
SAME_DIMS = {
    "mf": {"dim": 64},
    "lstm": {"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": 50},
    "cnn": {"dim": 64, "window": 5, "n_h": 16, "n_v": 4, "dropout": 0.5},
}


def ensure_peers_venv() -> Path:
    py = PEERS_VENV / "bin" / "python"
    if not py.exists():
        (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
        cons = ROOT / "bench" / "out" / "peers-constraints.txt"
        cons.write_text("torch==2.13.0\n")
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        pip = [str(PEERS_VENV / "bin" / "pip"), "install", "-q", "-c", str(cons)]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "implicit==0.7.3", "recbole==1.2.1", "pandas<3", "setuptools<81"], check=True)
    return py


def recbole_data(events_csv: Path, out: Path) -> Path:
    """RecBole atomic file; same-day ties keep the benchmark order (timestamp + seq_pos * 1e-3)."""
    d = out / "beauty"
    d.mkdir(parents=True, exist_ok=True)
    ev = pd.read_csv(events_csv)
    ev["ts"] = ev["timestamp"] + ev["seq_pos"] * 1e-3
    ev[["user_id", "item_id", "ts"]].to_csv(
        d / "beauty.inter", sep="\t", index=False, header=["user_id:token", "item_id:token", "timestamp:float"]
    )
    return out


def run_peer(py: Path, script: str, *args: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [str(py), str(ROOT / "bench" / "peers" / script), *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ours(family: str, epochs: int, threads: int, lake: str, precision: str, model: dict | None = None) -> dict:
    from components import pipeline
    from components.config import TrainConfig

    spec = str(ROOT / "specs" / "amazon_beauty.yaml")
    ds = pipeline.data_path(spec, lake, 1, 0)
    model = {**SAME_DIMS[family], **(model or {})}
    cfg = TrainConfig(max_epochs=epochs, num_threads=threads, model=model, seed=0, precision=precision)
    final = pipeline.train(ds, family, "final", cfg, lake, epochs=epochs)
    rep = pipeline.evaluate(ds, final, [], lake)  # no folds: the test figures after the budget
    epoch_s = [h["train_epoch_s"] for h in final.history]
    return {
        "epoch_s": epoch_s,
        "fit_s": final.train_s,  # the whole Lightning fit: set-up, epochs, per-epoch checkpoints
        "samples": final.train_samples,
        "test_ndcg10": rep.test["ndcg10"],
        "test_hr10": rep.test["hr10"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--families", nargs="+", default=["mf", "lstm", "cnn"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    args = ap.parse_args()
    quiet_env()
    lake = fresh_home(args.lake)
    py = ensure_peers_venv()
    events_csv = Path(os.environ["INTERESTFLOW_SHARED_DATA"]) / "amazon_beauty" / "interactions.csv.gz"
    figures, rows = {"threads": args.threads, "epochs": args.epochs}, []
    for family in args.families:
        mine = {}  # precision -> (figure-name tag, seconds per epoch, test NDCG@10)
        for precision in args.precisions:
            o = ours(family, args.epochs, args.threads, str(lake), precision)
            # the first epoch carries warm-up; the mean of the rest is the steady state
            o_s = sum(o["epoch_s"][1:] or o["epoch_s"]) / len(o["epoch_s"][1:] or o["epoch_s"])
            tag = "" if precision == args.precisions[0] else f"_{precision.split('-')[0]}"
            figures.update(
                {
                    f"{family}{tag}_epoch_s": round(o_s, 2),
                    f"{family}{tag}_samples_per_s": round(o["samples"] / o_s),
                    f"{family}{tag}_ndcg10_after_budget": round(o["test_ndcg10"], 4),
                }
            )
            mine[precision] = (tag, o_s, o["test_ndcg10"])
        if family in PEER_OF:
            p = run_peer(
                py,
                "recbole_peer.py",
                "--model",
                PEER_OF[family],
                "--epochs",
                str(args.epochs),
                "--data",
                str(recbole_data(events_csv, lake / "recbole")),
                "--threads",
                str(args.threads),
                threads=args.threads,
            )
            p_s = sum(p["epoch_s"][1:] or p["epoch_s"]) / len(p["epoch_s"][1:] or p["epoch_s"])
            peer = f"recbole_{PEER_OF[family].lower()}"
            figures.update(
                {
                    f"{peer}_epoch_s": round(p_s, 2),
                    f"{peer}_samples_per_s": round(p["samples"] / p_s),
                    f"{peer}_ndcg10_after_budget": round(p["test_ndcg10"], 4),
                }
            )
            peers = [(PEER_OF[family] + " (RecBole)", p_s, p["test_ndcg10"], "recbole")]
        else:
            p = run_peer(
                py,
                "implicit_peer.py",
                "--events",
                str(events_csv),
                "--threads",
                str(args.threads),
                threads=args.threads,
            )
            peers = []
            # Our mf by alternating least squares, as many sweeps as implicit's ALS iterations,
            # each side with its own default alpha and regularisation: whole fits side by side.
            als = ours(family, p["als"]["iterations"], args.threads, str(lake), "32-true", {"solver": "als"})
            # fit: the whole Lightning fit (its set-up, and a checkpoint written after each sweep),
            # against implicit's whole fit; sweeps: the sweeps alone (users, then items).
            figures.update(
                {
                    "mf_als_fit_s": round(als["fit_s"], 2),
                    "mf_als_sweeps_s": round(sum(als["epoch_s"]), 2),
                    "mf_als_sweep_s": round(sum(als["epoch_s"]) / len(als["epoch_s"]), 3),
                    "mf_als_ndcg10": round(als["test_ndcg10"], 4),
                    "mf_als_fit_ratio_vs_implicit_als": round(als["fit_s"] / p["als"]["fit_s"], 2),
                    "mf_als_sweeps_ratio_vs_implicit_als": round(sum(als["epoch_s"]) / p["als"]["fit_s"], 2),
                }
            )
            # And a third of the sweeps: the same quality sooner? (the target is implicit's NDCG@10)
            short = ours(family, ALS_SHORT, args.threads, str(lake), "32-true", {"solver": "als"})
            figures.update(
                {
                    f"mf_als{ALS_SHORT}_fit_s": round(short["fit_s"], 2),
                    f"mf_als{ALS_SHORT}_ndcg10": round(short["test_ndcg10"], 4),
                    f"mf_als{ALS_SHORT}_fit_ratio_vs_implicit_als": round(short["fit_s"] / p["als"]["fit_s"], 2),
                }
            )
            for algo in ("als", "bpr"):
                figures.update(
                    {
                        f"implicit_{algo}_iter_s": round(p[algo]["iter_s"], 3),
                        f"implicit_{algo}_fit_s": round(p[algo]["fit_s"], 2),
                        f"implicit_{algo}_ndcg10": round(p[algo]["test_ndcg10"], 4),
                    }
                )
                name = f"implicit {algo.upper()} (per iteration)"
                peers.append((name, p[algo]["iter_s"], p[algo]["test_ndcg10"], f"implicit_{algo}_per_iter"))
        for precision, (tag, o_s, o_n) in mine.items():
            for name, p_s, p_n, key in peers:
                figures[f"{family}{tag}_ratio_vs_{key}"] = round(o_s / p_s, 3)
                rows.append((f"{family} {precision}", o_s, o_n, name, p_s, p_n))
    print(f"\n{'ours':<17}{'s/epoch':>9}{'NDCG@10':>9}   {'peer':<32}{'s/epoch':>9}{'NDCG@10':>9}{'ratio':>8}")
    for fam, o_s, o_n, peer, p_s, p_n in rows:
        print(f"{fam:<17}{o_s:>9.2f}{o_n:>9.4f}   {peer:<32}{p_s:>9.2f}{p_n:>9.4f}{o_s / p_s:>8.2f}")
    print(
        f"(NDCG@10 after {args.epochs} epochs for both sides; implicit after its own 15 ALS / 100 BPR iterations; "
        f"{args.threads} threads each; peers in fp32)"
    )
    if "mf_als_fit_s" in figures:
        print(
            f"mf solver=als, {figures['mf_als_sweeps_s'] / figures['mf_als_sweep_s']:.0f} sweeps: fit "
            f"{figures['mf_als_fit_s']:.2f} s (sweeps {figures['mf_als_sweeps_s']:.2f} s), "
            f"test NDCG@10 {figures['mf_als_ndcg10']:.4f}; implicit ALS: fit "
            f"{figures['implicit_als_fit_s']:.2f} s, test NDCG@10 {figures['implicit_als_ndcg10']:.4f} "
            f"(fit ratio {figures['mf_als_fit_ratio_vs_implicit_als']:.2f}); {ALS_SHORT} sweeps: fit "
            f"{figures[f'mf_als{ALS_SHORT}_fit_s']:.2f} s, test NDCG@10 {figures[f'mf_als{ALS_SHORT}_ndcg10']:.4f} "
            f"(fit ratio {figures[f'mf_als{ALS_SHORT}_fit_ratio_vs_implicit_als']:.2f})"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
