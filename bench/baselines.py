"""The baselines' ranking (popularity, recent interactions) on full Beauty: the shared-score
path (evaluation.SharedScorer: O(overrides + k) per user) against scoring every item for
every user, with a check that both give the same ranks, top-20 items and scores.

    INTERESTFLOW_SHARED_DATA=../shared/data .venv/bin/python bench/baselines.py --lake bench/out/speed-als
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, quiet_env, reuse_home  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake", required=True, help="a lake with (or to get) Beauty's data layers")
    ap.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"))
    args = ap.parse_args()
    quiet_env()
    lake = reuse_home(args.lake)
    import torch

    from components import evaluation, pipeline
    from components.datasets import Dataset

    torch.set_num_threads(2)
    data = Dataset.load(pipeline.data_path(args.spec, str(lake), 1, 0))
    view, _ = evaluation.final_view(data)
    longest = max(len(h) for h in view.eval_hist)
    out = {"users": len(view.eval_users), "items": data.n_items}
    for name, make, max_len in (
        ("popularity", evaluation.popularity_scorer, 512),
        ("recent", evaluation.recent_scorer, longest),
    ):
        scorer = make(view, data.n_items)
        t = time.perf_counter()
        shared = evaluation.rank_view(scorer, view, data.n_items, max_len=max_len)
        shared_s = time.perf_counter() - t
        t = time.perf_counter()
        dense = evaluation.rank_view(lambda b, s=scorer: s(b), view, data.n_items, max_len=max_len)
        dense_s = time.perf_counter() - t
        same = all(np.array_equal(a, b) for a, b in zip(shared, dense, strict=True))
        ndcg = evaluation.report(shared[0], shared[1], data.n_items)["ndcg10"]
        print(f"{name}: shared {shared_s:.2f} s, every item {dense_s:.2f} s, identical {same}, NDCG@10 {ndcg:.4f}")
        out |= {f"{name}_shared_s": round(shared_s, 2), f"{name}_dense_s": round(dense_s, 2), f"{name}_identical": same}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
