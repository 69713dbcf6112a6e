"""Subprocesses, free ports and small HTTP helpers for the harness (127.0.0.1 only)."""

from __future__ import annotations

import http.client
import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

_probe_counter = itertools.count(1)


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
    port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 2.0
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:port; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def probe_prediction(port: int, app: str) -> tuple[bool, str]:
    """POST a fresh input; (True, body) if the answer is a non-default prediction."""
    n = next(_probe_counter)
    body = orjson.dumps({"input": [-1.0, float(os.getpid()), float(n), time.time()]})
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


def wait_ready(port: int, app: str, procs: list[Proc], timeout_s: float) -> None:
    """Wait until ``app`` answers a prediction with ``"default": false``.

    Raises RuntimeError (with the tail of the processes' output) if one of ``procs``
    exits or the timeout passes.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(
                    f"{p.name} exited with code {p.popen.returncode}"
                    " before the app was ready;"
                    f" last output ({p.log_path}):\n{p.tail()}"
                )
        ok, last = probe_prediction(port, app)
        if ok:
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail()}" for p in procs)
    raise RuntimeError(
        f"app {app!r} on port {port} gave no non-default prediction"
        f" within {timeout_s}s;"
        f" last answer: {last}\n{tails}"
    )


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
