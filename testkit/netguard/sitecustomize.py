"""Imported at start-up by any Python process with this folder on PYTHONPATH (bench/chaos.py
puts it there for the CLI runs it starts): an audit hook writes every non-loopback connection
attempt to the file named by INTERESTFLOW_NETGUARD_LOG. It only records; the connection goes
ahead (or fails) as it would without it."""

import ipaddress
import os
import sys

_LOG = os.environ.get("INTERESTFLOW_NETGUARD_LOG")


def _hook(event, args):
    if event != "socket.connect" or not _LOG:
        return
    address = args[1]
    if not isinstance(address, tuple):
        return  # a Unix socket
    host = str(address[0]).split("%")[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        with open(_LOG, "a") as f:
            f.write(f"{host}:{address[1]}\n")


if _LOG:
    sys.addaudithook(_hook)
