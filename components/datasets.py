"""Datasets (04_datasets): leave-one-out targets and user folds, and the views training reads.

Protocol (DESIGN.md §3, §5): per user, time-ordered; the last event of the target types
(components/behaviour.py; any event by default) is the test target, the second-to-last
the validation target. A target's history is every event strictly before it, so views
after a user's last purchase never reach the test history. Users without two target
events, or whose validation target has no earlier event, have no targets and only ever
train (with one event type: users with fewer than 3 events, as before). Users are split
into K folds; fold k holds out its users' validation targets and trains on the events
before them (the other users on the events before their test target). The final model
trains on every event before each user's test target (all events of users without one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from components import lake, storage
from components.behaviour import Behaviour
from components.config import MIN_EVENTS_FOR_TARGETS
from components.lake import DatasetLayer, FeatureLayer
from components.text import item_texts

DATASETS_LAYOUT = 2
"""2: splits carry the targets' positions (target behaviour); 1: the last two events."""


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
        # Arrow's flat values and offsets of the two list columns it needs (x50: 0.3 s; as a
        # pandas frame, an array object per user and column: 2.2 s)
        users = storage.read_table(lake.file(features.uri, "users.parquet"), columns=["user_idx", "items", "types"])
        types, items = (users.column(c).combine_chunks() for c in ("types", "items"))
        offsets = items.offsets.to_numpy().astype(np.int64)
        behaviour = features.validated.raw.behaviour
        val, test = behaviour.target_positions(types.values.to_numpy(), offsets, MIN_EVENTS_FOR_TARGETS - 2)
        eligible = test >= 0
        items = items.values.to_numpy()

        def item_at(pos: np.ndarray) -> np.ndarray:  # each user's item at ``pos`` (-1 where pos is)
            if not len(items):
                return np.full(len(pos), -1, dtype=np.int64)
            return np.where(pos >= 0, items[np.maximum(offsets[:-1] + pos, 0)], -1)

        splits = pd.DataFrame(
            {
                "user_idx": users.column("user_idx").to_numpy(),
                "fold": assign_folds(users.num_rows, eligible, folds, seed),
                "val_pos": val,
                "test_pos": test,
                "val_item": item_at(val),
                "test_item": item_at(test),
            }
        )
        storage.write_parquet(splits, lake.file(uri, "splits.parquet"))
        return {"folds": folds, "seed": seed, "n_eval_users": int(eligible.sum())}

    uri = lake.dataset_uri(root, features, folds, seed)
    info, _ = lake.build(uri, compute, layout=DATASETS_LAYOUT)
    return DatasetLayer(uri=uri, features=features, folds=folds, seed=seed, n_eval_users=info["n_eval_users"])


def load_item_text(text_uri: str) -> np.ndarray:
    """The item-text layer's vectors: (n_items, 384) float32 in item-index order."""
    df = storage.read_parquet(lake.file(text_uri, "item_text.parquet")).sort_values("item_idx")
    return np.stack(df["embedding"].to_numpy()).astype(np.float32)


