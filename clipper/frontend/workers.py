"""Several query frontend processes on one HTTP port, for machines with more cores than one event loop uses.

Each worker is a whole query frontend (event loop, engine, cache, metrics) in its own process. The
kernel spreads new connections over the workers (``SO_REUSEPORT`` on the HTTP port); worker ``i``
takes model containers on RPC port ``rpc_port + i``, so a container connects to every worker
(``CLIPPER_PORT=7000,7001``). The supervisor forwards SIGTERM/SIGINT and, if one worker dies, stops
the others and exits with an error, leaving the restart to whatever runs the frontend.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

log = logging.getLogger("clipper.query")


def worker_rpc_ports(rpc_port: int, workers: int) -> list[int]:
    """The RPC port of each worker."""
    return [rpc_port + i for i in range(workers)]


def _die_with_parent() -> None:
    """In a worker, before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_workers(argv: Sequence[str], workers: int, rpc_port: int) -> int:
    """Run `workers` query frontends with the command-line `argv`; return the exit status."""
    children = [
        subprocess.Popen([sys.executable, "-m", "clipper.frontend.query", *argv,
                          "--workers", "1", "--reuse-port", "--rpc-port", str(port)],
                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        for port in worker_rpc_ports(rpc_port, workers)
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("query frontend workers started", extra={"workers": workers, "pids": [c.pid for c in children]})
    status = 0
    while any(c.poll() is None for c in children):
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        child = next((c for c in children if c.pid == pid), None)
        if child is None:
            continue
        child.returncode = os.waitstatus_to_exitcode(code)
        if not stopping:
            log.error("a query frontend worker exited; stopping the others",
                      extra={"pid": pid, "exit_code": child.returncode})
            status = 1
            stop()
    return status
