"""Run wrk with ``benchmarks/wrk/predict.lua`` and parse its report."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).parent / "wrk" / "predict.lua"

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass
class WrkResult:
    """The figures of one wrk run; latencies in milliseconds."""

    requests: int = 0
    duration_s: float = 0.0
    requests_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50%" -> ms
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )

    @property
    def p50_ms(self) -> float | None:
        return self.latency_ms.get("50%")

    @property
    def p99_ms(self) -> float | None:
        return self.latency_ms.get("99%")

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(p50_ms=self.p50_ms, p99_ms=self.p99_ms)
        return d


def _to_ms(value: str, unit: str) -> float:
    return round(float(value) * _TIME_UNITS_MS[unit], 4)


def parse(output: str) -> WrkResult:
    """Parse wrk's report (run with ``--latency``); missing parts keep defaults."""
    r = WrkResult()
    m = re.search(r"^\s*Requests/sec:\s*([\d.]+)", output, re.MULTILINE)
    if m is None:
        raise ValueError(f"no 'Requests/sec' in wrk output:\n{output}")
    r.requests_per_s = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output, re.MULTILINE)
    if m:
        r.requests = int(m.group(1))
        r.duration_s = _to_ms(m.group(2), m.group(3)) / 1e3
    m = re.search(
        r"Latency Distribution\s*\n((?:\s*[\d.]+%\s+[\d.]+\w+\s*\n?)+)", output
    )
    if m:
        for pct, value, unit in re.findall(
            r"([\d.]+%)\s+([\d.]+)(us|ms|s|m|h)\b", m.group(1)
        ):
            r.latency_ms[pct] = _to_ms(value, unit)
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if m:
        r.non_2xx = int(m.group(1))
    m = re.search(r"Socket errors:([^\n]*)", output)
    if m:
        for kind, n in re.findall(r"(\w+)\s+(\d+)", m.group(1)):
            r.socket_errors[kind] = int(n)
    return r


def run(
    url: str,
    *,
    connections: int,
    duration_s: int,
    threads: int,
    mode: str,
    seed: int,
    timeout_s: int = 2,
    script: Path = SCRIPT,
    script_args: Sequence[str] = (),
) -> tuple[WrkResult, str]:
    """Run wrk once against ``url`` with ``script`` (arguments ``<mode> <seed> *script_args``); return the
    parsed result and the raw report."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found on PATH (Debian: apt-get install wrk)")
    cmd = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration_s}s",
        f"--timeout={timeout_s}s",
        "--latency",
        f"--script={script}",
        url,
        "--",
        mode,
        str(seed),
        *script_args,
    ]
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"wrk exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return parse(proc.stdout), proc.stdout
