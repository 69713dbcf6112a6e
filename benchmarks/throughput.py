"""Predict throughput and latency: the floor server vs. the full Clipper pipeline.

Pipeline: HTTP -> query frontend -> batch -> ZeroMQ RPC -> Python no-op container
-> response. Both are loaded by the same wrk run (warm-up, then measured run).
``--container-command`` runs any model container program (another language's no-op) in place of the
Python one.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report, wrkrun
from benchmarks.procs import (
    HOST,
    Proc,
    RssSampler,
    ThreadCpu,
    app_prediction_counts,
    log,
    model_batch_totals,
    read_metrics,
    wait_ready,
)
from clipper.ports import free_port


@dataclass
class Options:
    """Command-line options of ``python -m benchmarks throughput``."""

    connections: int = 64
    duration: int = 10
    threads: int = 1
    warmup: int = 3
    cache: bool = False
    pipeline: str = "clipper"  # "clipper", or "floor" to test the harness alone
    app: str = "bench"
    workers: int = 1
    ready_timeout: float = 60.0
    wrk_timeout: int = 2
    container_command: str | None = None  # a command line run as the model container instead of the Python no-op
    spin: bool = True  # False: the frontend's engine and the Python container never poll instead of sleeping


class Seeds:
    """Distinct seeds for predict.lua, so no two wrk runs share an input."""

    def __init__(self) -> None:
        self.next = (int(time.time()) % 100_000) * 100

    def __call__(self) -> int:
        self.next += 1
        return self.next


def clipper_config(app: str, slo_us: int = 100_000) -> dict:
    """Query frontend config: one app backed by the no-op model."""
    return {
        "apps": [
            {
                "name": app,
                "input_type": "doubles",
                "latency_slo_micros": slo_us,
                "default_output": "-1.0",
                "models": ["noop"],
            }
        ],
        "models": [
            {
                "name": "noop",
                "version": "1",
                "input_type": "doubles",
                "batch_size": -1,
                "batch_wait_micros": 0,
            }
        ],
    }


#: Turns a process's name and argv into the argv to run (e.g. under valgrind); None runs argv as it is.
Wrap = Callable[[str, list[str]], list[str]] | None


def _wrapped(wrap: Wrap, name: str, argv: list[str]) -> list[str]:
    return argv if wrap is None else wrap(name, argv)


def start_floor(log_dir: Path, name: str = "floor", wrap: Wrap = None) -> tuple[int, list[Proc]]:
    """Start the floor server; return its port and process."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.floor_server",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    return port, [Proc(name, _wrapped(wrap, name, cmd), log_dir)]


#: The default model container: our Python runtime with the no-op model.
NOOP_CONTAINER = [sys.executable, "-m", "clipper.model_runtime", "--predict", "clipper.model_runtime.models:noop"]


def start_clipper(app: str, log_dir: Path, workers: int = 1, container: list[str] | None = None, *,
                  spin: bool = True, wrap: Wrap = None, slo_us: int = 100_000) -> tuple[int, list[Proc]]:
    """Start query frontend (`workers` processes) + the model container (`container`, an argv run with Clipper's
    environment; default the Python no-op); return HTTP port and processes. `spin` False starts both with
    their low-load poll off (``--no-spin``, ``CLIPPER_SPIN=0``)."""
    http_port = free_port()
    rpc_port = free_port()
    while rpc_port <= http_port < rpc_port + workers:
        rpc_port = free_port()  # worker i takes containers on rpc_port + i (free, most likely)
    config = log_dir / "clipper_config.json"
    config.write_text(json.dumps(clipper_config(app, slo_us), indent=2))
    procs: list[Proc] = []
    procs.append(
        Proc(
            "query_frontend",
            _wrapped(wrap, "query_frontend", [
                sys.executable,
                "-m",
                "clipper.frontend.query",
                "--config",
                str(config),
                "--host",
                HOST,
                "--port",
                str(http_port),
                "--rpc-port",
                str(rpc_port),
                "--workers",
                str(workers),
                *([] if spin else ["--no-spin"]),
            ]),
            log_dir,
        )
    )
    procs.append(
        Proc(
            "noop_container",
            _wrapped(wrap, "noop_container", container or NOOP_CONTAINER),
            log_dir,
            env={
                "CLIPPER_MODEL_NAME": "noop",
                "CLIPPER_MODEL_VERSION": "1",
                "CLIPPER_IP": HOST,
                "CLIPPER_PORT": ",".join(str(rpc_port + i) for i in range(workers)),
                "CLIPPER_INPUT_TYPE": "doubles",
                "CLIPPER_SPIN": "1" if spin else "0",
            },
        )
    )
    return http_port, procs


