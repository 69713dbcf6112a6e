"""Instructions per request: the floor and the pipeline under valgrind's callgrind (``python -m benchmarks
instructions``).

Timings on a shared virtual machine move with the neighbours; instruction counts do not. Each server process
runs under ``valgrind --tool=callgrind`` (the floor server; the query frontend and the Python no-op container),
a client outside valgrind sends `warmup` requests, the counters are zeroed (``callgrind_control -z``), the
client sends `requests` more (unique inputs, keep-alive, over `connections` connections, each one request at a
time), and the counters are dumped (``callgrind_control -d``). Instructions per request = each process's
instructions in that dump / `requests`, per thread too.

Both pipeline processes run with their low-load poll off (``--no-spin``, ``CLIPPER_SPIN=0``): a poll's
instructions depend on time, not work. Timers still fire (the engine's liveness checks, heartbeats), a few
hundred instructions per millisecond at most; the figures are the same to within about 1% from run to run.
With more than one connection the batch sizes depend on timing under valgrind, so the mean batch size is
reported beside.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import report
from benchmarks.procs import HOST, Proc, log, model_batch_totals, wait_ready
from benchmarks.throughput import start_clipper, start_floor

APP = "bench"
#: The app's latency objective: under valgrind everything runs tens of times slower than the 100 ms of
#: `throughput`'s app allows.
SLO_US = 10_000_000


@dataclass
class InstructionsOptions:
    """Options of ``python -m benchmarks instructions``."""

    requests: int = 2000
    warmup: int = 300
    connections: list[int] = field(default_factory=lambda: [1, 64])
    ready_timeout: float = 300.0


def valgrind_available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


class Callgrind:
    """Runs processes under callgrind with their counts in `out_dir`; zeroes and dumps them on demand."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.pids: dict[str, int] = {}
        #: Each process's thread names in creation order (by tid), read at the dump.
        self.thread_names: dict[str, list[str]] = {}

    def wrap(self, name: str, argv: list[str]) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-instr=no",
                f"--callgrind-out-file={self.out_dir}/{name}.%p.out", *argv]

    def control(self, flag: str) -> None:
        """``callgrind_control FLAG`` for each process (``-z`` zero, ``-d`` dump)."""
        for name, pid in self.pids.items():
            done = subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"callgrind_control {flag} {name} ({pid}): {done.stdout}{done.stderr}")
            tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
            self.thread_names[name] = [Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in tids]

    def dumped(self) -> dict[str, dict[str, int]]:
        """Instructions per thread of each process in its first dump. A thread is named ``#N name``: valgrind
        numbers threads in creation order, as Linux gives out tids, so with no thread gone the Nth tid is
        thread N; otherwise ``#N`` alone."""
        counts: dict[str, dict[str, int]] = {}
        for name, pid in self.pids.items():
            numbered: dict[int, int] = {}
            for path in self.out_dir.glob(f"{name}.{pid}.out.1-*"):
                text = path.read_text(errors="replace")
                thread = re.search(r"^thread: (\d+)$", text, re.M)
                summary = re.search(r"^summary: (\d+)$", text, re.M)
                if thread and summary:
                    numbered[int(thread.group(1))] = int(summary.group(1))
            names = self.thread_names.get(name, [])
            named = len(names) == len(numbered) and max(numbered, default=0) == len(names)
            counts[name] = {f"#{n} {names[n - 1]}" if named else f"#{n}": c for n, c in sorted(numbered.items())}
        return counts


