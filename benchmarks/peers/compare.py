"""Side-by-side: the floor server and our pipeline vs. Triton, Ray Serve and BentoML.

Same no-op model (a constant per input of 4 doubles), same machine, same wrk load (unique
inputs), one run. Each peer runs from its own venv (``venvs.py``) as a subprocess on
127.0.0.1 and is queried in its own request format (``wrk/<peer>.lua``).
"""

from __future__ import annotations

import glob
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report, throughput, wrkrun
from benchmarks.peers import venvs
from benchmarks.procs import HOST, Proc, http_request, log, wait_until
from benchmarks.throughput import Seeds
from clipper.ports import free_port

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
WRK_DIR = HERE / "wrk"

CommandFn = Callable[[Path, list[int], Path], list[str]]


@dataclass(frozen=True)
class Peer:
    """How to start one peer and load it."""

    name: str
    description: str
    package: str  # the main package in its lock file, for the report
    path: str  # the predict endpoint
    script: Path  # wrk Lua script that writes the peer's request format
    probe: bytes  # a request body for the readiness check
    command: CommandFn  # (venv python, ports, log dir) -> argv
    ports: int = 1
    env: dict[str, str] = field(default_factory=dict)
    leftovers: str | None = None  # glob of files a killed server leaves behind; {pid}: the server's pid


def _triton_cmd(python: Path, ports: list[int], log_dir: Path) -> list[str]:
    return [
        str(python), str(SERVERS / "triton_noop.py"), "--host", HOST, "--port", str(ports[0]),
        "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
        "--workspace", str(log_dir / "triton-workspace"),
    ]  # fmt: skip


def _ray_cmd(python: Path, ports: list[int], log_dir: Path) -> list[str]:
    return [str(python), str(SERVERS / "ray_noop.py"), "--host", HOST, "--port", str(ports[0])]


def _bentoml_cmd(python: Path, ports: list[int], log_dir: Path) -> list[str]:
    return [
        str(python.parent / "bentoml"), "serve", "bentoml_noop:Noop", "--working-dir", str(SERVERS),
        "--host", HOST, "--port", str(ports[0]),
    ]  # fmt: skip


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer(
            name="triton",
            description="PyTriton: Python no-op bound with @batch, dynamic batcher (max batch 64, no queue delay), "
            "KServe v2 JSON over HTTP",
            package="nvidia-pytriton",
            path="/v2/models/noop/infer",
            script=WRK_DIR / "triton.lua",
            probe=b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[-1.0,0.0,0.0,0.5]}]}',
            command=_triton_cmd,
            ports=3,
            leftovers="/dev/shm/pytrtion{pid}-*",  # the Python backend's shared memory, named by PyTriton's pid
        ),
        Peer(
            name="ray",
            description="Ray Serve: 1 replica, @serve.batch (max batch 64, no wait), max_ongoing_requests 256, "
            "no access log",
            package="ray",
            path="/predict",
            script=wrkrun.SCRIPT,  # same body as our pipeline: {"input":[a,b,c,d]}
            probe=b'{"input":[-1.0,0.0,0.0,0.5]}',
            command=_ray_cmd,
        ),
        Peer(
            name="bentoml",
            description="BentoML: 1 worker, @bentoml.api(batchable=True, max batch 64, max latency 1 s), no access log",
            package="bentoml",
            path="/predict",
            script=WRK_DIR / "bentoml.lua",
            probe=b'{"inputs":[[-1.0,0.0,0.0,0.5]]}',
            command=_bentoml_cmd,
            env={"BENTOML_DO_NOT_TRACK": "true"},
        ),
    )
}


@dataclass
class Options:
    """Command-line options of ``python -m benchmarks.peers``."""

    peers: list[str] = field(default_factory=lambda: list(PEERS))
    connections: int = 64
    duration: int = 10
    threads: int = 1
    warmup: int = 3
    ready_timeout: float = 180.0
    wrk_timeout: int = 2
    setup_only: bool = False
    reinstall: bool = False


