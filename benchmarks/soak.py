"""Soak run: a steady predict load for a long time, with faults injected periodically.

    python -m benchmarks.soak [--duration 600] [--fault-interval 30] [--mode redis|config]

Starts (all on 127.0.0.1) a query frontend, `--replicas` containers of the `sleep` model and, in
Redis mode, a redis-server (append-only file, so that a restart keeps the configuration). A
`LoadDriver` (benchmarks/chaos_load.py) posts unique inputs over several keep-alive connections.
Every `--fault-interval` seconds the next fault of the cycle is injected:

- ``kill``: kill -9 a container; a replacement is started at once
- ``stop``: SIGSTOP a container for heartbeat timeout + 1 s (it is dropped), then SIGCONT
- ``redis``: restart redis-server (Redis mode only)

Progress goes to stderr every `--progress-interval` seconds. At the end: the counts of every request
sent (prediction, default, failed, unanswered), the query frontend's RSS (VmRSS) first/last/max and
its slope after the warm-up, as text on stderr and JSON on stdout. Exits 1 if any request went
unanswered, or if predictions do not resume after the last fault.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.chaos_load import LoadDriver
from benchmarks.procs import Proc, log, read_metrics, wait_ready
from clipper import cmdline
from clipper.frontend.config import DEFAULT_CACHE_BYTES
from clipper.ports import free_port
from clipper.state import StateStore
from clipper.state.redis_server import RedisServer

APP, MODEL = "soak", "m"


@dataclass
class Options:
    duration: float = 600.0
    fault_interval: float = 30.0
    mode: str = "redis"
    replicas: int = 2
    connections: int = 4
    interval: float = 0.01
    slo_ms: int = 200
    sleep_ms: float = 10.0
    heartbeat_timeout: float = 2.0
    cache_size: int = DEFAULT_CACHE_BYTES
    progress_interval: float = 5.0
    log_dir: str | None = None


@dataclass
class RssSamples:
    """(seconds since start, KiB) of the query frontend."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    def summary(self, warmup_s: float) -> dict[str, float]:
        kib = [k for _, k in self.samples]
        late = [(t, k) for t, k in self.samples if t >= warmup_s] or self.samples
        return {"first_kib": kib[0], "last_kib": kib[-1], "max_kib": max(kib),
                "slope_kib_per_min": round(slope(late) * 60, 1), "slope_from_s": warmup_s}


def slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two points)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Stack:
    """The processes under test, and the faults injected into them."""

    def __init__(self, opts: Options, log_dir: Path) -> None:
        self.opts, self.log_dir = opts, log_dir
        self.port, self.rpc_port = free_port(), free_port()
        self.redis: RedisServer | None = None
        self.containers: list[Proc] = []
        self.started = 0
        self.crashed = 0
        self.faults: list[tuple[float, str]] = []

    def start(self) -> None:
        opts = self.opts
        if opts.mode == "redis":
            self.redis = RedisServer(log_path=self.log_dir / "redis.log", extra_args=[
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.log_dir)]).start()
            store = StateStore.connect(self.redis.host, self.redis.port)
            store.add_app(APP, "doubles", "-1.0", opts.slo_ms * 1000)
            store.add_model(MODEL, "1", "doubles")
            store.add_links(APP, [MODEL])
            store.close()
            source = ["--redis-port", str(self.redis.port)]
        else:
            config = {"apps": [{"name": APP, "input_type": "doubles", "latency_slo_micros": opts.slo_ms * 1000,
                                "default_output": "-1.0", "models": [MODEL]}],
                      "models": [{"name": MODEL, "version": "1", "input_type": "doubles"}]}
            path = self.log_dir / "config.json"
            path.write_text(json.dumps(config))
            source = ["--config", str(path)]
        self.frontend = Proc("frontend", [
            sys.executable, "-m", "clipper.frontend.query", "--port", str(self.port), "--rpc-port",
            str(self.rpc_port), "--heartbeat-timeout", str(opts.heartbeat_timeout),
            "--cache-size", str(opts.cache_size), *source], self.log_dir)
        for _ in range(opts.replicas):
            self.add_container()
        wait_ready(self.port, APP, [self.frontend, *self.containers], timeout_s=60)

    def add_container(self) -> Proc:
        self.started += 1
        env = {"CLIPPER_MODEL_NAME": MODEL, "CLIPPER_MODEL_VERSION": "1", "CLIPPER_PORT": str(self.rpc_port),
               "CLIPPER_IP": "127.0.0.1", "CLIPPER_INPUT_TYPE": "doubles",
               "CLIPPER_SLEEP_FIXED_MS": str(self.opts.sleep_ms)}
        proc = Proc(f"container-{self.started}", [
            sys.executable, "-m", "clipper.model_runtime", "--predict", "clipper.model_runtime.models:sleep"],
            self.log_dir, env)
        self.containers.append(proc)
        return proc

    def replicas(self) -> int | str:
        """Connected replicas of the model, from the frontend's /metrics ("?" when it does not answer)."""
        try:
            for entry in read_metrics(self.port).get("counters", []):
                if f"model:{MODEL}:1:num_replicas" in entry:
                    return int(entry[f"model:{MODEL}:1:num_replicas"]["count"])
        except (OSError, RuntimeError, ValueError):
            pass
        return "?"

    def check_containers(self) -> None:
        """Says when a container exited without being killed by a fault (and starts a replacement)."""
        for proc in list(self.containers):
            if not proc.alive():
                log(f"{proc.name} exited with {proc.popen.returncode} on its own; last output:\n{proc.tail(8)}")
                self.containers.remove(proc)
                self.crashed += 1
                self.add_container()

    def fault_cycle(self) -> list[str]:
        return ["kill", "stop", "redis"] if self.redis is not None else ["kill", "stop"]

    def inject(self, fault: str, t: float) -> None:
        self.faults.append((t, fault))
        if fault == "kill":
            victim = self.containers.pop(0)
            os.kill(victim.popen.pid, signal.SIGKILL)
            victim.popen.wait(5)
            victim.stop()
            self.add_container()
            log(f"fault: killed {victim.name} (pid {victim.popen.pid}); started {self.containers[-1].name}")
        elif fault == "stop":
            victim = self.containers[0]
            os.kill(victim.popen.pid, signal.SIGSTOP)
            log(f"fault: SIGSTOP {victim.name} for {self.opts.heartbeat_timeout + 1:.1f} s")
            time.sleep(self.opts.heartbeat_timeout + 1)
            os.kill(victim.popen.pid, signal.SIGCONT)
            log(f"fault: SIGCONT {victim.name}")
        elif fault == "redis" and self.redis is not None:
            self.redis.stop()
            time.sleep(1.0)
            self.redis.start()
            log("fault: restarted redis-server (down 1 s)")

    def stop(self) -> None:
        for proc in [*self.containers, self.frontend]:
            proc.stop()
        if self.redis is not None:
            self.redis.stop()


