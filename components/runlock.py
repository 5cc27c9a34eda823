"""One run at a time on one home: the lock a nightly or train run holds from ingest to promotion.

Two runs started together on the same embedded home (the same lake and MLflow registry)
would both train, both register and both promote. The deployment's concurrency limit only
guards deployment runs; this lock guards every run, the CLI's and the benchmarks' too.

It is an OS file lock (``filelock``: ``flock`` on Unix) on ``<home>/run.lock``: the kernel
releases it when the holding process dies, however it dies, so a killed run never leaves
it behind. Beside it, ``run.lock.json`` says who holds it (pid, host, start, flow run),
for the message the second run prints. The second run waits up to
``INTERESTFLOW_LOCK_WAIT_S`` seconds (default 0: it refuses at once).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

WAIT_ENV = "INTERESTFLOW_LOCK_WAIT_S"


class RunLocked(RuntimeError):
    """Another run holds this home's lock."""


@contextlib.contextmanager
def hold(home: Path, what: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold ``home``'s run lock for the block, or raise :class:`RunLocked` after ``wait_s``."""
    home.mkdir(parents=True, exist_ok=True)
    path, holder = home / "run.lock", home / "run.lock.json"
    wait = float(os.environ.get(WAIT_ENV, "0")) if wait_s is None else wait_s
    # the kernel lock only (no soft-lock fallback, which a killed run would leave behind)
    lock = FileLock(path, is_singleton=False, fallback_to_soft=False, preserve_lock_file=True)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        try:
            who = json.loads(holder.read_text())
            by = f"{who['what']} (pid {who['pid']} on {who['host']}, started {who['started']})"
        except (OSError, ValueError, KeyError):
            by = "another run"
        raise RunLocked(
            f"{by} holds the run lock {path}: one run at a time on one home. Wait for it to finish "
            f"(or set {WAIT_ENV} to wait), or stop it; a stopped or killed run releases the lock"
        ) from None
    try:
        info = {
            "what": what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(),
        }
        holder.write_text(json.dumps(info))
        yield
    finally:
        lock.release()