def load_reviews(review_uri: str, lengths: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The review layer's vectors and, per user (sequence ``lengths``), each event's row in them."""
    df = storage.read_parquet(lake.file(review_uri, "reviews.parquet"), columns=["user_idx", "pos", "embedding"])
    rows = [np.full(n, -1, dtype=np.int64) for n in lengths]
    for r, (u, p) in enumerate(zip(df["user_idx"].to_numpy(), df["pos"].to_numpy(), strict=True)):
        rows[u][p] = r
    vectors = np.stack(df["embedding"].to_numpy()).astype(np.float32) if len(df) else np.zeros((0, 384), np.float32)
    return vectors, rows


@dataclass
class Dataset:
    """Everything a training or an evaluation needs, in memory."""

    n_items: int
    n_users: int
    seqs: list[np.ndarray]  # per user, time-ordered item indices
    fold: np.ndarray  # (n_users,), -1 = no targets
    item_ids: np.ndarray
    user_ids: np.ndarray
    types: list[np.ndarray] | None = None  # per user, the events' type codes (components/behaviour.py)
    val_pos: np.ndarray | None = None  # (n_users,) position of the validation target in seqs[u], -1 = none
    test_pos: np.ndarray | None = None  # (n_users,) position of the test target, -1 = none
    behaviour: Behaviour = Behaviour()
    item_text: np.ndarray | None = None  # (n_items, d) text embeddings, when the text layer exists
    item_strings: list[str] | None = None  # each item's embedded text
    review_uri: str | None = None  # the review-text layer, when the log has review text
    review_vectors: np.ndarray | None = None  # (R, d) MiniLM vectors of the reviews (load_reviews)
    review_rows: list[np.ndarray] | None = None  # per user, aligned with seqs: row in review_vectors, -1 = none
    ts: list[np.ndarray] | None = None  # per user, aligned with seqs: the events' unix seconds
    item_titles: np.ndarray | None = None  # (n_items,) each item's title ("" where none)

    @classmethod
    def load(cls, dataset: DatasetLayer) -> Dataset:
        users = storage.read_parquet(lake.file(dataset.features.uri, "users.parquet"))
        items = storage.read_parquet(lake.file(dataset.features.uri, "items.parquet"))
        splits = storage.read_parquet(lake.file(dataset.uri, "splits.parquet"))
        text = {}
        if dataset.features.text_uri:
            text = {"item_text": load_item_text(dataset.features.text_uri), "item_strings": item_texts(items)}
        if dataset.features.review_uri:  # read on first use (item_text_with_reviews): most trainings never do
            text["review_uri"] = dataset.features.review_uri
        return cls(
            n_items=len(items),
            n_users=len(users),
            seqs=[np.asarray(s, dtype=np.int64) for s in users["items"]],
            fold=splits["fold"].to_numpy(),
            item_ids=items["item_id"].astype(str).to_numpy(),
            user_ids=users["user_id"].astype(str).to_numpy(),
            types=[np.asarray(t, dtype=np.int64) for t in users["types"]],
            val_pos=splits["val_pos"].to_numpy(),
            test_pos=splits["test_pos"].to_numpy(),
            behaviour=dataset.behaviour,
            ts=[np.asarray(t, dtype=np.int64) for t in users["ts"]],
            item_titles=items["title"].astype("string").fillna("").astype(str).to_numpy(),
            **text,
        )

    def __post_init__(self):
        # A dataset built by hand (tests, tools) without types: one type, targets the last two events.
        if self.types is None:
            self.types = [np.zeros(len(s), dtype=np.int64) for s in self.seqs]
        if self.test_pos is None:
            has = self.fold >= 0
            self.test_pos = np.array([len(s) - 1 if h else -1 for s, h in zip(self.seqs, has, strict=True)])
            self.val_pos = np.where(has, self.test_pos - 1, -1)

    def load_reviews(self) -> None:
        """Read the review layer's vectors and each event's row in them."""
        self.review_vectors, self.review_rows = load_reviews(self.review_uri, [len(s) for s in self.seqs])

    def item_text_with_reviews(self, view: View) -> np.ndarray:
        """(n_items, d): each item's text vector plus the mean vector of the reviews written
        about it in ``view``'s training events, L2-normalised (an item with no text string is
        its reviews alone). Leakage-safe by construction: only events inside the training
        sequences count, and never a validation or test target's event, in any stage (the
        final fit trains on validation targets, but their review text stays out)."""
        if self.review_vectors is None and self.review_uri:
            self.load_reviews()
        if self.item_text is None or self.review_vectors is None:
            raise ValueError("review text needs the item-text and review-text layers (a log with review text)")
        d = self.item_text.shape[1]
        total, count = np.zeros((self.n_items, d), np.float64), np.zeros(self.n_items)
        for u, seq in enumerate(view.train_seqs):
            rows = self.review_rows[u][: len(seq)].copy()
            for p in (self.val_pos[u], self.test_pos[u]):
                if 0 <= p < len(rows):
                    rows[p] = -1
            has = rows >= 0
            np.add.at(total, seq[has], self.review_vectors[rows[has]])
            np.add.at(count, seq[has], 1)
        reviews = total / np.maximum(count, 1)[:, None]
        reviews /= np.maximum(np.linalg.norm(reviews, axis=1, keepdims=True), 1e-12)
        has_text = np.array([bool(s) for s in (self.item_strings or [""] * self.n_items)])
        mixed = self.item_text * has_text[:, None] + reviews
        return (mixed / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def view(self, stage: str, fold: int | None = None) -> View:
        """The training sequences and the evaluation (history, target) pairs of a stage.

        ``fold``: train on all but fold ``fold``'s validation targets (and what follows them),
        evaluate on them. ``final``: train on the events before each test target, evaluate
        on the test targets. ``serve``: "evaluate" = score every user on their full history.
        A history is every event strictly before its target.
        """
        n = self.n_users
        test, val = self.test_pos, self.val_pos
        if stage == "fold":
            held = self.fold == fold
            cut = np.where(held, val, np.where(test >= 0, test, [len(s) for s in self.seqs]))
            users = np.flatnonzero(held)
            targets = np.array([self.seqs[u][val[u]] for u in users], dtype=np.int64)
            hist_cut = val[users]
        elif stage == "final":
            cut = np.where(test >= 0, test, [len(s) for s in self.seqs]) if n else np.zeros(0, dtype=np.int64)
            users = np.flatnonzero(test >= 0)
            targets = np.array([self.seqs[u][test[u]] for u in users], dtype=np.int64)
            hist_cut = test[users]
        elif stage == "serve":
            cut = np.array([len(s) for s in self.seqs], dtype=np.int64)
            users = np.arange(n)
            targets = np.full(len(users), -1, dtype=np.int64)
            hist_cut = cut
        else:
            raise ValueError(f"unknown stage {stage!r}: fold, final or serve")
        return View(
            train_seqs=[s[:c] for s, c in zip(self.seqs, cut, strict=True)],
            eval_users=users,
            eval_hist=[self.seqs[u][:c] for u, c in zip(users, hist_cut, strict=True)],
            eval_targets=targets,
            train_types=[t[:c] for t, c in zip(self.types, cut, strict=True)],
            eval_types=[self.types[u][:c] for u, c in zip(users, hist_cut, strict=True)],
            behaviour=self.behaviour,
        )


@dataclass
class View:
    train_seqs: list[np.ndarray]  # indexed by user
    eval_users: np.ndarray
    eval_hist: list[np.ndarray]
    eval_targets: np.ndarray
    train_types: list[np.ndarray] | None = None  # type codes aligned with train_seqs
    eval_types: list[np.ndarray] | None = None  # type codes aligned with eval_hist
    behaviour: Behaviour = Behaviour()

    def subset(self, keep: np.ndarray) -> View:
        """This view evaluated on the eval users at positions ``keep`` only (training unchanged)."""
        return replace(
            self,
            eval_users=self.eval_users[keep],
            eval_hist=[self.eval_hist[i] for i in keep],
            eval_targets=self.eval_targets[keep],
            eval_types=[self.eval_types[i] for i in keep],
        )

    def __post_init__(self):
        if self.train_types is None:
            self.train_types = [np.zeros(len(s), dtype=np.int64) for s in self.train_seqs]
        if self.eval_types is None:
            self.eval_types = [np.zeros(len(h), dtype=np.int64) for h in self.eval_hist]
