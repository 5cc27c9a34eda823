"""Which bert objective is the default: causal (next item) vs masked (BERT4Rec) on validation.

Trains the bert fold stage (every user's second-to-last item held out, early stopping on
its NDCG@10) once per objective with the same epoch budget and patience on full Beauty,
and prints each epoch's validation NDCG@10 and the best.

    .venv/bin/python bench/bert_objective.py --lake bench/out/bert-objective [--max-epochs 20]
"""

from __future__ import annotations

import argparse
import json

from _common import ROOT, fresh_home, quiet_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    quiet_env()
    lake = str(fresh_home(args.lake))
    from components import datasets, training

    ds = datasets.prepare(str(ROOT / "specs" / "amazon_beauty.yaml"), lake, 1, 0)
    figures = {}
    for objective in ("causal", "masked"):
        cfg = {
            "max_epochs": args.max_epochs,
            "patience": args.patience,
            "num_threads": args.threads,
            "model": {"objective": objective},
        }
        r = training.run_stage(ds, "bert", "fold", cfg, lake, None, fold=0)
        print(f"\n{objective}: " + " ".join(f"{h['val_ndcg10']:.4f}" for h in r["history"]))
        print(f"{objective}: best epoch {r['best_epoch']}, validation NDCG@10 {r['metrics']['ndcg10']:.4f}")
        figures.update(
            {
                f"{objective}_val_ndcg10": round(r["metrics"]["ndcg10"], 4),
                f"{objective}_best_epoch": r["best_epoch"],
                f"{objective}_epochs_run": r["epochs_run"],
                f"{objective}_train_s": round(r["train_s"], 1),
            }
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
