"""Open-loop load: Poisson arrivals at a set rate, latency measured from the scheduled send time.

The client runs on uvloop over a pool of keep-alive connections and writes raw HTTP/1.1 bytes.
A request goes to an idle connection if there is one, else it is pipelined on the next one
(the query frontend answers pipelined requests in order). Because every latency is taken from
the time the request was *scheduled*, a server (or client) that falls behind is charged for it:
no coordinated omission. ``lag`` reports how late the client itself sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np
import uvloop

from benchmarks.procs import HOST


def poisson_schedule(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Send offsets (seconds from start, ascending) of a Poisson process of ``rate``/s over ``duration_s``."""
    if rate <= 0 or duration_s <= 0:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    n = int(rate * duration_s * 1.2 + 10 * np.sqrt(rate * duration_s) + 10)
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    while times[-1] < duration_s:  # astronomically rare: extend
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, n))])
    return times[times < duration_s]


def percentiles_ms(latencies_s: list[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99/p99.9/max of latencies given in seconds, in milliseconds."""
    keys = ("p50", "p95", "p99", "p999", "max")
    if len(latencies_s) == 0:
        return dict.fromkeys(keys)
    a = np.asarray(latencies_s) * 1e3
    values = np.percentile(a, [50, 95, 99, 99.9, 100])
    return {k: round(float(v), 3) for k, v in zip(keys, values, strict=True)}


def parse_responses(buf: bytearray) -> list[tuple[int, bool]]:
    """Take every complete HTTP response off the front of ``buf``: ``(status, default)`` each.

    Expects the frontend's responses: a Content-Length header, no chunked encoding.
    """
    out: list[tuple[int, bool]] = []
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return out
        i = buf.find(b"Content-Length:", 0, head_end)
        if i < 0:
            i = buf.lower().find(b"content-length:", 0, head_end)
        length = int(buf[i + 15 : buf.find(b"\r\n", i)]) if i >= 0 else 0
        end = head_end + 4 + length
        if len(buf) < end:
            return out
        default = buf.find(b'"default":true', head_end, end) >= 0
        out.append((int(buf[9:12]), default))
        del buf[:end]


@dataclass
class OpenLoopResult:
    """Figures of one open-loop run (the measured part, after the warm-up)."""

    rate: float
    duration_s: float
    sent: int = 0
    predictions: int = 0  # 2xx with "default": false
    defaults: int = 0  # 2xx with "default": true
    non_2xx: int = 0
    errors: int = 0  # connection lost, or no answer by the end of the drain
    pipelined: int = 0  # sends that found no idle connection
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # over 2xx answers
    lag_ms: dict[str, float | None] = field(default_factory=dict)  # client send time - scheduled time
    timeline: list[dict] = field(default_factory=list)  # per second: answers, p99 ms, max lag ms

    @property
    def answered(self) -> int:
        return self.predictions + self.defaults

    @property
    def throughput(self) -> float:
        """2xx answers per second of the measured window."""
        return self.answered / self.duration_s

    @property
    def goodput(self) -> float:
        """Predictions (not defaults) per second."""
        return self.predictions / self.duration_s

    @property
    def default_ratio(self) -> float:
        return self.defaults / self.answered if self.answered else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(throughput=round(self.throughput, 1), goodput=round(self.goodput, 1),
                 default_ratio=round(self.default_ratio, 5))
        return d


class _Recorder:
    """Counts and latencies, kept only for requests scheduled after the warm-up."""

    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.latencies: list[float] = []
        self.answered_at: list[float] = []  # scheduled time of each latency
        self.lags: list[float] = []
        self.sent_at: list[float] = []  # scheduled time of each lag
        self.predictions = self.defaults = self.non_2xx = self.errors = self.sent = self.pipelined = 0


class _Conn(asyncio.Protocol):
    def __init__(self, rec: _Recorder, idle: list[_Conn]) -> None:
        self.rec, self.idle = rec, idle
        self.pending: deque[float] = deque()  # scheduled send times (perf_counter) in flight
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        now = time.perf_counter()
        rec = self.rec
        for status, default in parse_responses(self.buf):
            scheduled = self.pending.popleft()
            if scheduled < rec.measure_from:
                continue
            if 200 <= status < 300:
                rec.latencies.append(now - scheduled)
                rec.answered_at.append(scheduled)
                if default:
                    rec.defaults += 1
                else:
                    rec.predictions += 1
            else:
                rec.non_2xx += 1
        if not self.pending and self.open:
            self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.rec.errors += sum(1 for s in self.pending if s >= self.rec.measure_from)
        self.pending.clear()


def _request_bytes(app: str, body: bytes) -> bytes:
    return (
        b"POST /%s/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (app.encode(), HOST.encode(), len(body), body)
    )


async def _run(port: int, app: str, schedule: np.ndarray, measure_from_s: float, connections: int,
               seed: int, input_size: int, drain_s: float) -> _Recorder:
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    conns: list[_Conn] = []
    rec = _Recorder(float("inf"))
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Conn(rec, idle), HOST, port)
        conns.append(conn)
        idle.append(conn)
    tail = b"".join(b",%d.0" % i for i in range(input_size - 2)) + b"]}"
    head = b'{"input":[%d.0,' % seed if input_size > 1 else b'{"input":['
    start = time.perf_counter() + 0.05
    rec.measure_from = start + measure_from_s
    sched = (schedule + start).tolist()
    rr = 0
    i, n = 0, len(sched)
    while i < n:
        now = time.perf_counter()
        while i < n and sched[i] <= now:
            t = sched[i]
            body = head + b"%d.5" % i + tail
            while idle and not idle[-1].open:
                idle.pop()
            if idle:
                conn = idle.pop()
            else:
                live = [c for c in conns if c.open] if rr % 64 == 0 else conns
                if not live:
                    raise RuntimeError("every connection to the server was lost")
                conn = live[rr % len(live)]
                rr += 1
                if not conn.open:
                    conn = next(c for c in conns if c.open)
                if t >= rec.measure_from:
                    rec.pipelined += 1
            conn.pending.append(t)
            conn.transport.write(_request_bytes(app, body))  # type: ignore[union-attr]
            if t >= rec.measure_from:
                rec.sent += 1
                rec.lags.append(now - t)
                rec.sent_at.append(t)
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, sched[i] - time.perf_counter()))
    deadline = time.perf_counter() + drain_s
    while any(c.pending for c in conns) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    for c in conns:
        rec.errors += sum(1 for s in c.pending if s >= rec.measure_from)
        c.pending.clear()
        c.open = False
        if c.transport is not None:
            c.transport.close()
    return rec


def timeline(rec: _Recorder, bucket_s: float = 1.0) -> list[dict]:
    """Per ``bucket_s`` of scheduled time: 2xx answers, their p99 latency and the client's max lag (ms)."""
    if not rec.answered_at:
        return []
    at = (np.asarray(rec.answered_at) - rec.measure_from) // bucket_s
    lat = np.asarray(rec.latencies) * 1e3
    lag_at = (np.asarray(rec.sent_at) - rec.measure_from) // bucket_s
    lags = np.asarray(rec.lags) * 1e3
    out = []
    for b in range(int(at.max()) + 1):
        sel, lsel = lat[at == b], lags[lag_at == b]
        out.append({"t": b * bucket_s, "answers": int(sel.size),
                    "p99_ms": round(float(np.percentile(sel, 99)), 2) if sel.size else None,
                    "max_lag_ms": round(float(lsel.max()), 2) if lsel.size else None})
    return out


def run(port: int, app: str, *, rate: float, duration_s: float, warmup_s: float = 1.0, connections: int = 256,
        seed: int = 0, input_size: int = 4, drain_s: float = 3.0) -> OpenLoopResult:
    """Open-loop Poisson load at ``rate``/s: ``warmup_s`` unmeasured, then ``duration_s`` measured.

    Inputs are doubles, unique per request and per ``seed`` (the prediction cache never hits).
    """
    schedule = poisson_schedule(rate, warmup_s + duration_s, seed)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rec = runner.run(_run(port, app, schedule, warmup_s, connections, seed, max(input_size, 1), drain_s))
    return OpenLoopResult(
        rate=rate, duration_s=duration_s, sent=rec.sent, predictions=rec.predictions, defaults=rec.defaults,
        non_2xx=rec.non_2xx, errors=rec.errors, pipelined=rec.pipelined,
        latency_ms=percentiles_ms(rec.latencies), lag_ms=percentiles_ms(rec.lags), timeline=timeline(rec),
    )
