"""A query frontend serving several batch policies of one model at once, each with its own containers.

Each :class:`Variant` is an app (its SLO) over a model of its own (its batch size, batch wait and
replica count), so a sweep starts the processes once and measures the variants one after another.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import HOST, Proc, log, model_replicas, read_metrics, wait_ready
from clipper.ports import free_port


@dataclass(frozen=True)
class Variant:
    """One serving configuration: batch size (-1: adaptive, AIMD), batch wait, SLO, replicas."""

    batch_size: int = -1
    batch_wait_us: int = 0
    slo_ms: float = 20.0
    replicas: int = 1

    @property
    def name(self) -> str:
        """Also the app's and the model's name."""
        b = "aimd" if self.batch_size == -1 else f"b{self.batch_size}"
        slo = f"{self.slo_ms:g}".replace(".", "p")
        return f"{b}_w{self.batch_wait_us}_slo{slo}_r{self.replicas}"

    @property
    def policy(self) -> str:
        """Human-readable batch policy."""
        b = "adaptive" if self.batch_size == -1 else f"fixed {self.batch_size}"
        return b + (f", wait {self.batch_wait_us} us" if self.batch_wait_us else "")


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8,32,a"`` -> ``[1, 8, 32, -1]`` (``a``, ``adaptive`` or ``-1``: AIMD)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            n = -1 if part in ("a", "adaptive", "aimd") else int(part)
            if n != -1 and n < 1:
                raise ValueError(f"batch size must be >= 1 or 'a' (adaptive): {part!r}")
            out.append(n)
    return out


def config(variants: list[Variant], input_type: str = "doubles") -> dict:
    """The frontend's ``--config`` JSON for ``variants``."""
    return {
        "apps": [
            {"name": v.name, "input_type": input_type, "latency_slo_micros": int(v.slo_ms * 1000),
             "default_output": "-1.0", "models": [v.name]}
            for v in variants
        ],
        "models": [
            {"name": v.name, "version": "1", "input_type": input_type, "batch_size": v.batch_size,
             "batch_wait_micros": v.batch_wait_us}
            for v in variants
        ],
    }


class Serving:
    """The running processes: ``frontend`` first, then the containers."""

    def __init__(self, port: int, procs: list[Proc]) -> None:
        self.port, self.procs = port, procs

    @property
    def frontend_pid(self) -> int:
        return self.procs[0].popen.pid

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def start(variants: list[Variant], predict: str, log_dir: Path, *, env: dict[str, str] | None = None,
          input_type: str = "doubles", ready_timeout: float = 90.0, max_queue: int | None = None,
          frontend_args: list[str] | None = None) -> Serving:
    """Start a query frontend for ``variants`` and ``replicas`` containers of ``predict`` for each.

    Returns once every app answers a non-default prediction and every replica is connected.
    ``frontend_args``: more options of the query frontend (e.g. ``["--max-body-bytes", "4194304"]``).
    """
    port, rpc_port = free_port(), free_port()
    while rpc_port == port:
        rpc_port = free_port()
    path = log_dir / "clipper_config.json"
    path.write_text(json.dumps(config(variants, input_type), indent=2))
    cmd = [sys.executable, "-m", "clipper.frontend.query", "--config", str(path), "--host", HOST,
           "--port", str(port), "--rpc-port", str(rpc_port)]
    if max_queue is not None:
        cmd += ["--max-queue", str(max_queue)]
    cmd += frontend_args or []
    procs = [Proc("query_frontend", cmd, log_dir)]
    serving = Serving(port, procs)
    try:
        for v in variants:
            for r in range(v.replicas):
                procs.append(Proc(
                    f"{v.name}_{r}", [sys.executable, "-m", "clipper.model_runtime", "--predict", predict], log_dir,
                    env={**(env or {}), "CLIPPER_MODEL_NAME": v.name, "CLIPPER_MODEL_VERSION": "1",
                         "CLIPPER_IP": HOST, "CLIPPER_PORT": str(rpc_port), "CLIPPER_INPUT_TYPE": input_type},
                ))
        log(f"started a query frontend on port {port} and {len(procs) - 1} container(s) of {predict}")
        deadline = time.monotonic() + ready_timeout
        for v in variants:
            wait_ready(port, v.name, procs, max(deadline - time.monotonic(), 1.0), input_type)
        while True:
            metrics = read_metrics(port)
            missing = [v.name for v in variants if model_replicas(metrics, v.name) < v.replicas]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas of {missing} did not all connect within {ready_timeout}s")
            time.sleep(0.2)
        log("all variants ready")
        return serving
    except BaseException:
        serving.stop()
        raise
