"""NVIDIA Triton (via PyTriton) serving a Python no-op model with the dynamic batcher.

Runs in the ``triton`` venv: ``python triton_noop.py --port P --grpc-port G --metrics-port M``.
KServe v2 over HTTP: ``POST /v2/models/noop/infer`` with one FP64 input ``input`` of shape [1, 4].

Workaround: the bundled Python backend stub links ``libpython3.11.so.1.0`` and finds the
system's (Debian's 3.11.2) first, which then runs with this interpreter's 3.11.7 standard
library and fails in ``multiprocessing.resource_tracker`` (``'_thread.RLock' object has no
attribute '_recursion_count'``). Putting this interpreter's LIBDIR first on LD_LIBRARY_PATH
makes the stub load the matching libpython.
"""

from __future__ import annotations

import argparse
import os
import sysconfig

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


@batch
def noop(input: np.ndarray) -> dict[str, np.ndarray]:  # noqa: A002 (the tensor's name)
    """A constant per input row, like clipper.model_runtime.models:noop."""
    return {"output": np.ones((input.shape[0], 1), dtype=np.float64)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--workspace", help="PyTriton's workspace folder (default: a new one under ~/.cache)")
    a = p.parse_args()
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    config = TritonConfig(
        http_address=a.host,
        http_port=a.port,
        grpc_address=a.host,
        grpc_port=a.grpc_port,
        metrics_address=a.host,
        metrics_port=a.metrics_port,
    )
    with Triton(config=config, workspace=a.workspace) as triton:
        triton.bind(
            model_name="noop",
            infer_func=noop,
            inputs=[Tensor(name="input", dtype=np.float64, shape=(4,))],
            outputs=[Tensor(name="output", dtype=np.float64, shape=(1,))],
            config=ModelConfig(
                max_batch_size=a.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=0),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
