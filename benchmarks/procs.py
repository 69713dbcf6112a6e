"""Subprocesses, free ports and small HTTP helpers for the harness (127.0.0.1 only)."""

from __future__ import annotations

import base64
import http.client
import itertools
import math
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

_probe_counter = itertools.count(1)


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def raise_open_files_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit (children inherit it); return the soft
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the process's output."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM its process group, then SIGKILL after ``timeout_s``."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {timeout_s}s; killing it")
                self._signal(signal.SIGKILL)
                self.popen.wait(timeout_s)
        self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(
                self.popen.pid, sig
            )  # the group we created with start_new_session
        except ProcessLookupError:
            pass


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 2.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:port; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def probe_prediction(port: int, app: str, input_type: str = "doubles") -> tuple[bool, str]:
    """POST a fresh input (four doubles, or 16 bytes as base64 for ``bytes``); (True, body) if the answer is a
    non-default prediction."""
    n = next(_probe_counter)
    if input_type == "bytes":
        value: object = base64.b64encode(struct.pack("<dII", time.time(), os.getpid(), n)).decode()
    else:
        value = [-1.0, float(os.getpid()), float(n), time.time()]
    body = orjson.dumps({"input": value})
    try:
        status, data = http_request(port, "POST", f"/{app}/predict", body)
    except (OSError, http.client.HTTPException) as e:
        return False, f"{type(e).__name__}: {e}"
    text = data.decode(errors="replace")
    if status != 200:
        return False, f"HTTP {status}: {text}"
    try:
        ok = orjson.loads(data).get("default") is False
    except (orjson.JSONDecodeError, AttributeError):
        ok = False
    return ok, text


def wait_ready(port: int, app: str, procs: list[Proc], timeout_s: float, input_type: str = "doubles") -> None:
    """Wait until ``app`` answers a prediction with ``"default": false``.

    Raises RuntimeError (with the tail of the processes' output) if one of ``procs``
    exits or the timeout passes.
    """
    wait_until(lambda: probe_prediction(port, app, input_type), procs, timeout_s, 0.2,
               f"app {app!r} on port {port} gave no non-default prediction")


def wait_until(probe: Callable[[], tuple[bool, str]], procs: list[Proc], timeout_s: float, interval_s: float,
               failure: str) -> str:
    """Call ``probe`` every ``interval_s`` until it returns ``(True, answer)``; return the answer.

    Raises RuntimeError (``failure``, the last answer and the tail of the processes' output) if one
    of ``procs`` exits or the timeout passes.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(
                    f"{p.name} exited with code {p.popen.returncode} before it was ready;"
                    f" last output ({p.log_path}):\n{p.tail()}"
                )
        ok, last = probe()
        if ok:
            return last
        time.sleep(interval_s)
    tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail()}" for p in procs)
    raise RuntimeError(f"{failure} within {timeout_s}s; last answer: {last}\n{tails}")


def read_metrics(port: int) -> dict:
    """GET /metrics as JSON."""
    status, data = http_request(port, "GET", "/metrics", timeout_s=5.0)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered HTTP {status}: {data[:200]!r}")
    return orjson.loads(data)


def _metric(metrics: dict, section: str, name: str, key: str) -> float | None:
    """Find ``{name: {key: "value"}}`` in a list section of Clipper's metrics JSON."""
    for entry in metrics.get(section) or []:
        if isinstance(entry, dict) and name in entry:
            try:
                return float(entry[name][key])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def app_prediction_counts(metrics: dict, app: str) -> tuple[int, int] | None:
    """(predictions, defaults) for ``app`` from Clipper's metrics, or None if absent."""
    n = _metric(metrics, "counters", f"app:{app}:num_predictions", "count")
    if n is None:
        return None
    ratio = _metric(
        metrics, "ratio_counters", f"app:{app}:default_prediction_ratio", "ratio"
    )
    if ratio is None or not math.isfinite(ratio):
        ratio = 0.0
    return int(n), round(n * ratio)


def model_summary(metrics: dict, model: str, what: str = "batch_size", version: str = "1") -> dict[str, float] | None:
    """The frontend's summary of recent ``batch_size`` (queries) or ``prediction_latency`` (batch round
    trips, microseconds) of ``model``: p50, p95, p99, mean, min, max, size."""
    for entry in metrics.get("histograms") or []:
        summary = entry.get(f"model:{model}:{version}:{what}") if isinstance(entry, dict) else None
        if summary is not None:
            return {k: float(v) for k, v in summary.items() if k != "unit"}
    return None


def model_batch_totals(port: int, model: str, version: str = "1") -> tuple[int, int] | None:
    """(batches, inputs) sent to ``model`` so far, from the frontend's Prometheus metrics."""
    status, data = http_request(port, "GET", "/metrics", timeout_s=5.0, headers={"Accept": "text/plain"})
    if status != 200:
        return None
    label = f'{{model="{model}",version="{version}"}} '
    totals = {}
    for line in data.decode(errors="replace").splitlines():
        for kind in ("count", "sum"):
            if line.startswith(f"clipper_model_batch_size_{kind}{label}"):
                totals[kind] = int(float(line.rsplit(" ", 1)[1]))
    return (totals["count"], totals["sum"]) if len(totals) == 2 else None