def _counts(port: int, app: str) -> tuple[int, int] | None:
    """(predictions, defaults) from the server's /metrics, or None if unavailable."""
    try:
        return app_prediction_counts(read_metrics(port), app)
    except (OSError, http.client.HTTPException, ValueError, RuntimeError) as e:
        log(f"could not read /metrics: {e}")
        return None


def _batch_totals(port: int) -> tuple[int, int] | None:
    """(batches, inputs) sent to the pipeline's model (``noop``) so far; None for the floor server."""
    try:
        return model_batch_totals(port, "noop")
    except (OSError, http.client.HTTPException, ValueError, RuntimeError):
        return None


def measure(label: str, port: int, opts: Options, seeds: Seeds, pids: list[int]) -> dict:
    """Warm-up and measured wrk runs against a ready server (`pids`: its processes, the HTTP server first);
    return the figures."""
    pid = pids[0]
    url = f"http://{HOST}:{port}/{opts.app}/predict"
    mode = "cache" if opts.cache else "unique"
    kwargs = {
        "connections": opts.connections,
        "threads": opts.threads,
        "mode": mode,
        "timeout_s": opts.wrk_timeout,
    }
    if opts.warmup > 0:
        log(f"{label}: warm-up, running wrk {opts.warmup}s...")
        wrkrun.run(url, duration_s=opts.warmup, seed=seeds(), **kwargs)
    before = _counts(port, opts.app)
    batches_before = _batch_totals(port)
    log(
        f"{label}: running wrk {opts.duration}s ({opts.connections} connections, "
        f"{opts.threads} thread(s), {mode} inputs)..."
    )
    with RssSampler(pid, 1.0) as rss, ThreadCpu(pids) as cpu:
        result, raw = wrkrun.run(url, duration_s=opts.duration, seed=seeds(), **kwargs)
    after = _counts(port, opts.app)
    batches_after = _batch_totals(port)
    figures = result.to_dict()
    # the mean batch the frontend sent the model during the measured run (what adaptive batching settled on)
    figures["mean_batch_size"] = None
    if batches_before is not None and batches_after is not None and batches_after[0] > batches_before[0]:
        figures["mean_batch_size"] = (batches_after[1] - batches_before[1]) / (batches_after[0] - batches_before[0])
    figures["server_rss"] = rss.summary()
    figures["cpu_us_per_request"] = cpu.micros_per(result.requests)
    figures["wakeups_per_request"] = cpu.wakeups_per(result.requests)
    figures["wrk_output"] = raw
    if before is not None and after is not None:
        figures["predictions"] = after[0] - before[0]
        figures["defaults"] = after[1] - before[1]
    else:
        figures["predictions"] = figures["defaults"] = None
    log(
        f"{label}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms} ms, "
        f"p99 {result.p99_ms} ms, server RSS max {figures['server_rss']['max_mb']} MB"
    )
    return figures


StartFn = Callable[[Path], tuple[int, list[Proc]]]


