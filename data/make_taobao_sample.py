"""Builds the shipped shop-log sample from ../shared/data/taobao_sample: 250 random shoppers
of the Taobao UserBehavior sample with their complete logs (views, favourites, carts,
purchases), as published (Zhu et al., KDD 2018; research use, cite the paper).

    python data/make_taobao_sample.py [--users 250] [--seed 0]
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "shared" / "data" / "taobao_sample" / "user_behavior.csv.gz"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--src", default=str(SRC))
    args = ap.parse_args()
    ev = pd.read_csv(args.src, dtype=str)
    last = ev["user_id"].iloc[-1]  # the source cuts the last user's log short: leave them out
    pool = sorted(set(ev["user_id"]) - {last})
    users = set(np.random.default_rng(args.seed).choice(pool, args.users, replace=False))
    ev = ev[ev["user_id"].isin(users)]
    out = HERE / "taobao"
    out.mkdir(exist_ok=True)
    ev.to_csv(out / "user_behavior.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
    counts = ev["behavior_type"].value_counts().to_dict()
    print(f"{len(ev)} events, {ev['user_id'].nunique()} users, {ev['item_id'].nunique()} items, {counts} -> {out}")