def model_replicas(metrics: dict, model: str, version: str = "1") -> int:
    """Connected replicas of ``model`` per the frontend's metrics (0 if absent)."""
    n = _metric(metrics, "counters", f"model:{model}:{version}:num_replicas", "count")
    return int(n or 0)


def rss_mb(pid: int) -> float | None:
    """A process's resident set size (VmRSS) in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def thread_stats(pids: list[int]) -> dict[str, tuple[int, int]]:
    """CPU time (user + system, in clock ticks) and voluntary context switches (times it slept and was woken)
    of every thread of `pids` and their child processes, keyed ``"<process pid>/<thread name>/<tid>"``."""
    stats: dict[str, tuple[int, int]] = {}
    seen: set[int] = set()
    queue = list(pids)
    while queue:
        pid = queue.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            task = Path(f"/proc/{pid}/task/{tid}")
            try:
                stat = (task / "stat").read_text()
                status = (task / "status").read_text()
                children = (task / "children").read_text().split()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            switches = next(int(line.split()[1]) for line in status.splitlines()
                            if line.startswith("voluntary_ctxt_switches:"))
            stats[f"{pid}/{name}/{tid}"] = (int(fields[11]) + int(fields[12]), switches)
            queue.extend(int(c) for c in children)
    return stats


def thread_cpu_ticks(pids: list[int]) -> dict[str, int]:
    """CPU time (user + system, in clock ticks) of every thread of `pids` and their child processes."""
    return {k: ticks for k, (ticks, _) in thread_stats(pids).items()}


class ThreadCpu:
    """CPU time and wake-ups (voluntary context switches) per thread of some processes (and their children)
    over a ``with`` block. At one request at a time, a thread's wake-ups per request count the hand-offs
    it takes part in."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.seconds: dict[str, float] = {}
        self.wakeups: dict[str, int] = {}

    def __enter__(self) -> ThreadCpu:
        self._before = thread_stats(self.pids)
        return self

    def __exit__(self, *exc: object) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        after = thread_stats(self.pids)
        zero = (0, 0)
        self.seconds = {k: (v[0] - self._before.get(k, zero)[0]) / hz for k, v in after.items()
                        if v[0] > self._before.get(k, zero)[0]}
        self.wakeups = {k: v[1] - self._before.get(k, zero)[1] for k, v in after.items()
                        if v[1] > self._before.get(k, zero)[1]}

    def micros_per(self, count: int) -> dict[str, float]:
        """Each thread's CPU microseconds per `count` events (requests), busiest first."""
        if count <= 0:
            return {}
        per = {k: round(s * 1e6 / count, 2) for k, s in self.seconds.items()}
        return dict(sorted(per.items(), key=lambda kv: -kv[1]))

    def micros_per_process(self, count: int, names: dict[int, str]) -> dict[str, float]:
        """Each process's CPU microseconds (all its threads) per `count` events, labelled by ``names``
        (pid -> name; a pid not there, e.g. a child process, is labelled ``pid N``)."""
        if count <= 0:
            return {}
        per: dict[str, float] = {}
        for key, s in self.seconds.items():
            pid = int(key.split("/", 1)[0])
            label = names.get(pid, f"pid {pid}")
            per[label] = per.get(label, 0.0) + s * 1e6 / count
        return {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}

    def wakeups_per(self, count: int) -> dict[str, float]:
        """Each thread's wake-ups per `count` events (requests), most first."""
        if count <= 0:
            return {}
        per = {k: round(n / count, 3) for k, n in self.wakeups.items()}
        return dict(sorted(per.items(), key=lambda kv: -kv[1]))


class RssSampler:
    """Samples a process's VmRSS every ``interval_s`` on a background thread."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        mb = rss_mb(self.pid)
        if mb is not None:
            self.samples.append((round(time.monotonic() - self._t0, 2), round(mb, 2)))

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval_s):
                return

    def summary(self) -> dict:
        """First, last, max MB and the least-squares slope in MB per minute."""
        return rss_summary(self.samples)


def rss_summary(samples: list[tuple[float, float]]) -> dict:
    """First, last, max MB of ``(t_s, MB)`` samples and their least-squares slope in MB/min."""
    if not samples:
        return {"samples": 0, "first_mb": None, "last_mb": None, "max_mb": None, "slope_mb_per_min": None}
    ts = [t for t, _ in samples]
    ms = [m for _, m in samples]
    slope = None
    if len(samples) >= 2 and max(ts) > min(ts):
        t_mean, m_mean = sum(ts) / len(ts), sum(ms) / len(ms)
        num = sum((t - t_mean) * (m - m_mean) for t, m in samples)
        slope = round(num / sum((t - t_mean) ** 2 for t in ts) * 60, 4)
    return {"samples": len(samples), "first_mb": ms[0], "last_mb": ms[-1], "max_mb": max(ms),
            "slope_mb_per_min": slope}
