"""Training processes forked from an interpreter that has torch, Lightning and MLflow imported.

Every training is its own process (components/training.py: isolated memory, a kill that
reaches it, a retry from its checkpoint). Started as ``python -m components.training``,
one spends 7-10 s importing torch, Lightning and what they import before its first batch:
more than a small training takes. Here a server process, started at the first launch,
imports them once and forks each later training from itself:

- still a new process per training, in its own session (process group, so a kill of the
  group ends it), with the launch's environment, working directory and arguments, and its
  stdout/stderr on the launcher's pipes; the server reports its exit status; ``ps`` shows it
  as the ``python -m`` command it stands for (setproctitle), though ``/proc/<pid>/environ``
  is the server's;
- our own modules are imported fresh in the child, after its environment is set, so
  settings read at import (``INTERESTFLOW_*``) are the launch's;
- what native libraries read as they load (OpenMP, MKL, CUDA, the loader) is fixed in a
  server: launches with other such variables get a server of their own (up to
  :data:`MAX_SERVERS`, then a plain interpreter); a launch that asks for it (``fork=False``:
  DDP re-executes ``python -m``) and every launch with ``INTERESTFLOW_PRELOAD=0`` get a plain
  interpreter.

Written by hand: no library starts a ``python -m`` entry point from a preloaded interpreter
with its own pipes, session and environment. The standard library's forkserver comes
closest but re-imports the launcher's ``__main__`` in every child (the CLI, with Prefect:
seconds, before the child's environment is set).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading

import setproctitle

# MLflow and its SQL store too: a training logs its curve, and its first log would otherwise
# spend 2.4 s importing them (0.06 s preloaded; bench/RESULTS.md, 2026-12-07 afternoon).
PRELOAD = [
    "torch",
    "lightning",
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
]
PRELOAD_ENV = "INTERESTFLOW_PRELOAD"
# Read by native libraries (or Python itself) as they load, so fixed in the server once started.
# (Not KMP_*, HF_*, TORCH*: libraries set those in os.environ as they import, after any server start.)
AT_LOAD = (
    *("OMP_", "GOMP_", "MKL_", "OPENBLAS_", "MALLOC_"),
    *("CUDA_VISIBLE_DEVICES", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHASHSEED"),
)


def _at_load(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(AT_LOAD)}


class _Server:
    """The parent's handle on a preload server: a process started with ``env`` (whose
    load-time variables it keeps), and the control socket that hands it launches (it ends
    when that closes)."""

    def __init__(self, env: dict[str, str]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from components.preload import serve; serve({theirs.fileno()})"],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal is not for it
        )
        theirs.close()
        self.control = ours
        self.lock = threading.Lock()

    def launch(self, request: dict, out_w: int, err_w: int) -> socket.socket:
        ours, theirs = socket.socketpair()
        try:
            with self.lock:
                socket.send_fds(self.control, [b"L"], [theirs.fileno(), out_w, err_w])
        finally:
            theirs.close()
        ours.sendall(json.dumps(request).encode())
        ours.shutdown(socket.SHUT_WR)
        return ours


_lock = threading.Lock()
_servers: dict[tuple, _Server] = {}  # by the load-time variables they were started with
MAX_SERVERS = 4  # a launch with yet other load-time variables starts a plain interpreter


def _server_for(env: dict[str, str]) -> _Server | None:
    """A running server started with ``env``'s load-time variables (started on first use)."""
    if env.get(PRELOAD_ENV, "1") == "0" or not hasattr(os, "fork"):
        return None
    key = tuple(sorted(_at_load(env).items()))
    with _lock:
        server = _servers.get(key)
        if server is None or server.proc.poll() is not None:
            if server is None and len(_servers) >= MAX_SERVERS:
                return None
            server = _servers[key] = _Server(env)
        return server


