"""How long a training process takes to start: a plain ``python -m`` against a fork of the
preload server (components/preload.py). The child is a stand-in module that imports what
``components.training`` imports and prints one line; the time is from the launch to that
line, and to the child's exit.

    .venv/bin/python bench/preload.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))
from components import preload  # noqa: E402

PROBE = """
import components.training  # what a training imports before its first batch


def main(argv):
    print("ready", flush=True)
"""


def once(fork: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = preload.start("startup_probe", [], dict(os.environ), fork=fork)
    proc.stdout.readline()
    ready = time.perf_counter() - t0
    proc.stdout.read()
    proc.wait()
    return ready, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "startup_probe.py").write_text(PROBE + '\nif __name__ == "__main__":\n    main([])\n')
        os.chdir(tmp)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        t0 = time.perf_counter()
        once(True)  # starts the server: one plain start's worth of imports, once per launching process
        server_s = time.perf_counter() - t0
        out = {"server_start_s": round(server_s, 2)}
        for name, fork in (("plain", False), ("forked", True)):
            runs = [once(fork) for _ in range(args.runs)]
            ready, done = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(f"{name:7s} ready {ready:6.2f} s   exited {done:6.2f} s   (median of {args.runs})")
            out |= {f"{name}_ready_s": round(ready, 3), f"{name}_exit_s": round(done, 3)}
    print(f"server start (first launch) {server_s:.2f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
