"""What every benchmark script shares: a fresh state folder, quiet telemetry, peak RSS."""

from __future__ import annotations

import os
import resource
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Full-ranking figures on this Beauty data (S3-Rec repository, Zhou et al. CIKM 2020).
PUBLISHED = {
    "PopRec": (0.0152, 0.0068),
    "GRU4Rec": (0.0283, 0.0137),
    "Caser": (0.0347, 0.0176),
    "BERT4Rec": (0.0347, 0.0170),
    "SASRec": (0.0605, 0.0318),
    "S3-Rec": (0.0647, 0.0327),
}


def quiet_env() -> None:
    """Telemetry off, and the pipeline's own lines (a training's epochs, stage facts) on stderr."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("interestflow")
    if not log.handlers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    os.environ.setdefault("INTERESTFLOW_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    for k, v in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "OMP_WAIT_POLICY": "PASSIVE",
    }.items():
        os.environ.setdefault(k, v)


def fresh_home(path: str | Path) -> Path:
    """Empty ``path`` and make it the lake, MLflow home and Prefect home of this process."""
    path = Path(path).resolve()
    shutil.rmtree(path, ignore_errors=True)
    (path / "prefect").mkdir(parents=True)
    os.environ.update(
        {"INTERESTFLOW_HOME": str(path), "INTERESTFLOW_LAKE": str(path), "PREFECT_HOME": str(path / "prefect")}
    )
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: drop the previous home's.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return path


def reuse_home(path: str | Path) -> Path:
    """``path`` as :func:`fresh_home` makes it, without emptying it: finished layers and
    trainings there (with their MLflow runs) are reused."""
    path = Path(path).resolve()
    (path / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {"INTERESTFLOW_HOME": str(path), "INTERESTFLOW_LAKE": str(path), "PREFECT_HOME": str(path / "prefect")}
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return path


def peak_rss_gib() -> float:
    """Peak RSS of this process or any finished child (the training processes), GiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 2**20