class Forked:
    """What ``training.launch`` uses of a ``subprocess.Popen``, for a forked training:
    ``pid`` (also its process group), ``stdout`` / ``stderr`` (binary pipes), ``wait`` and
    ``returncode`` (negative: the signal that ended it)."""

    def __init__(self, server: _Server, module: str, args: list[str], env: dict[str, str]):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = {"module": module, "args": args, "env": env, "cwd": os.getcwd()}
        try:
            self._conn = server.launch(request, out_w, err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:  # the child has its own copies: EOF comes when it (and what it started) ends
            os.close(out_w)
            os.close(err_w)
        self.args = [module, *args]
        self.stdout = open(out_r, "rb")  # noqa: SIM115 - the launcher's reader threads own them
        self.stderr = open(err_r, "rb")  # noqa: SIM115
        self._buf = b""
        self.returncode: int | None = None
        line = self._line(None)  # "pid N" from the child once it leads its own session
        if not line.startswith("pid "):
            raise RuntimeError(f"the preload server could not start the training ({line.strip() or 'it ended'})")
        self.pid = int(line.split()[1])

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                line = self._line(timeout)
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            if not line.startswith("exit "):
                raise RuntimeError(f"the preload server ended while training {self.pid} ran")
            self.returncode = int(line.split()[1])
            self._conn.close()
        return self.returncode

    def _line(self, timeout: float | None) -> str:
        """The next line from the server or the child ("" if it closed); a timeout keeps what came."""
        self._conn.settimeout(timeout)
        while b"\n" not in self._buf:
            chunk = self._conn.recv(4096)
            if not chunk:
                return ""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()


def start(module: str, args: list[str], env: dict[str, str], fork: bool = True) -> Forked | subprocess.Popen:
    """``python -m module *args`` in its own session with ``env``, stdout and stderr piped:
    with ``fork``, forked from the preload server where it can be, else a plain interpreter.
    ``module`` has a ``main(argv)``."""
    server = _server_for(env) if fork else None
    if server is not None:
        return Forked(server, module, args, env)
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


# -- the server ----------------------------------------------------------------------------------
def serve(control_fd: int) -> None:
    """The server's loop, one thread (it forks): a launch on the control socket forks a
    child; a child's end is reported on its launch's connection; the control socket's end
    (the parent is gone) ends the server, not the trainings."""
    polars_exit = _import_polars()
    for name in PRELOAD:
        importlib.import_module(name)
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the pipe
    running: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is control:
                msg, fds, _, _ = socket.recv_fds(control, 16, 3)
                if not msg:
                    return
                conn = socket.socket(fileno=fds[0])
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    control.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    for other in running.values():
                        other.close()
                    for handler in polars_exit:
                        atexit.unregister(handler)
                    _child(conn, fds[1], fds[2])
                    return  # the child leaves the loop: the interpreter exits as after `python -m`
                os.close(fds[1])
                os.close(fds[2])
                running[pid] = conn
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                while running:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    conn = running.pop(pid, None)
                    if conn is not None:
                        with contextlib.suppress(OSError):  # the launcher may be gone
                            conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                        conn.close()


def _import_polars() -> list:
    """Import Polars (MLflow imports it too) and return the exit handlers it registers. Its
    handler waits for Polars' spill-file cleaner thread, which a forked child does not have
    (fork copies one thread): a child unregisters it, or its exit would wait forever."""
    found = []
    register = atexit.register

    def capture(handler, *args, **kwargs):
        found.append(handler)
        return register(handler, *args, **kwargs)

    atexit.register = capture
    try:
        importlib.import_module("polars")
    finally:
        atexit.register = register
    return found


def _child(conn: socket.socket, out: int, err: int) -> None:
    """In the forked process: become what ``python -m module *args`` would be and run it.
    Its end (an exception's traceback and exit 1 included) is the interpreter's, as there."""
    os.setsid()  # its own process group, as start_new_session gives a Popen
    request = json.loads(b"".join(iter(lambda: conn.recv(1 << 16), b"")))
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # What `ps` and `pgrep -f` show: the command it stands for, not the server's.
    setproctitle.setproctitle(" ".join([sys.executable, "-m", request["module"], *request["args"]]))
    for fd, to in ((out, 1), (err, 2)):
        os.dup2(fd, to)
        os.close(fd)
    sys.stdout = open(1, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    conn.sendall(f"pid {os.getpid()}\n".encode())
    conn.close()
    importlib.import_module(request["module"]).main(request["args"])
    # Then leave as multiprocessing's children do: its threads joined, its exit handlers run,
    # its output flushed, and os._exit, for an interpreter's teardown with torch loaded takes
    # 1.5-2 s and has nothing left to do. (An exception or sys.exit leaves the interpreter's way.)
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter's exit would run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
