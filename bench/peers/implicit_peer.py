"""implicit 0.7.3 side of bench/speed.py (ALS and BPR); runs in .venv-peers, prints one JSON line.

Leave-one-out by time, full ranking with the user's earlier items excluded, the same
protocol as ours (components/metrics.py), computed here with numpy.

    .venv-peers/bin/python bench/peers/implicit_peer.py --events interactions.csv.gz
"""

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit asks for this

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from implicit.als import AlternatingLeastSquares  # noqa: E402
from implicit.bpr import BayesianPersonalizedRanking  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", required=True)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ev = pd.read_csv(args.events).sort_values(["user_id", "timestamp", "seq_pos"], kind="stable")
    items = np.sort(ev["item_id"].unique())
    ev["i"] = np.searchsorted(items, ev["item_id"])
    ev["u"] = ev.groupby("user_id", sort=True).ngroup()
    last = ev.groupby("u").tail(1)
    train = ev.drop(last.index)
    n_u, n_i = ev["u"].max() + 1, len(items)
    X = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (train["u"], train["i"])), shape=(n_u, n_i))
    targets = last.set_index("u")["i"].reindex(range(n_u)).to_numpy()
    out = {}
    for name, model, iters in (
        (
            "als",
            AlternatingLeastSquares(factors=args.factors, iterations=15, num_threads=args.threads, random_state=0),
            15,
        ),
        (
            "bpr",
            BayesianPersonalizedRanking(factors=args.factors, iterations=100, num_threads=args.threads, random_state=0),
            100,
        ),
    ):
        t0 = time.perf_counter()
        model.fit(X, show_progress=False)
        fit_s = time.perf_counter() - t0
        U, V = model.user_factors, model.item_factors
        U, V = (U.to_numpy(), V.to_numpy()) if hasattr(U, "to_numpy") else (U, V)
        hits = ndcg = 0.0
        for s in range(0, n_u, 2048):
            scores = U[s : s + 2048] @ V.T
            rows = X[s : s + 2048]
            scores[rows.nonzero()] = -np.inf
            t = targets[s : s + 2048]
            ts = scores[np.arange(len(t)), t][:, None]
            rank = (scores > ts).sum(1) + ((scores == ts) & (np.arange(n_i)[None, :] < t[:, None])).sum(1)
            hit = rank < 10
            hits += hit.sum()
            ndcg += (hit / np.log2(rank + 2)).sum()
        out[name] = {
            "fit_s": fit_s,
            "iterations": iters,
            "iter_s": fit_s / iters,
            "test_hr10": hits / n_u,
            "test_ndcg10": ndcg / n_u,
        }
    print(json.dumps({"threads": args.threads, "factors": args.factors, **out}))


if __name__ == "__main__":
    main()
