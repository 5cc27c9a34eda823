"""RecBole 1.2.1 side of bench/speed.py; runs in the peers venv (.venv-peers), prints one JSON line.

    .venv-peers/bin/python bench/peers/recbole_peer.py --model GRU4Rec --epochs 2 --data DIR

Uses the four workarounds of ../shared/PEERS.md. Leave-one-out, full ranking (RecBole's
``LS valid_and_test``, ``mode: full``), the same dimensions as ours.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

for alias, real in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_), ("bool8", np.bool_)):
    if not hasattr(np, alias):
        setattr(np, alias, real)
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import Caser, GRU4Rec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

torch.autograd.set_detect_anomaly(False)  # importing sequential_recommender switched it on
MODELS = {"GRU4Rec": GRU4Rec, "Caser": Caser}
DIMS = {
    "GRU4Rec": {"embedding_size": 64, "hidden_size": 128, "num_layers": 1, "dropout_prob": 0.3},
    "Caser": {"embedding_size": 64, "nh": 16, "nv": 4, "dropout_prob": 0.5, "reg_weight": 1e-4},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=list(MODELS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data", required=True, help="folder holding beauty/beauty.inter")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    max_len = 5 if args.model == "Caser" else 50
    config = Config(
        model=args.model,
        dataset="beauty",
        config_dict={
            "data_path": args.data,
            "checkpoint_dir": tempfile.mkdtemp(),
            "device": "cpu",
            "use_gpu": False,
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "MAX_ITEM_LIST_LENGTH": max_len,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "learning_rate": 1e-3,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "train_batch_size": 256,
            "eval_batch_size": 2048,
            "epochs": args.epochs,
            "show_progress": False,
            "seed": 0,
            "reproducibility": True,
            **DIMS[args.model],
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = MODELS[args.model](config, train.dataset).to("cpu")
    trainer = Trainer(config, model)
    times = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        trainer._train_epoch(train, epoch, show_progress=False)
        times.append(time.perf_counter() - t0)
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    print(
        json.dumps(
            {
                "model": args.model,
                "epoch_s": times,
                "samples": len(train.dataset),
                "test_ndcg10": float(result["ndcg@10"]),
                "test_hr10": float(result["hit@10"]),
                "epochs": args.epochs,
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
