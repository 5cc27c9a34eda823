"""Shared fixtures: isolated state folders and small slices of the shipped Beauty sample."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session", autouse=True)
def isolated_state(tmp_path_factory):
    """Every test session gets its own MLflow DB, Prefect home and lake: nothing in ./var is touched."""
    home = tmp_path_factory.mktemp("home")
    env = {
        "INTERESTFLOW_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "MPLCONFIGDIR": str(home / "mpl"),
    }
    (home / "prefect").mkdir()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def sample_frames(n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first ``n_users`` users (by id) of the shipped sample with their events and items."""
    ev = pd.read_csv(SAMPLE / "events.csv.gz", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(SAMPLE / "items.csv.gz", dtype={"item_id": str})
    users = sorted(ev["user_id"].unique())[:n_users]
    ev = ev[ev["user_id"].isin(users)].reset_index(drop=True)
    return ev, items[items["item_id"].isin(set(ev["item_id"]))].reset_index(drop=True)


SPEC = """name: {name}
events:
  uri: {events}
  columns: {{user_id: user_id, item_id: item_id, ts: timestamp}}
  ts_unit: s
  event_type: review
  order_by: seq_pos
items:
  uri: {items}
  columns: {{item_id: item_id, title: title, categories: categories, brand: brand, price: price}}
"""


def write_slice(folder: Path, events: pd.DataFrame, items: pd.DataFrame, name: str = "slice") -> Path:
    """Write a slice as CSV files plus a dataset spec; returns the spec path."""
    folder.mkdir(parents=True, exist_ok=True)
    events.to_csv(folder / "events.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(name=name, events="events.csv", items="items.csv"))
    return spec


@pytest.fixture
def small_slice(tmp_path):
    """(events, items) of 200 users from the shipped sample."""
    return sample_frames(200)
