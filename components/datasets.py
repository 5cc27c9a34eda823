"""Datasets (04_datasets): leave-one-out targets and user folds, and the views training reads.

Protocol (DESIGN.md §5): per user, time-ordered; last event = test target, second to
last = validation target, the rest = training. Users with fewer than 3 events have no
targets and only ever train. Users are split into K folds; fold k holds out its users'
validation targets and trains on everything else. The final model trains on everything
but the test targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components import lake, storage
from components.config import MIN_EVENTS_FOR_TARGETS
from components.lake import DatasetLayer, FeatureLayer
from components.text import item_texts


def assign_folds(n_users: int, eligible: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold per user (-1: no targets). Eligible users are shuffled and dealt round-robin."""
    folds = np.full(n_users, -1, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    np.random.default_rng(seed).shuffle(idx)
    folds[idx] = np.arange(len(idx)) % k
    return folds


def build_datasets(features: FeatureLayer, root: str, folds: int = 3, seed: int = 0) -> DatasetLayer:
    """Write 04_datasets/<key>-k<folds>-s<seed>/splits.parquet; reused when complete."""

    def compute(uri: str) -> dict:
        users = storage.read_parquet(lake.file(features.uri, "users.parquet"))
        lengths = users["items"].map(len).to_numpy()
        eligible = lengths >= MIN_EVENTS_FOR_TARGETS
        splits = pd.DataFrame(
            {
                "user_idx": users["user_idx"],
                "fold": assign_folds(len(users), eligible, folds, seed),
                "val_item": [int(s[-2]) if e else -1 for s, e in zip(users["items"], eligible, strict=True)],
                "test_item": [int(s[-1]) if e else -1 for s, e in zip(users["items"], eligible, strict=True)],
            }
        )
        storage.write_parquet(splits, lake.file(uri, "splits.parquet"))
        return {"folds": folds, "seed": seed, "n_eval_users": int(eligible.sum())}

    uri = lake.dataset_uri(root, features, folds, seed)
    info, _ = lake.build(uri, compute)
    return DatasetLayer(uri=uri, features=features, folds=folds, seed=seed, n_eval_users=info["n_eval_users"])


def load_item_text(text_uri: str) -> np.ndarray:
    """The item-text layer's vectors: (n_items, 384) float32 in item-index order."""
    df = storage.read_parquet(lake.file(text_uri, "item_text.parquet")).sort_values("item_idx")
    return np.stack(df["embedding"].to_numpy()).astype(np.float32)


@dataclass
class Dataset:
    """Everything a training or an evaluation needs, in memory."""

    n_items: int
    n_users: int
    seqs: list[np.ndarray]  # per user, time-ordered item indices
    fold: np.ndarray  # (n_users,), -1 = no targets
    item_ids: np.ndarray
    user_ids: np.ndarray
    item_text: np.ndarray | None = None  # (n_items, d) text embeddings, when the text layer exists
    item_strings: list[str] | None = None  # each item's embedded text

    @classmethod
    def load(cls, dataset: DatasetLayer) -> Dataset:
        users = storage.read_parquet(lake.file(dataset.features.uri, "users.parquet"))
        items = storage.read_parquet(lake.file(dataset.features.uri, "items.parquet"))
        splits = storage.read_parquet(lake.file(dataset.uri, "splits.parquet"))
        text = {}
        if dataset.features.text_uri:
            text = {"item_text": load_item_text(dataset.features.text_uri), "item_strings": item_texts(items)}
        return cls(
            n_items=len(items),
            n_users=len(users),
            seqs=[np.asarray(s, dtype=np.int64) for s in users["items"]],
            fold=splits["fold"].to_numpy(),
            item_ids=items["item_id"].astype(str).to_numpy(),
            user_ids=users["user_id"].astype(str).to_numpy(),
            **text,
        )

    def view(self, stage: str, fold: int | None = None) -> View:
        """The training sequences and the evaluation (history, target) pairs of a stage.

        ``fold``: train on all but fold ``fold``'s validation targets, evaluate on them.
        ``final``: train on all but test targets, evaluate on test targets.
        ``serve``: train on nothing new, "evaluate" = score every user on full history.
        """
        has_targets = self.fold >= 0
        if stage == "fold":
            held = self.fold == fold
            train = [
                s[:-2] if h else (s[:-1] if t else s) for s, h, t in zip(self.seqs, held, has_targets, strict=True)
            ]
            users = np.flatnonzero(held)
            hist = [self.seqs[u][:-2] for u in users]
            targets = np.array([self.seqs[u][-2] for u in users], dtype=np.int64)
        elif stage == "final":
            train = [s[:-1] if t else s for s, t in zip(self.seqs, has_targets, strict=True)]
            users = np.flatnonzero(has_targets)
            hist = [self.seqs[u][:-1] for u in users]
            targets = np.array([self.seqs[u][-1] for u in users], dtype=np.int64)
        elif stage == "serve":
            train = list(self.seqs)
            users = np.arange(self.n_users)
            hist = list(self.seqs)
            targets = np.full(len(users), -1, dtype=np.int64)
        else:
            raise ValueError(f"unknown stage {stage!r}: fold, final or serve")
        return View(train_seqs=train, eval_users=users, eval_hist=hist, eval_targets=targets)


@dataclass
class View:
    train_seqs: list[np.ndarray]  # indexed by user
    eval_users: np.ndarray
    eval_hist: list[np.ndarray]
    eval_targets: np.ndarray
