"""Trainings forked from the preload server (components/preload.py): each is still a process
of its own, with the launch's environment, working directory, arguments, session, pipes and
exit status, as ``python -m`` would give it. A probe module in the test's folder stands in
for components.training (the child imports it from its working directory)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from components import preload

PROBE = """
import os, sys, time

def main(argv):
    print("env", os.environ.get("PROBE_VALUE"), flush=True)
    print("cwd", os.getcwd(), flush=True)
    print("argv", *sys.argv, flush=True)
    print("session", os.getsid(0) == os.getpid() == os.getpgid(0), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if argv[0] == "sleep":
        time.sleep(60)
    if argv[0] == "raise":
        raise ValueError("the probe failed")
    if argv[0] == "polars":
        import polars as pl
        print("sorted", pl.DataFrame({"a": [3, 1, 2]}).sort("a")["a"].to_list(), flush=True)
        return
    if argv[0] != "0":
        sys.exit(int(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    (tmp_path / "probe_mod.py").write_text(PROBE)
    monkeypatch.chdir(tmp_path)

    def start(*args, **env):
        return preload.start("probe_mod", list(args), {**os.environ, **env})

    return start


def _run(proc) -> tuple[str, str, int]:
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    return out, err, proc.wait(timeout=60)


def test_a_forked_process_is_what_python_m_would_start(probe, tmp_path):
    proc = probe("0", "--flag", PROBE_VALUE="launch-1")
    assert isinstance(proc, preload.Forked)
    out, err, code = _run(proc)
    assert code == 0 and err == "to stderr\n"
    assert out.splitlines() == ["env launch-1", f"cwd {tmp_path}", "argv probe_mod 0 --flag", "session True"]
    assert probe("0", PROBE_VALUE="launch-2").stdout.read().decode().startswith("env launch-2")  # its own env


def test_a_forked_process_uses_polars_and_exits(probe):
    # The server has Polars imported (MLflow imports it); its exit handler waits for a thread
    # that a forked child does not have, and hung every child's exit until the child dropped it.
    out, _, code = _run(probe("polars"))
    assert code == 0 and out.splitlines()[-1] == "sorted [1, 2, 3]"


def test_exit_codes_tracebacks_kills_and_timeouts_come_back_as_from_popen(probe):
    assert _run(probe("3"))[2] == 3
    _, err, code = _run(probe("raise"))
    assert code == 1 and "ValueError: the probe failed" in err and "Traceback" in err
    sleeper = probe("sleep")
    assert sleeper.stdout.readline()  # it runs
    title = open(f"/proc/{sleeper.pid}/cmdline", "rb").read().rstrip(b"\0").replace(b"\0", b" ")  # noqa: SIM115
    assert title.decode().endswith(" -m probe_mod sleep")  # what ps shows: the command, not the server's
    with pytest.raises(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.2)
    os.killpg(sleeper.pid, signal.SIGKILL)  # the group: what training.launch and stoppable() kill
    t0 = time.time()
    assert sleeper.wait(timeout=30) == -signal.SIGKILL and time.time() - t0 < 10


def test_load_time_settings_get_a_server_of_their_own_and_preload_0_a_plain_interpreter(probe):
    threads = str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1)  # read by OpenMP when torch loads
    first = probe("0", PROBE_VALUE="one")
    other = probe("0", OMP_NUM_THREADS=threads, PROBE_VALUE="two")
    assert isinstance(first, preload.Forked) and isinstance(other, preload.Forked)
    assert _run(other)[0].startswith("env two") and _run(first)[0].startswith("env one")
    servers = {key: s.proc.pid for key, s in preload._servers.items()}
    assert len(set(servers.values())) == len(servers) >= 2
    assert any(("OMP_NUM_THREADS", threads) in key for key in servers)
    assert isinstance(probe("0", **{preload.PRELOAD_ENV: "0"}), subprocess.Popen)
    assert isinstance(preload.start("probe_mod", ["0"], dict(os.environ), fork=False), subprocess.Popen)
    out, _, code = _run(probe("0", **{preload.PRELOAD_ENV: "0", "PROBE_VALUE": "plain"}))
    assert code == 0 and out.startswith("env plain")  # the same module, the same behaviour
