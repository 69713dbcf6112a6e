"""Pure parts of the benchmark harness: Poisson schedule, response parsing, summaries, recommendation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks import openloop
from benchmarks.loadtest import meets_slo
from benchmarks.procs import rss_summary, wait_ready
from benchmarks.serving import Variant, config, parse_batch_sizes
from benchmarks.sweeps import recommend
from benchmarks.throughput import start_floor


def test_poisson_schedule_rate_order_and_seed() -> None:
    s = openloop.poisson_schedule(2000, 5.0, seed=1)
    assert np.all(np.diff(s) >= 0) and s[0] >= 0 and s[-1] < 5.0
    assert abs(len(s) - 10_000) < 5 * np.sqrt(10_000)
    gaps = np.diff(s)
    assert abs(gaps.mean() - 1 / 2000) < 0.05 / 2000
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential: coefficient of variation 1
    assert np.array_equal(s, openloop.poisson_schedule(2000, 5.0, seed=1))
    assert not np.array_equal(s, openloop.poisson_schedule(2000, 5.0, seed=2))
    assert len(openloop.poisson_schedule(0, 5.0, seed=1)) == 0


def test_parse_responses_complete_partial_and_default() -> None:
    ok = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n' \
         b'{"query_id":1,"output":1.0,"default":false}'
    default = b'HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{"output":-1.0,"default":true}'
    busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}"
    stream = ok + default + busy
    buf = bytearray(stream[:-5])
    assert openloop.parse_responses(buf) == [(200, False), (200, True)]
    buf += stream[-5:]
    assert openloop.parse_responses(buf) == [(503, False)]
    assert buf == b""


def test_percentiles_and_rss_summary() -> None:
    p = openloop.percentiles_ms(np.arange(1, 1001) / 1e3)
    assert p["p50"] == pytest.approx(500.5) and p["max"] == 1000.0
    assert openloop.percentiles_ms([])["p99"] is None
    s = rss_summary([(0.0, 40.0), (60.0, 41.0), (120.0, 42.0)])
    assert s["first_mb"] == 40.0 and s["last_mb"] == 42.0 and s["max_mb"] == 42.0
    assert s["slope_mb_per_min"] == pytest.approx(1.0)
    assert rss_summary([])["slope_mb_per_min"] is None


def test_variants_config_and_batch_sizes() -> None:
    assert parse_batch_sizes("1, 32,a,adaptive") == [1, 32, -1, -1]
    with pytest.raises(ValueError):
        parse_batch_sizes("0")
    v = Variant(-1, 500, 12.5, 2)
    assert v.name == "aimd_w500_slo12p5_r2" and v.policy == "adaptive, wait 500 us"
    c = config([v, Variant(8)])
    assert c["apps"][0]["latency_slo_micros"] == 12500 and c["models"][1]["batch_size"] == 8


def _row(p99: float, defaults: float = 0.0) -> dict:
    return {"latency_ms": {"p99": p99}, "default_ratio": defaults, "non_2xx": 0, "errors": 0, "throughput": 1.0}


def test_meets_slo_and_recommend() -> None:
    assert meets_slo(_row(19.0), 20.0, 0.01)
    assert not meets_slo(_row(21.0), 20.0, 0.01)
    assert not meets_slo(_row(5.0, 0.02), 20.0, 0.01)

    def cap(b: int, r: int, c: float) -> dict:
        v = Variant(b, 0, 20.0, r)
        return {"variant": {"batch_size": b, "batch_wait_us": 0, "replicas": r}, "policy": v.policy,
                "capacity": c, "best": _row(10.0)}

    text, rec = recommend([cap(8, 1, 1000), cap(-1, 1, 1500), cap(-1, 2, 2700), cap(8, 2, 1900)], 20.0, 5000)
    assert rec["batch_size"] == -1 and rec["scaling_1_to_2"] == pytest.approx(1.8)
    assert rec["replicas_for_target"] == 4  # 5000 / (1500 * 0.9)
    assert "adaptive" in text
    assert recommend([cap(8, 1, 0)], 20.0, None)[1] == {}


def test_open_loop_against_the_floor_server() -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="clipper-bench-test-"))
    port, procs = start_floor(log_dir)
    try:
        wait_ready(port, "bench", procs, 30)
        r = openloop.run(port, "bench", rate=500, duration_s=1.0, warmup_s=0.2, connections=8, seed=3)
    finally:
        for p in procs:
            p.stop()
    assert 350 < r.sent < 650 and r.predictions == r.sent and r.defaults == r.non_2xx == r.errors == 0
    assert r.latency_ms["p50"] is not None and r.timeline and r.timeline[0]["answers"] > 0


def _search(passes, **kw) -> tuple[list[float], float]:
    from benchmarks.loadtest import LoadOptions, _Search

    s = _Search(Variant(8), LoadOptions(**{"start_rate": 1000, "max_rate": 40000, "growth": 2, "refine": 3, **kw}))
    tried = []
    while s.rate is not None:
        tried.append(s.rate)
        s.record({"rate": s.rate, "meets_slo": passes(s.rate), "throughput": s.rate, "latency_ms": {"p99": 1.0}})
    return tried, s.result()["capacity"]


def test_capacity_search_grows_then_bisects() -> None:
    assert _search(lambda r: r <= 5000) == ([1000, 2000, 4000, 8000, 16000, 6000, 5000, 5500], 5000)
    # one failure is not the end (noise); the bisection works below the lowest failure above the best
    assert _search(lambda r: r != 2000 and r <= 5000)[1] == 5000
    assert _search(lambda r: r <= 300, refine=1) == ([1000, 2000, 500, 250, 375], 250)
    assert _search(lambda r: True, max_rate=4000) == ([1000, 2000, 4000], 4000)