def run_soak(opts: Options) -> int:
    log_dir = Path(opts.log_dir or tempfile.mkdtemp(prefix="clipper-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log(f"soak: {opts.duration:.0f} s, a fault every {opts.fault_interval:.0f} s, {opts.mode} mode, logs in {log_dir}")
    stack = Stack(opts, log_dir)
    rss = RssSamples()
    try:
        stack.start()
        load = LoadDriver(stack.port, APP, connections=opts.connections, interval_s=opts.interval,
                          timeout_s=max(5.0, 20 * opts.slo_ms / 1000)).start()
        start = time.monotonic()
        next_fault, next_progress, faults = start + opts.fault_interval, start, 0
        cycle = stack.fault_cycle()
        while (now := time.monotonic()) < start + opts.duration:
            if now >= next_progress:
                rss.samples.append((now - start, vm_rss_kib(stack.frontend.popen.pid)))
                c = load.counts()
                log(f"t={now - start:5.0f}s {c} rss={rss.samples[-1][1]} KiB faults={faults} "
                    f"replicas={stack.replicas()}")
                stack.check_containers()
                next_progress += opts.progress_interval
            if now >= next_fault and now + opts.fault_interval / 2 < start + opts.duration:
                stack.inject(cycle[faults % len(cycle)], now - start)
                faults += 1
                next_fault += opts.fault_interval
            if not stack.frontend.alive():
                raise RuntimeError(f"the query frontend exited:\n{stack.frontend.tail()}")
            time.sleep(0.1)
        resumed = True
        try:
            load.wait_predictions(50, timeout_s=15)
        except TimeoutError as e:
            resumed = False
            log(f"predictions did not resume: {e}")
        load.stop()
        rss.samples.append((time.monotonic() - start, vm_rss_kib(stack.frontend.popen.pid)))
    finally:
        stack.stop()
    counts = load.counts()
    outcomes = load.outcomes()
    explanations: dict[str, int] = {}
    for o in outcomes:
        if o.kind != "prediction":
            key = f"{o.kind}: {o.detail[:80]}"
            explanations[key] = explanations.get(key, 0) + 1
    report = {"options": asdict(opts), "counts": asdict(counts), "balanced": counts.balanced,
              "predictions_resumed": resumed, "faults": stack.faults,
              "containers_crashed": stack.crashed,
              "rate_per_s": round(counts.sent / max(1e-9, outcomes[-1].done - outcomes[0].sent), 1),
              "rss": rss.summary(warmup_s=min(60.0, opts.duration / 5)),
              "non_predictions": dict(sorted(explanations.items(), key=lambda kv: -kv[1])[:15])}
    log(f"done: {counts}; {len(stack.faults)} faults; frontend RSS {report['rss']}")
    print(json.dumps(report, indent=2))
    return 0 if counts.balanced and resumed else 1


def build_parser() -> cmdline.ArgumentParser:
    """``python -m benchmarks.soak``'s parser."""
    defaults = Options()
    ap = cmdline.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=cmdline.positive_float, default=defaults.duration, help="seconds of load")
    ap.add_argument("--fault-interval", type=cmdline.positive_float, default=defaults.fault_interval,
                    help="seconds between faults")
    ap.add_argument("--mode", choices=["redis", "config"], default=defaults.mode,
                    help="query frontend following Redis (with Redis restarts), or a static --config")
    ap.add_argument("--replicas", type=int, default=defaults.replicas, help="model replicas (at least 2)")
    ap.add_argument("--connections", type=cmdline.positive_int, default=defaults.connections,
                    help="client threads sending requests")
    ap.add_argument("--interval", type=float, default=defaults.interval, help="seconds between a thread's requests")
    ap.add_argument("--slo-ms", type=cmdline.positive_int, default=defaults.slo_ms, help="the app's latency objective")
    ap.add_argument("--sleep-ms", type=float, default=defaults.sleep_ms, help="the sleep model's time per batch")
    ap.add_argument("--heartbeat-timeout", type=cmdline.positive_float, default=defaults.heartbeat_timeout,
                    help="the query frontend's --heartbeat-timeout")
    ap.add_argument("--cache-size", type=cmdline.non_negative_int, default=defaults.cache_size,
                    help="the frontend's prediction cache in bytes: every input is new, so the cache grows to it")
    ap.add_argument("--progress-interval", type=cmdline.positive_float, default=defaults.progress_interval,
                    help="seconds between progress lines")
    ap.add_argument("--log-dir", help="where process logs go (default: a new temporary directory)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.replicas < 2:
        ap.error("--replicas must be at least 2, so that one keeps serving during a fault")
    return run_soak(Options(**vars(args)))


if __name__ == "__main__":
    sys.exit(main())
