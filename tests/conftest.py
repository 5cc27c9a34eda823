"""Shared fixtures: isolated state folders and small slices of the shipped Beauty sample
(testkit/slices.py, shared with the benchmarks)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from testkit.slices import sample_frames, write_slice  # noqa: F401 - the tests import them from here

ROOT = Path(__file__).resolve().parent.parent
# Prefect reads its settings when it is first imported (test modules import flows at
# collection): the ephemeral API server's start-up timeout must be set here, not in a
# fixture. 120 s, as flows/cli.py and the Makefile set it: two loaded cores need more than 20.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


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
        # One item-text cache for the session's lakes: the slices are nested slices of one
        # sample, so each title is embedded once per worker, not once per test (minutes).
        "INTERESTFLOW_TEXT_CACHE": str(home / "text_cache"),
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


@pytest.fixture
def small_slice(tmp_path):
    """(events, items) of 200 users from the shipped sample."""
    return sample_frames(200)


# The files that take longest (minutes: real flows, servers, DDP), longest first. `make test`
# runs the files on two workers (pytest-xdist, --dist loadfile), handing each free worker the
# next file in collection order; starting with the longest keeps one worker from finishing
# minutes before the other (longest-processing-time-first scheduling). Measured with
# `pytest --durations=0` on 2026-12-01; a file not named here keeps its place after them.
LONGEST_FIRST = (
    "test_flow.py",
    "test_prefect_server.py",  # with the browser test, 2026-12-02: about 200 s
    "test_distributed.py",
    "test_reliability.py",
    "test_storage.py",
    "test_operators.py",
    "test_tuning.py",  # 2026-12-07: 64-79 s
    "test_pipeline.py",
    "test_reviews.py",
    "test_profiles.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept
