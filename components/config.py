"""Configuration shared by the stages: where things live and how training runs.

Override order: dataclass default -> flow parameter -> deployment parameters in
prefect.yaml. Locations come from the environment, never from code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from components.tracking import home  # the project state folder: INTERESTFLOW_HOME (MLflow, lake)

# The evaluation protocol (DESIGN.md §5), logged with every run.
TASK_RUNNERS = ("threads", "dask")
"""Where a flow's submitted tasks run (flows/nightly.py: task_runner)."""
RUNNER_ENV = "INTERESTFLOW_TASK_RUNNER"  # which of them, read when flows.nightly is imported (default threads)

MIN_EVENTS_FOR_TARGETS = 3
"""Users with fewer events have no validation or test target and only ever train."""
PROTOCOL_VERSION = 2
"""2: target-type targets and the exclusion policy (an excluded target is a miss); 1: the
target kept its score when the user had the item before. Part of every training's key."""
PROTOCOL = {
    "version": PROTOCOL_VERSION,
    "split": "leave-one-out by time per user over the target behaviour's events (last=test, second-to-last=validation)",
    "ranking": "full ranking over all catalogue items, what the exclusion policy names left out "
    "(an excluded target is a miss)",
    "ties": "equal scores ranked by item index (= sorted item id)",
    "metrics": "HR@K, NDCG@K for K in 5,10,20; MRR (full); coverage@10",
    "cv": "users in K folds; fold k holds out its users' validation targets",
}


def default_lake() -> str:
    return os.environ.get("INTERESTFLOW_LAKE") or str(home() / "lake")


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 30
    """Epoch budget for each cross-validation fold (early stopping may end sooner)."""
    patience: int = 5
    """Early stopping: epochs without a better validation NDCG@10."""
    batch_size: int = 512
    """Users (or sequences) per training batch."""
    lr: float | None = None
    """Learning rate (AdamW); None: the family's own default (its config's ``lr``)."""
    weight_decay: float | None = None
    """Decoupled weight decay (AdamW); None: the family's own default."""
    seed: int = 0
    """Seed for weights, shuffling and folds; logged with every run."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    devices: int = 1
    """Devices per node; more than one means DDP."""
    num_nodes: int = 1
    """Nodes; more than one means multi-node DDP."""
    strategy: str = "auto"
    """Lightning strategy: auto (ddp when devices*num_nodes > 1), ddp, ddp_spawn."""
    precision: str = "auto"
    """auto: bf16-mixed on GPU, 32-true on CPU."""
    num_threads: int = 0
    """torch CPU threads per process (0: all cores)."""
    model: dict = field(default_factory=dict)
    """Family-specific overrides of its config dataclass (e.g. {"dim": 128})."""

    def __post_init__(self):
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"TrainConfig: lr must be > 0, got {self.lr}")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("TrainConfig: max_epochs, patience and batch_size must be >= 1")
        if self.devices < 1 or self.num_nodes < 1:
            raise ValueError("TrainConfig: devices and num_nodes must be >= 1")
