"""Builds the shipped review-text sample from ../shared/data/amazon_music_reviews: 200 random
reviewers of the Amazon Musical Instruments 5-core file with all their reviews, as published
(JSON Lines, gzip), except that each display name (``reviewerName``, personal data) is
replaced by ``reviewer <n>``: the column stays, so the sample still shows that columns the
spec does not map never reach the lake. Amazon review data (McAuley, UCSD; He & McAuley
WWW'16, McAuley et al. SIGIR'15): research use, cite the papers.

    python data/make_reviews_sample.py [--users 200] [--seed 0]
"""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "shared" / "data" / "amazon_music_reviews" / "reviews_Musical_Instruments_5.json.gz"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--src", default=str(SRC))
    args = ap.parse_args()
    lines = gzip.open(args.src, "rt", encoding="utf-8").read().splitlines()
    rows = [json.loads(line) for line in lines]
    pool = sorted({r["reviewerID"] for r in rows})
    users = set(np.random.default_rng(args.seed).choice(pool, args.users, replace=False))
    alias = {u: f"reviewer {n}" for n, u in enumerate(sorted(users), start=1)}
    out = HERE / "reviews"
    out.mkdir(exist_ok=True)
    with gzip.GzipFile(out / "reviews.json.gz", "wb", mtime=0) as f:
        for r in rows:
            if r["reviewerID"] in users:
                if "reviewerName" in r:
                    r["reviewerName"] = alias[r["reviewerID"]]
                f.write((json.dumps(r) + "\n").encode("utf-8"))
