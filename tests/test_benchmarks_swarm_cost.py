"""`benchmarks.swarm_cost`'s accounting without a swarm: cgroup files, Prometheus totals, CPU per request."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks import swarm_cost
from benchmarks.swarm_cost import Target, Targets

V1 = """12:pids:/clipper-swarm-node0/abc
4:cpu,cpuacct:/clipper-swarm-node0/abc
1:name=systemd:/clipper-swarm-node0/abc
0::/
"""


def test_cgroup_cpu_file_v1_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    usage = v1 / "cpuacct" / "clipper-swarm-node0" / "abc" / "cpuacct.usage"
    usage.parent.mkdir(parents=True)
    usage.write_text("2500000000\n")
    assert swarm_cost.cgroup_cpu_file(V1, root=v1) == usage
    assert swarm_cost.read_cgroup_cpu_s(usage) == 2.5

    v2 = tmp_path / "v2"
    stat = v2 / "clipper-swarm-node0" / "abc" / "cpu.stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    assert swarm_cost.cgroup_cpu_file("0::/clipper-swarm-node0/abc\n", root=v2) == stat
    assert swarm_cost.read_cgroup_cpu_s(stat) == 1.5

    assert swarm_cost.cgroup_cpu_file(V1, root=tmp_path / "nothing") is None


def test_batch_totals_from_prometheus_text() -> None:
    text = ('clipper_model_batch_size_count{model="noop",version="1"} 200\n'
            'clipper_model_batch_size_sum{model="noop",version="1"} 1700.0\n'
            'clipper_model_batch_size_sum{model="other",version="1"} 5\n')
    assert swarm_cost.parse_batch_totals(text, "noop") == (200, 1700)
    assert swarm_cost.parse_batch_totals(text, "other") is None


def _snapshot(t: float, containers: list[float], threads: list[dict[str, int]], engine: float, wrk: float,
              idle: int, user: int) -> dict:
    return {"containers": containers, "threads": threads, "engines": {"node0": {999_999_991: engine}}, "wrk": wrk,
            "machine": {"user": user, "system": 0, "idle": idle, "softirq": 0}, "processes": {}, "t": t}


def test_cpu_per_request_by_role_frontend_and_thread() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    targets = Targets(
        containers=[
            Target("node0", "query frontend", "fe0", Path("/x"), [1], "10.0.0.1:1337"),
            Target("node1", "query frontend", "fe1", Path("/x"), [2], "10.0.0.2:1337"),
            Target("node1", "model replica", "m", Path("/x"), [3]),
            Target("node0", "redis", "r", Path("/x"), [4]),
        ],
        engines={"node0": [999_999_991]},
    )
    before = _snapshot(0.0, [0.0, 0.0, 0.0, 0.0], [{"1/loop/1": 0}, {}, {}, {}], 1.0, 0.5, 0, 0)
    after = _snapshot(10.0, [1.0, 3.0, 2.0, 0.001], [{"1/loop/1": hz // 2}, {}, {}, {}], 1.1, 1.5,
                      idle=10 * hz, user=10 * hz)
    cpu = swarm_cost.cpu_figures(targets, before, after, {"10.0.0.1:1337": 100_000, "10.0.0.2:1337": 100_000})
    assert cpu["requests"] == 200_000
    # (1 + 3) s over 200,000 requests; each frontend over its own 100,000
    assert cpu["us_per_request"]["query frontend"] == 20.0
    assert cpu["us_per_request"]["model replica"] == 10.0
    assert cpu["us_per_request"]["redis"] == 0.01
    assert cpu["us_per_request"]["management frontend"] == 0.0
    fe0, fe1 = cpu["containers"][:2]
    assert (fe0["us_per_request"], fe1["us_per_request"]) == (10.0, 30.0)
    assert fe0["busiest_threads_us_per_request"] == {"loop/1": 5.0}
    assert cpu["engines_us_per_request"] == 0.5  # 0.1 s over 200,000 (the engine process of the fake pid)
    assert cpu["wrk_us_per_request"] == 5.0
    assert cpu["machine"]["busy_cores"] == 1.0
    assert cpu["machine"]["busy_us_per_request"] == 50.0
    # 50 µs busy - (30.005 in containers + 0.5 engines + 5 wrk)
    assert abs(cpu["machine"]["unaccounted_us_per_request"] - 14.495) < 0.01

    run = {"frontends": 2, "run": 1, "requests": 200_000, "requests_per_s": 20_000.0, "non_2xx": 0,
           "socket_errors": 0, "defaults": 0, "cpu": cpu,
           "per_frontend": [{"addr": "10.0.0.1:1337", "node": "node0", "requests_per_s": 10_000.0, "p50_ms": 0.5,
                             "p99_ms": 2.0, "mean_batch": 4.0, "cpu_us_per_request": 10.0,
                             "busiest_threads_us_per_request": {"loop/1": 5.0}}]}
    table = swarm_cost.format_tables([run])
    assert "N = 2 frontend(s)" in table and "20,000" in table and "loop/1 5.0" in table
    summary = swarm_cost.summarize([run, {**run, "run": 2, "requests_per_s": 30_000.0}])
    assert summary["2"]["requests_per_s"] == {"median": 25_000.0, "min": 20_000.0, "max": 30_000.0}
    assert summary["2"]["query frontend"]["median"] == 20.0
