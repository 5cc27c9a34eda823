"""Imported at start-up by any Python process with this folder on PYTHONPATH (bench/chaos.py
puts it there for the CLI runs it starts): an audit hook writes every non-loopback connection
attempt to the file named by INTERESTFLOW_NETGUARD_LOG. It only records; the connection goes
ahead (or fails) as it would without it."""

import ipaddress
import os
import sys

_LOG = os.environ.get("INTERESTFLOW_NETGUARD_LOG")


def non_loopback(event, args):
    """For an audit event: the ``host:port`` of a non-loopback connection attempt, else None
    (bench/chaos.py watches its own process with this too)."""
    if event != "socket.connect" or not isinstance(args[1], tuple):
        return None  # not a connection, or a Unix socket
    host = str(args[1][0]).split("%")[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return None if loopback else f"{host}:{args[1][1]}"


def _hook(event, args):
    seen = non_loopback(event, args)
    if seen and _LOG:
        with open(_LOG, "a") as f:
            f.write(seen + "\n")


if _LOG:
    sys.addaudithook(_hook)