def run_stage(
    label: str, start: StartFn, opts: Options, seeds: Seeds, log_dir: Path
) -> dict:
    """Start a server (``start(log_dir) -> (port, procs)``), measure, stop it."""
    log(f"starting {label}...")
    procs: list[Proc] = []
    try:
        port, procs = start(log_dir)
        wait_ready(port, opts.app, procs, opts.ready_timeout)
        log(f"{label} ready on port {port}")
        return measure(label, port, opts, seeds, [p.popen.pid for p in procs])
    finally:
        for p in reversed(procs):
            p.stop()
        if procs:
            log(f"stopped {label}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _environment() -> dict:
    try:
        wrk_version = subprocess.run(
            ["wrk", "--version"], check=False, capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        wrk_version = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "wrk": wrk_version,
    }


def format_table(results: dict) -> str:
    """The human-readable summary."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    header = (
        f"{'':10} {'req/s':>12} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8} "
        f"{'sock err':>8} {'defaults':>9}"
    )
    rows = [header]
    for label in ("floor", "pipeline"):
        r = results.get(label)
        if r is None:
            rows.append(f"{label:10} {'(not measured)':>12}")
            continue
        rows.append(
            f"{label:10} {num(r['requests_per_s'], ',.0f'):>12} "
            f"{num(r['p50_ms'], '.2f'):>9} "
            f"{num(r['p99_ms'], '.2f'):>9} {r['non_2xx']:>8} "
            f"{sum(r['socket_errors'].values()):>8} {num(r['defaults'], 'd'):>9}"
        )
    ratio = results.get("ratio") or {}
    if ratio.get("requests_per_s") is not None:
        rows.append(
            f"ratio pipeline/floor: throughput {ratio['requests_per_s']:.3f}, "
            f"p50 x{num(ratio['p50'], '.2f')}, p99 x{num(ratio['p99'], '.2f')}"
        )
    p = results.get("pipeline")
    if p is not None:
        rows.append(
            f"pipeline: {num(p['defaults'], 'd')} default answers out of "
            f"{num(p['predictions'], 'd')} predictions ({p['requests']} wrk requests), "
            f"mean batch size {num(p.get('mean_batch_size'), '.1f')}"
        )
    for label in ("floor", "pipeline"):
        cpu = (results.get(label) or {}).get("cpu_us_per_request")
        if cpu:
            threads = ", ".join(f"{name} {us:.2f}" for name, us in cpu.items() if us >= 0.05)
            rows.append(f"{label} CPU µs per request (process/thread/tid): {threads}; total {sum(cpu.values()):.2f}")
        wakeups = (results.get(label) or {}).get("wakeups_per_request")
        if wakeups:
            threads = ", ".join(f"{name} {n:.2f}" for name, n in wakeups.items() if n >= 0.01)
            rows.append(f"{label} wake-ups per request (process/thread/tid): {threads}; "
                        f"total {sum(wakeups.values()):.2f}")
    return "\n".join(rows)


def run_throughput(opts: Options) -> int:
    """``throughput``: measure floor, then pipeline; print, save, return exit code."""
    if opts.threads > opts.connections:
        raise SystemExit("--threads must not exceed --connections")
    results: dict = {
        "benchmark": "throughput",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": asdict(opts),
        "environment": _environment(),
        "floor": None,
        "pipeline": None,
        "ratio": None,
        "error": None,
    }
    seeds = Seeds()
    log_dir = Path(tempfile.mkdtemp(prefix="clipper-bench-"))
    if opts.pipeline == "floor":

        def start_pipeline(d: Path) -> tuple[int, list[Proc]]:
            return start_floor(d, name="floor_standin")

        pipeline_label = "pipeline (floor stand-in)"
    else:

        def start_pipeline(d: Path) -> tuple[int, list[Proc]]:
            container = shlex.split(opts.container_command) if opts.container_command else None
            return start_clipper(opts.app, d, opts.workers, container, spin=opts.spin)

        pipeline_label = "pipeline"
        if opts.container_command:
            log(f"model container: {opts.container_command}")
    try:
        results["floor"] = run_stage("floor", start_floor, opts, seeds, log_dir)
        results["pipeline"] = run_stage(
            pipeline_label, start_pipeline, opts, seeds, log_dir
        )
        f, p = results["floor"], results["pipeline"]
        results["ratio"] = {
            "requests_per_s": _ratio(p["requests_per_s"], f["requests_per_s"]),
            "p50": _ratio(p["p50_ms"], f["p50_ms"]),
            "p99": _ratio(p["p99_ms"], f["p99_ms"]),
        }
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
        results["error"] = str(e)
        log(f"ERROR: {e}")
        log(f"process logs kept in {log_dir}")
    except KeyboardInterrupt:
        results["error"] = "interrupted"
        log("interrupted")
    path = report.write_results(results, name="{stamp}")
    print(format_table(results))
    log(f"results written to {path}")
    if results["error"] is None:
        shutil.rmtree(log_dir, ignore_errors=True)
        return 0
    return 1
