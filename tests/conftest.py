"""Shared fixtures: isolated state folders and small slices of the shipped Beauty sample."""

from __future__ import annotations

import ipaddress
import os
import socket
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
        "TRANSFORMERS_OFFLINE": "1",
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


class NetworkBlocked(RuntimeError):
    pass


def _loopback_only(connect):
    def guarded(sock, address, *args):
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                ok = ipaddress.ip_address(host.split("%")[0]).is_loopback
            except ValueError:
                ok = host == "localhost"
            if not ok:
                raise NetworkBlocked(f"test tried to reach {address!r}: only loopback is allowed")
        return connect(sock, address, *args)

    return guarded


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """Nothing but loopback: a model-hub download or telemetry call fails the test that makes it."""
    real = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = _loopback_only(real[0])
    socket.socket.connect_ex = _loopback_only(real[1])
    yield
    socket.socket.connect, socket.socket.connect_ex = real


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