async def _client(port: int, bodies: list[bytes], connections: int) -> None:
    """Sends `bodies` as predict requests over `connections` keep-alive connections, one at a time each; any
    answer but 200 raises."""
    queue = list(reversed(bodies))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while queue:
                body = queue.pop()
                writer.write(b"POST /%s/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (APP.encode(), len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"answer {head.splitlines()[0]!r}")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                answer = await reader.readexactly(int(length.group(1))) if length else b""
                if b'"default":true' in answer:
                    raise RuntimeError(f"a default answer: {answer!r}")
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def _bodies(n: int, seed: int) -> list[bytes]:
    """`n` unique ``{"input": [4 doubles]}`` bodies (no cache hits)."""
    return [b'{"input":[%d.5,%d.25,1.0,2.0]}' % (seed, i) for i in range(n)]


def measure(stage: str, start: Callable[[Path, Callgrind], tuple[int, list[Proc]]], connections: int,
            opts: InstructionsOptions, seed: int) -> dict:
    """One stage (floor or pipeline) at one connection count: instructions per request of each process."""
    work = Path(tempfile.mkdtemp(prefix=f"clipper-callgrind-{stage}-"))
    callgrind = Callgrind(work)
    procs: list[Proc] = []
    try:
        port, procs = start(work, callgrind)
        callgrind.pids = {p.name: p.popen.pid for p in procs}
        log(f"{stage}, {connections} connection(s): waiting for the servers under valgrind...")
        wait_ready(port, APP, procs, opts.ready_timeout)
        asyncio.run(_client(port, _bodies(opts.warmup, seed), connections))
        batches_before = model_batch_totals(port, "noop")
        callgrind.control("-z")
        log(f"{stage}, {connections} connection(s): {opts.requests} requests...")
        asyncio.run(_client(port, _bodies(opts.requests, seed + 1), connections))
        callgrind.control("-d")
        batches_after = model_batch_totals(port, "noop")
        counts = callgrind.dumped()
    finally:
        for p in reversed(procs):
            p.stop()
    shutil.rmtree(work, ignore_errors=True)
    per_process = {name: round(sum(t.values()) / opts.requests) for name, t in counts.items()}
    mean_batch = None
    if batches_before and batches_after and batches_after[0] > batches_before[0]:
        mean_batch = round((batches_after[1] - batches_before[1]) / (batches_after[0] - batches_before[0]), 2)
    log(f"{stage}, {connections} connection(s): {sum(per_process.values()):,} instructions per request")
    return {"stage": stage, "connections": connections, "requests": opts.requests,
            "instructions_per_request": per_process, "total_per_request": sum(per_process.values()),
            "per_thread": {name: {t: round(n / opts.requests) for t, n in threads.items() if n}
                           for name, threads in counts.items()},
            "mean_batch_size": mean_batch}


def format_table(rows: list[dict]) -> str:
    lines = [f"{'stage':9} {'conns':>5} {'instructions/request':>21} {'mean batch':>10}  per process (per thread)"]
    for r in rows:
        parts = []
        for name, n in r["instructions_per_request"].items():
            threads = ", ".join(f"{t} {c:,}" for t, c in r["per_thread"][name].items() if c >= 100)
            parts.append(f"{name} {n:,} ({threads})")
        batch = "-" if r["mean_batch_size"] is None else f"{r['mean_batch_size']:.1f}"
        lines.append(f"{r['stage']:9} {r['connections']:>5} {r['total_per_request']:>21,} {batch:>10}  "
                     + "; ".join(parts))
    by = {(r["stage"], r["connections"]): r["total_per_request"] for r in rows}
    for (stage, c), total in by.items():
        if stage == "pipeline" and by.get(("floor", c)):
            lines.append(f"{c} connection(s): pipeline / floor = {total / by[('floor', c)]:.2f} in instructions")
    return "\n".join(lines)


def run_instructions(opts: InstructionsOptions) -> int:
    """``instructions``: the floor and the pipeline at each connection count; print, save, exit code."""
    if not valgrind_available():
        log("valgrind (with callgrind_control) is not installed: apt-get install valgrind")
        return 2
    results = report.new_results("instructions", asdict(opts))
    results["rows"] = rows = []
    seed = os.getpid() * 1000

    def floor(work: Path, cg: Callgrind) -> tuple[int, list[Proc]]:
        return start_floor(work, wrap=cg.wrap)

    def pipeline(work: Path, cg: Callgrind) -> tuple[int, list[Proc]]:
        return start_clipper(APP, work, spin=False, wrap=cg.wrap, slo_us=SLO_US)

    try:
        for connections in opts.connections:
            for stage, start in (("floor", floor), ("pipeline", pipeline)):
                seed += 10
                rows.append(measure(stage, start, connections, opts, seed))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        results["error"] = str(e)
        log(f"ERROR: {e}")
    except KeyboardInterrupt:
        results["error"] = "interrupted"
    path = report.write_results(results)
    print(format_table(rows))
    log(f"results written to {path}")
    return 0 if results["error"] is None else 1


if __name__ == "__main__":
    sys.exit(run_instructions(InstructionsOptions()))
