"""Compare bert variants on validation: overall and cold-start NDCG@10 at the same budget.

``--family`` compares another family's variants the same way (e.g. lstm with and without
``text``); ``--precision bf16-mixed`` as the studies of bench/RESULTS.md ran.

Trains the bert fold stage (every user's second-to-last item held out, early stopping on
its NDCG@10) once per variant on full Beauty and prints each epoch's validation NDCG@10,
the best epoch's NDCG@10 and its cold-start NDCG@10 (targets whose item has <= 5
training interactions). A variant is NAME=JSON, the JSON being bert model settings
(components/models/bert.py: BERTConfig). Without --variant: the two objectives.

    .venv/bin/python bench/bert_variants.py --lake bench/out/bert-variants [--max-epochs 20] \
        [--variant 'causal={"objective": "causal"}' ...] [--reuse] [--precision bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import os

from _common import ROOT, fresh_home, quiet_env

OBJECTIVES = ['causal={"objective": "causal"}', 'masked={"objective": "masked"}']


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--family", default="bert", help="the family whose variants are compared (default: bert)")
    ap.add_argument("--variant", action="append", help="NAME=JSON of the family's model settings (repeatable)")
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="auto", help="Lightning precision of every variant's training")
    ap.add_argument("--reuse", action="store_true", help="keep the lake's finished data layers (no fresh start)")
    args = ap.parse_args()
    quiet_env()
    if args.reuse:
        lake = os.path.abspath(args.lake)
        os.environ.update({"INTERESTFLOW_HOME": lake, "INTERESTFLOW_LAKE": lake})
    else:
        lake = str(fresh_home(args.lake))
    from components import pipeline
    from components.config import TrainConfig

    ds = pipeline.data_path(str(ROOT / "specs" / "amazon_beauty.yaml"), lake, 1, 0)
    figures = {}
    for spec in args.variant or (OBJECTIVES if args.family == "bert" else ["defaults={}"]):
        name, _, settings = spec.partition("=")
        cfg = TrainConfig(
            max_epochs=args.max_epochs,
            patience=args.patience,
            num_threads=args.threads,
            precision=args.precision,
            model=json.loads(settings or "{}"),
        )
        r = pipeline.train(ds, args.family, "fold", cfg, lake, fold=0)
        m = r.metrics
        print(f"\n{name}: " + " ".join(f"{h['val_ndcg10']:.4f}" for h in r.history))
        print(
            f"{name}: best epoch {r.best_epoch}, validation NDCG@10 {m['ndcg10']:.4f}, "
            f"cold-start NDCG@10 {m['cold_ndcg10']:.4f} ({m['cold_n']} targets)",
            flush=True,
        )
        figures.update(
            {
                f"{name}_val_ndcg10": round(m["ndcg10"], 4),
                f"{name}_val_cold_ndcg10": round(m["cold_ndcg10"], 4),
                f"{name}_best_epoch": r.best_epoch,
                f"{name}_epochs_run": r.epochs_run,
                f"{name}_train_s": round(r.train_s, 1),
            }
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