def run_wrk(url: str, script: Path, opts: Options, duration_s: int, seed: int) -> tuple[wrkrun.WrkResult, str]:
    """Run wrk with ``script`` (arguments ``unique <seed>``); the parsed result and raw report."""
    return wrkrun.run(url, connections=opts.connections, duration_s=duration_s, threads=opts.threads, mode="unique",
                      seed=seed, timeout_s=opts.wrk_timeout, script=script)


def wait_peer_ready(port: int, peer: Peer, procs: list[Proc], timeout_s: float) -> str:
    """Wait until the probe request answers HTTP 200; return the answer."""

    def probe() -> tuple[bool, str]:
        try:
            status, data = http_request(port, "POST", peer.path, peer.probe)
        except (OSError, http.client.HTTPException) as e:
            return False, f"{type(e).__name__}: {e}"
        if status != 200:
            return False, f"HTTP {status}: {data[:300].decode(errors='replace')}"
        return True, data.decode(errors="replace")

    return wait_until(probe, procs, timeout_s, 0.5, f"{peer.name} gave no HTTP 200")


def run_peer(peer: Peer, python: Path, opts: Options, seeds: Seeds, log_dir: Path) -> dict:
    """Start ``peer``, wait until it answers, warm up, measure, stop it; return the figures."""
    ports: list[int] = []
    while len(ports) < peer.ports:
        if (port := free_port()) not in ports:
            ports.append(port)
    log(f"starting {peer.name}...")
    started = time.monotonic()
    proc = Proc(peer.name, peer.command(python, ports, log_dir), log_dir, env=peer.env)
    try:
        answer = wait_peer_ready(ports[0], peer, [proc], opts.ready_timeout)
        startup_s = time.monotonic() - started
        log(f"{peer.name} ready on port {ports[0]} after {startup_s:.1f}s; it answered {answer.strip()[:120]}")
        url = f"http://{HOST}:{ports[0]}{peer.path}"
        if opts.warmup > 0:
            log(f"{peer.name}: warm-up, running wrk {opts.warmup}s...")
            run_wrk(url, peer.script, opts, opts.warmup, seeds())
        log(f"{peer.name}: running wrk {opts.duration}s ({opts.connections} connections, {opts.threads} thread(s))...")
        result, raw = run_wrk(url, peer.script, opts, opts.duration, seeds())
        log(f"{peer.name}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms")
        return {**result.to_dict(), "startup_s": round(startup_s, 1), "probe_answer": answer, "wrk_output": raw}
    finally:
        proc.stop(timeout_s=20.0)
        _reap_group(proc, timeout_s=20.0)
        if peer.leftovers:
            for path in glob.glob(peer.leftovers.format(pid=proc.popen.pid)):
                Path(path).unlink(missing_ok=True)
        log(f"stopped {peer.name}")


def _reap_group(proc: Proc, timeout_s: float) -> None:
    """Wait until no process of ``proc``'s group is left; SIGKILL the group after ``timeout_s``.

    ``Proc.stop`` waits for the group's leader only. A tritonserver whose PyTriton parent has
    exited was once left waiting for an in-flight request for minutes; this ends such stragglers.
    """
    pgid = proc.popen.pid  # the group Proc created with start_new_session
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.2)
        log(f"{proc.name}: processes of its group still running {timeout_s:.0f}s after it stopped; killing them")
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone


def _version(peer: Peer) -> str | None:
    """The pinned version of the peer's main package."""
    for line in venvs.requirements_file(peer.name).read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == peer.package:
            return version.strip()
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_table(results: dict) -> str:
    """Summary: one row per stage, ratios of req/s to the floor and to our pipeline."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [
        f"{'':10} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8} {'sock err':>8} "
        f"{'/ floor':>8} {'/ pipeline':>10}"
    ]
    stages = results["stages"]
    floor = (stages.get("floor") or {}).get("requests_per_s")
    pipeline = (stages.get("pipeline") or {}).get("requests_per_s")
    for label, r in stages.items():
        if r is None or "requests_per_s" not in r:
            why = (r or {}).get("error", "not measured").strip().splitlines() or ["failed"]
            rows.append(f"{label:10} failed: {why[0][:100]}")
            continue
        rps = r["requests_per_s"]
        rows.append(
            f"{label:10} {rps:>10,.0f} {num(r['p50_ms'], '.2f'):>9} {num(r['p99_ms'], '.2f'):>9} "
            f"{r['non_2xx']:>8} {sum(r['socket_errors'].values()):>8} "
            f"{num(_ratio(rps, floor), '.4f'):>8} {num(_ratio(rps, pipeline), '.4f'):>10}"
        )
    faster = [
        f"{label} x{pipeline / r['requests_per_s']:.1f}"
        for label, r in stages.items()
        if label in PEERS and r and r.get("requests_per_s") and pipeline
    ]
    if faster:
        rows.append("pipeline req/s vs. each peer: " + ", ".join(faster))
    loads = ", ".join(f"{label} {load[0]:.1f}" for label, load in results.get("load_average", {}).items())
    if loads:
        rows.append(f"1-min load average at each stage's start ({os.cpu_count()} CPUs): {loads}")
    return "\n".join(rows)


def _baseline_options(opts: Options) -> throughput.Options:
    return throughput.Options(
        connections=opts.connections, duration=opts.duration, threads=opts.threads, warmup=opts.warmup,
        wrk_timeout=opts.wrk_timeout,
    )  # fmt: skip


def run_peers(opts: Options) -> int:
    """Set up venvs, then measure floor, pipeline and each peer; print, save, return the exit code."""
    pythons: dict[str, Path] = {}
    setup_errors: dict[str, str] = {}
    for name in opts.peers:
        try:
            pythons[name] = venvs.ensure(name, reinstall=opts.reinstall)
        except (RuntimeError, OSError) as e:
            setup_errors[name] = f"setup failed: {e}"
            log(f"{name}: {setup_errors[name]}")
    if opts.setup_only:
        return 1 if setup_errors else 0
    results: dict = {
        "benchmark": "peers",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": asdict(opts),
        "environment": throughput._environment(),
        "peers": {
            n: {"description": PEERS[n].description, "package": PEERS[n].package, "version": _version(PEERS[n])}
            for n in opts.peers
        },
        "stages": {},
        "ratio_to_floor": {},
        "ratio_to_pipeline": {},
        "load_average": {},  # 1, 5, 15 min, read as each stage starts: other work on the machine skews the ratios
    }
    stages: dict[str, dict | None] = results["stages"]
    seeds = Seeds()
    log_dir = Path(tempfile.mkdtemp(prefix="clipper-peers-"))
    base = _baseline_options(opts)
    failed = bool(setup_errors)
    try:
        for label, start in (
            ("floor", throughput.start_floor),
            ("pipeline", lambda d: throughput.start_clipper(base.app, d)),
        ):
            results["load_average"][label] = os.getloadavg()
            try:
                stages[label] = throughput.run_stage(label, start, base, seeds, log_dir)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                stages[label], failed = {"error": str(e)}, True
                log(f"{label}: ERROR: {e}")
        for name in opts.peers:
            if name in setup_errors:
                stages[name] = {"error": setup_errors[name]}
                continue
            results["load_average"][name] = os.getloadavg()
            try:
                stages[name] = run_peer(PEERS[name], pythons[name], opts, seeds, log_dir)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as e:
                stages[name], failed = {"error": str(e)}, True
                log(f"{name}: ERROR: {e}")
    except KeyboardInterrupt:
        results["error"], failed = "interrupted", True
        log("interrupted")
    floor = (stages.get("floor") or {}).get("requests_per_s")
    pipeline = (stages.get("pipeline") or {}).get("requests_per_s")
    for label, r in stages.items():
        rps = (r or {}).get("requests_per_s")
        results["ratio_to_floor"][label] = _ratio(rps, floor)
        results["ratio_to_pipeline"][label] = _ratio(rps, pipeline)
    path = report.write_results(results, name="peers-{stamp}")
    print(format_table(results))
    log(f"results written to {path}")
    if failed:
        log(f"process logs kept in {log_dir}")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0
