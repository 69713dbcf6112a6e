"""Tokens on predict and admin routes, Prometheus metrics by content negotiation, liveness and
readiness. Real processes, real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest
import requests
from conftest import Cluster, TimeoutSession, free_ports

from clipper.state.redis_server import RedisServer, redis_server_binary

CONFIG = {
    "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": 200_000, "default_output": "-1",
              "models": ["m"]},
             {"name": "lonely", "input_type": "doubles", "latency_slo_micros": 100_000, "default_output": "0"}],
    "models": [{"name": "m", "version": "1", "input_type": "doubles"}],
}


def test_predict_token_is_required_when_configured(cluster: Cluster) -> None:
    fe = cluster.frontend(CONFIG, extra_args=("--predict-token", "s3cret"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        r = fe.post("/lonely/predict", json={"input": [1.0]}, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert set(r.json()) == {"error", "cause"}
    r = fe.post("/lonely/predict", json={"input": [1.0]}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json()["default"] is True
    assert fe.post("/lonely/update", json={"uid": 0, "input": [1.0], "label": 1.0}).status_code == 401
    assert fe.get("/metrics").status_code == 200, "metrics and health stay open"
    assert fe.get("/healthz").json() == {"status": "alive"}


@pytest.mark.parametrize("module, token_flag", [("clipper.frontend.query", "--predict-token"),
                                                ("clipper.frontend.management", "--token")])
def test_an_open_bind_needs_a_token_or_insecure(module: str, token_flag: str) -> None:
    """Bound to every interface with no token, a frontend refuses to start and says both ways out."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPPER_PREDICT_TOKEN", "CLIPPER_ADMIN_TOKEN")}
    for host in ("0.0.0.0", "::", "my-host.example"):
        r = subprocess.run([sys.executable, "-m", module, "--host", host, "--port", "0"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (host, r.stderr)
        assert f"--host {host} accepts connections from other machines" in r.stderr
        assert token_flag in r.stderr and "--insecure" in r.stderr
        assert "Traceback" not in r.stderr


def test_an_open_bind_serves_with_a_token_or_when_told_insecure(cluster: Cluster) -> None:
    """On 0.0.0.0 the query frontend starts with a token (and requires it) or with --insecure (and does not)."""
    guarded = cluster.frontend(CONFIG, extra_args=("--host", "0.0.0.0", "--predict-token", "t0ken"))
    assert guarded.post("/lonely/predict", json={"input": [1.0]}).status_code == 401
    r = guarded.post("/lonely/predict", json={"input": [1.0]}, headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 200 and r.json()["default"] is True
    open_ = cluster.frontend(CONFIG, extra_args=("--host", "0.0.0.0", "--insecure"))
    assert open_.post("/lonely/predict", json={"input": [1.0]}).json()["default"] is True


def test_metrics_in_prometheus_text_by_content_negotiation(cluster: Cluster) -> None:
    fe = cluster.frontend(CONFIG)
    cluster.container(fe, "m", "sum")
    fe.wait_replicas("m", 1)
    for i in range(5):
        assert fe.predict("app", [float(i)])["default"] is False
    assert fe.predict("lonely", [1.0])["default"] is True
    assert fe.get("/metrics").json()["counters"], "JSON (Clipper's shape) by default"

    r = fe.get("/metrics", headers={"Accept": "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"})
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['clipper_app_requests_total{app="app",outcome="prediction"}'] == 5
    assert samples['clipper_app_requests_total{app="lonely",outcome="default_no_model"}'] == 1
    buckets = [(k, v) for k, v in samples.items() if k.startswith('clipper_app_latency_seconds_bucket{app="app"')]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 5, "cumulative, ending at the count"
    assert '{app="app",le="0.2"}' in "".join(k for k, _ in buckets), "a bucket at the SLO (200 ms)"
    assert samples['clipper_app_latency_seconds_count{app="app"}'] == 5
    assert samples['clipper_model_predictions_total{model="m",version="1"}'] == 5
    assert samples['clipper_model_replicas{model="m",version="1"}'] == 1
    assert 'clipper_model_queue_depth{model="m",version="1"}' in samples
    assert samples["clipper_cache_lookups_total"] == 5, "the app without a model never looks in the cache"


@pytest.mark.skipif(redis_server_binary() is None,
                    reason="redis-server is not installed (apt-get install redis-server)")
def test_readiness_waits_for_redis_and_admin_token(cluster: Cluster) -> None:
    (redis_port,) = free_ports(1)
    fe = cluster.frontend(redis_port=redis_port)
    assert fe.get("/healthz").status_code == 200
    r = fe.get("/readyz")
    assert r.status_code == 503 and set(r.json()) == {"error", "cause"}
    with RedisServer(port=redis_port, log_path=cluster.workdir / "redis.log"):
        deadline = time.monotonic() + 10
        while fe.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "ready once Redis answers"
            time.sleep(0.1)

        (admin_port,) = free_ports(1)
        cluster._spawn([sys.executable, "-m", "clipper.frontend.management", "--redis-port", str(redis_port),
                        "--port", str(admin_port), "--token", "adm1n"], cluster._log_file("management"))
        url = f"http://127.0.0.1:{admin_port}/admin"
        body = {"name": "a", "input_type": "doubles", "default_output": "0", "latency_slo_micros": 1000}
        with TimeoutSession() as http:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if http.get(f"{url}/ping").status_code == 200:
                        break  # ping stays open: it is the health check
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = http.post(f"{url}/add_app", json=body)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            assert http.post(f"{url}/add_app", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
            r = http.post(f"{url}/add_app", json=body, headers={"Authorization": "Bearer adm1n"})
            assert r.status_code == 200, r.text
        cluster.close()


def test_oversized_request_head_gets_431_and_the_connection_closes(cluster: Cluster) -> None:
    fe = cluster.frontend(CONFIG, extra_args=("--max-header-bytes", "4096"))
    with fe.connect() as conn:  # a head arriving in many small pieces, never finished
        conn.send(b"POST /lonely/predict HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.05)
        for _ in range(41):  # 4,100 bytes after the request line: just over the limit; then the client waits
            conn.send(b"X-Filler: " + b"a" * 88 + b"\r\n")
            time.sleep(0.002)
        status, _, body = conn.read_response()
        assert status == 431, body
        assert "exceed the limit of 4096 bytes" in body.decode()
        assert conn.at_eof()
    with fe.connect() as conn:  # one header value in a single write, bigger than the limit
        conn.send(conn.request("POST", "/lonely/predict", b'{"input":[1.0]}', {"X-Big": "b" * 20_000}))
        status, _, _ = conn.read_response()
        assert status in (400, 431)
    # A request under the limit, with a large body, is served normally.
    r = fe.post("/lonely/predict", json={"input": [1.0] * 5000}, headers={"X-Small": "c" * 1000})
    assert r.status_code == 200 and r.json()["default"] is True


def test_x_request_id_is_echoed(cluster: Cluster) -> None:
    fe = cluster.frontend(CONFIG)
    r = fe.post("/lonely/predict", json={"input": [1.0]}, headers={"X-Request-Id": "req-42"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-42"
    r = fe.post("/lonely/predict", json={"input_batch": [[1.0]]}, headers={"X-Request-Id": "req-43"})
    assert r.headers["X-Request-Id"] == "req-43"
    r = fe.post("/lonely/predict", data=b"{nope", headers={"X-Request-Id": "req-44"})
    assert r.status_code == 400 and r.headers["X-Request-Id"] == "req-44"
    assert "X-Request-Id" not in fe.post("/lonely/predict", json={"input": [1.0]}).headers


def test_answers_that_are_not_predictions_are_logged_with_request_ids(cluster: Cluster) -> None:
    fe = cluster.frontend(CONFIG, extra_args=("--log-level", "info"))
    assert fe.post("/lonely/predict", json={"input": [1.0]}, headers={"X-Request-Id": "r-1"}).json()["default"]
    assert fe.post("/lonely/predict", data=b"{nope", headers={"X-Request-Id": "r-2"}).status_code == 400
    deadline = time.monotonic() + 5
    while True:
        lines = [orjson.loads(line) for line in fe.log_tail(100_000).splitlines() if line.startswith("{")]
        by_id = {entry.get("request_id"): entry for entry in lines}
        if {"r-1", "r-2"} <= set(by_id) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert by_id["r-1"]["message"] == "default answer" and by_id["r-1"]["app"] == "lonely"
    assert by_id["r-1"]["reason"] == "No connected models found for query"
    assert by_id["r-2"]["message"] == "error answer" and by_id["r-2"]["status"] == 400
    assert by_id["r-2"]["logger"] == "clipper.query.requests"


def test_request_log_is_off_by_default(cluster: Cluster) -> None:
    fe = cluster.frontend(CONFIG)
    fe.post("/lonely/predict", json={"input": [1.0]}, headers={"X-Request-Id": "r-3"})
    fe.post("/lonely/predict", data=b"{nope")
    # No wait needed: a request-log line is written before its response, so both would be there by now.
    assert "r-3" not in fe.log_tail() and "error answer" not in fe.log_tail()
