"""Builds the shipped demo sample from ../shared/data/amazon_beauty: 2,000 random users
with all their events, and the catalogue rows of the items they touched.

    python data/make_sample.py [--users 2000] [--seed 0]
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "shared" / "data" / "amazon_beauty"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--src", default=str(SRC))
    args = ap.parse_args()
    ev = pd.read_csv(Path(args.src) / "interactions.csv.gz", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(Path(args.src) / "items.csv", dtype={"item_id": str})
    users = np.random.default_rng(args.seed).choice(ev["user_id"].unique(), args.users, replace=False)
    ev = ev[ev["user_id"].isin(set(users))][["user_id", "item_id", "timestamp", "seq_pos"]]
    items = items[items["item_id"].isin(set(ev["item_id"]))][["item_id", "title", "brand", "categories", "price"]]
    out = HERE / "sample"
    out.mkdir(exist_ok=True)
    ev.to_csv(out / "events.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
    items.to_csv(out / "items.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{len(ev)} events, {ev['user_id'].nunique()} users, {len(items)} items -> {out}")
