"""The conformance model on Clipper's own Python container, ``containers/python/rpc.py`` (imported unmodified).

Run as ``python tests/conformance/clipper_rpc_driver.py`` with ``CLIPPER_RPC_PY`` pointing to rpc.py and
Clipper's environment (CLIPPER_MODEL_NAME, ...). As in tests/test_clipper_rpc_compat.py: rpc.py's top-level
``import clipper_admin.metrics`` gets an empty stub (metrics are off), and its ready file
``/model_is_ready.check`` is redirected to ``$CLIPPER_READY_FILE`` (or discarded).
"""

from __future__ import annotations

import builtins
import os
import sys
import types
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(os.environ["CLIPPER_RPC_PY"])))

_admin = types.ModuleType("clipper_admin")
_admin.__path__ = []  # type: ignore[attr-defined]
_metrics = types.ModuleType("clipper_admin.metrics")
_admin.metrics = _metrics  # type: ignore[attr-defined]
sys.modules["clipper_admin"] = _admin
sys.modules["clipper_admin.metrics"] = _metrics

import rpc  # type: ignore[import-not-found]  # noqa: E402  Clipper's containers/python/rpc.py

from tests.conformance.python_model import predict  # noqa: E402

_READY_FILE = os.environ.get("CLIPPER_READY_FILE") or os.devnull


def _open(path: Any, *args: Any, **kwargs: Any) -> Any:
    return builtins.open(_READY_FILE if path == "/model_is_ready.check" else path, *args, **kwargs)


rpc.open = _open  # a module global shadows the builtin for rpc.py's code only


class ConformanceModel(rpc.ModelContainerBase):  # type: ignore[misc]
    """rpc.py hands bytes inputs as int8 arrays and strings as bytes: converted to what `predict` expects."""

    def predict_ints(self, inputs: Any) -> list[str]:
        return predict(list(inputs))

    predict_floats = predict_doubles = predict_ints

    def predict_bytes(self, inputs: Any) -> list[str]:
        return predict([np.asarray(x).view(np.uint8) for x in inputs])

    def predict_strings(self, inputs: Any) -> list[str]:
        return predict([x.decode("utf-8") for x in inputs])


if __name__ == "__main__":
    os.environ.setdefault("CLIPPER_MODEL_PATH", os.getcwd())  # rpc.py requires it
    rpc.RPCService(collect_metrics=False).start(ConformanceModel())
