"""Clipper's own Python container, ``containers/python/rpc.py`` (unmodified, from $CLIPPER_RPC_PY).

No Clipper code lives in this repository: skipped unless CLIPPER_RPC_PY names rpc.py (see
tests/test_clipper_rpc_compat.py for how to get it). rpc.py also imports pyzmq, numpy, PyYAML and
prometheus_client.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from . import Implementation

DRIVER = Path(__file__).with_name("clipper_rpc_driver.py")


def available() -> str | None:
    """None when CLIPPER_RPC_PY names a file and rpc.py's imports are installed, else why not."""
    rpc_py = os.environ.get("CLIPPER_RPC_PY")
    if not rpc_py:
        return "set CLIPPER_RPC_PY to Clipper's containers/python/rpc.py to run"
    if not Path(rpc_py).is_file():
        return f"CLIPPER_RPC_PY={rpc_py} is not a file"
    missing = [m for m in ("zmq", "numpy", "yaml", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        return f"Clipper's rpc.py imports {', '.join(missing)} (pip install pyzmq numpy pyyaml prometheus_client)"
    return None


def command(input_type: str) -> list[str]:
    """The driver script, which imports rpc.py (CLIPPER_RPC_PY is passed on in the environment)."""
    return [sys.executable, str(DRIVER)]


_DIES = ("rpc.py has no error path: the model's exception propagates out of Server.run and the container exits, "
         "so the request gets the SLO default, not 'Model failed to predict' (the error marker is this project's "
         "extension of RPC v3)")

IMPLEMENTATION = Implementation(
    name="clipper_rpc",
    command=command,
    available=available,
    deviations={
        **{f"{t}-poison": _DIES for t in ("integers", "floats", "doubles", "bytes", "strings")},
        "heartbeat": "rpc.py heartbeats only after a 5 s poll without messages (SOCKET_POLLING_TIMEOUT_MILLIS), "
                     "longer than the 2 s heartbeat timeout of the case, so an idle replica is dropped and "
                     "re-registered",
    },
)
