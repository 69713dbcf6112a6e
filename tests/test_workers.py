"""A query frontend with --workers 2: two processes on one HTTP port, a container connected to both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from conftest import HTTP_TIMEOUT_S, Cluster, flat_metrics, free_ports

CONFIG = {
    "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": 2_000_000, "default_output": "-1",
              "models": ["m"]}],
    "models": [{"name": "m", "version": "1", "input_type": "doubles"}],
}


def _free_port_pair() -> tuple[int, int]:
    """Two consecutive free ports (the workers' RPC ports)."""
    for _ in range(50):
        (port,) = free_ports(1)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port, port + 1
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


def _fresh_connection_get(url: str) -> dict:
    """`GET url` on a new connection (the kernel picks a worker per connection)."""
    r = requests.get(url, timeout=HTTP_TIMEOUT_S, headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def two_workers(cluster: Cluster):
    (http_port,) = free_ports(1)
    rpc_port, rpc_port_2 = _free_port_pair()
    fe = cluster.frontend(CONFIG, ports=(http_port, rpc_port), extra_args=("--workers", "2"))
    cluster.container(fe, "m", "sum", env={"CLIPPER_PORT": f"{rpc_port},{rpc_port_2}"})
    return fe


def test_both_workers_serve_predictions(two_workers) -> None:
    fe = two_workers
    deadline = time.monotonic() + 20
    while True:  # every worker has the container once predictions on many connections all succeed
        answers = [_fresh_connection_get(f"{fe.url}/metrics") for _ in range(20)]
        if all(flat_metrics(a).get("model:m:1:num_replicas") == 1 for a in answers):
            break
        assert time.monotonic() < deadline, "the container did not register with both workers"
        time.sleep(0.1)
    n = 100
    for i in range(n):
        r = requests.post(f"{fe.url}/app/predict", json={"input": [float(i), 1.0]}, timeout=HTTP_TIMEOUT_S,
                          headers={"Connection": "close"})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == i + 1.0 and r.json()["default"] is False, r.text
    # Each worker counts its own predictions: over many connections two different counts appear, summing to n,
    # or one count of n / 2 when the kernel happened to split the connections evenly (a worker that served
    # them all would report n, the other 0).
    counts = {flat_metrics(_fresh_connection_get(f"{fe.url}/metrics"))["app:app:num_predictions"]
              for _ in range(60)}
    assert (len(counts) == 2 and sum(counts) == n) or counts == {n // 2}, counts


def test_sigterm_stops_every_worker(two_workers) -> None:
    fe = two_workers
    fe.proc.send_signal(signal.SIGTERM)
    assert fe.proc.wait(timeout=15) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{fe.url}/healthz", timeout=2)


@pytest.mark.chaos
def test_supervisor_exits_when_a_worker_dies(cluster: Cluster) -> None:
    (http_port,) = free_ports(1)
    rpc_port, _ = _free_port_pair()
    fe = cluster.frontend(CONFIG, ports=(http_port, rpc_port), extra_args=("--workers", "2"))
    with open(f"/proc/{fe.proc.pid}/task/{fe.proc.pid}/children") as f:
        workers = [int(pid) for pid in f.read().split()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    assert fe.proc.wait(timeout=15) == 1
    deadline = time.monotonic() + 5
    while True:  # the surviving worker was stopped too: nothing answers on the port
        try:
            requests.get(f"{fe.url}/healthz", timeout=2)
        except requests.ConnectionError:
            break
        assert time.monotonic() < deadline, "a worker still answers after the supervisor exited"
        time.sleep(0.05)


def test_workers_need_fixed_ports(cluster: Cluster) -> None:
    out = subprocess.run([sys.executable, "-m", "clipper.frontend.query", "--port", "0", "--workers", "2"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--workers > 1 needs fixed --port" in out.stderr
