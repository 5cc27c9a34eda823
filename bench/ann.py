"""Batch top-10 for every user: exact scoring against candidates from the HNSW index
(components/retrieval.py), on a lake's final mf fit (default: bench/out/quality-mf-tuned,
full Beauty). Prints each path's time and the index's recall@10 against exact scoring on
every user (not only the sample a nightly run checks), per candidate count; ends with one
JSON line.

    .venv/bin/python bench/ann.py --lake bench/out/quality-mf-tuned [--candidates 50 100 200]

Beauty's 12,101 items are far below the index's threshold (200,000): it is forced here to
measure recall and cost on real item vectors; at this size exact scoring is the faster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, quiet_env, reuse_home  # noqa: E402
from serve import champion_file  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", default=str(ROOT / "bench" / "out" / "quality-mf-tuned"))
    p.add_argument("--family", default="mf")
    p.add_argument("--spec", default=str(ROOT / "specs" / "amazon_beauty.yaml"), help="the log the fit was trained on")
    p.add_argument("--candidates", type=int, nargs="+", default=[50, 100, 200])
    args = p.parse_args()
    quiet_env()
    lake_root = reuse_home(args.lake)
    from components import evaluation, pipeline, retrieval
    from components.datasets import Dataset
    from components.recommender import Recommender

    _, path = champion_file(lake_root, args.family)
    rec = Recommender.from_bytes(path.read_bytes())
    data = Dataset.load(pipeline.data_path(args.spec, str(lake_root), 1, 0))  # the lake's own layers, reused
    if rec.ids_for(data) is not None:
        sys.exit(f"{path} was not trained on {args.spec}'s ids")
    view = replace(data.view("serve"), behaviour=rec.behaviour)
    print(f"{args.family} from {path}: {data.n_items:,} items, {len(view.eval_users):,} users", flush=True)
    t = time.perf_counter()
    _, exact, _ = evaluation.rank_view(rec.scorer_for(data), view, data.n_items, k=10, max_len=rec.max_len)
    exact_s = time.perf_counter() - t
    print(f"exact: {exact_s:.1f} s", flush=True)
    summary = {"items": data.n_items, "users": len(view.eval_users), "exact_s": round(exact_s, 2)}
    for c in args.candidates:
        t = time.perf_counter()
        ann = retrieval.ann_rank(rec, data, view, 10, candidates=c, recall_users=0)
        ann_s = time.perf_counter() - t
        recall = float(np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ann.top_items, exact, strict=True)]))
        print(f"index, {c} candidates: {ann_s:.1f} s (build and search), recall@10 {recall:.4f}", flush=True)
        summary |= {f"ann{c}_s": round(ann_s, 2), f"ann{c}_recall10": round(recall, 4)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
