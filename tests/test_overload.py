"""Overload and departed clients: bounded queues answer 503 at once, and requests whose client has
gone are not sent to the model. Real frontend, real containers, real sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
from conftest import Cluster, Frontend, RawConnection

SLOW = {"CLIPPER_SLEEP_FIXED_MS": "200"}
#: How long the batch in flight takes while abandoned requests wait behind it.
HOLD_MS = 3000


def slow_app(cluster: Cluster, max_queue: int, batch_ms: int = 200):
    config = {
        "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": 10_000_000,
                  "default_output": "-1", "models": ["slow"]}],
        "models": [{"name": "slow", "version": "1", "input_type": "doubles", "batch_size": 1}],
    }
    fe = cluster.frontend(config, extra_args=("--max-queue", str(max_queue)))
    cluster.container(fe, "slow", "sleep", env={"CLIPPER_SLEEP_FIXED_MS": str(batch_ms)})
    fe.wait_replicas("slow", 1)
    return fe


def wait_until(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Polls `condition` until it is true; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.02)


def queued(fe: Frontend) -> int:
    """Requests waiting in the engine's queue of model slow:1 (withdrawn ones too, until a replica pops them)."""
    return fe.metrics().get("model:slow:1:queue_length", 0)


def test_a_full_queue_answers_503_with_retry_after_at_once(cluster: Cluster) -> None:
    fe = slow_app(cluster, max_queue=3)
    results: list[tuple[int, dict, str | None, float]] = []

    def one(i: int) -> None:
        started = time.monotonic()
        r = fe.post("/app/predict", json={"input": [float(i)]})
        results.append((r.status_code, r.json(), r.headers.get("Retry-After"), time.monotonic() - started))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 12
    refused = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    assert len(refused) + len(served) == 12
    assert refused, "some requests are refused"
    assert len(served) >= 4, "what fits (one in flight, three queued) is served"
    for _, body, retry_after, elapsed in refused:
        assert retry_after == "1" and set(body) == {"error", "cause"} and "queue is full" in body["cause"]
        assert elapsed < 1.0, "refused without waiting for the queue"
    assert all(not body["default"] for _, body, _, _ in served)
    assert fe.predict("app", [99.0])["default"] is False, "serves again once the queue drains"


def test_requests_of_a_closed_connection_are_not_sent_to_the_model(cluster: Cluster) -> None:
    """Ten requests wait in the queue behind a batch in flight; their clients go; the model never sees them.

    Each step waits for what it needs and checks it happened, so that a slow machine cannot pass the test
    without the cancellation: the ten must be seen queued in the engine before their connections close, and
    after the queue has emptied the model must have answered only the one batch it had in flight."""
    fe = slow_app(cluster, max_queue=1000, batch_ms=HOLD_MS)
    holder = RawConnection(fe.port)  # its request occupies the only replica for HOLD_MS
    holder.send(RawConnection.request("POST", "/app/predict", b'{"input": [-1.5]}'))
    wait_until(lambda: fe.metrics().get("internal:prediction_cache_lookups", 0) >= 1, "the first request submitted")
    abandoned = []
    for i in range(10):
        conn = RawConnection(fe.port)
        conn.send(RawConnection.request("POST", "/app/predict", f'{{"input": [{i}.5]}}'.encode()))
        abandoned.append(conn)
    # All ten reached the engine's queue (the holder's batch is in flight, so none can be dispatched yet).
    wait_until(lambda: queued(fe) == 10, "ten requests queued", within=HOLD_MS / 1e3 / 2)
    for conn in abandoned:
        conn.close()
    status, _, body = holder.read_response()  # the batch in flight is answered as usual
    holder.close()
    assert status == 200 and not orjson.loads(body)["default"], body
    # The replica is idle again: it pops the withdrawn tasks and drops them, sending nothing.
    wait_until(lambda: queued(fe) == 0, "the queue emptied")
    metrics = fe.metrics()
    assert metrics["model:slow:1:num_predictions"] == 1, f"{metrics['model:slow:1:num_predictions'] - 1} of 10 " \
        "abandoned requests reached the model"
    assert fe.predict("app", [1.0])["default"] is False
    assert fe.metrics()["model:slow:1:num_predictions"] == 2


def test_past_capacity_the_model_serves_requests_that_can_still_make_their_slo(cluster: Cluster) -> None:
    """4x the model's capacity for 3 s: requests that would miss their SLO in the next batch get their
    default at once, so the model keeps answering in time instead of spending every batch on late ones."""
    config = {
        "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": 500_000,
                  "default_output": "-1", "models": ["slow"]}],
        "models": [{"name": "slow", "version": "1", "input_type": "doubles", "batch_size": 1}],
    }
    fe = cluster.frontend(config)
    cluster.container(fe, "slow", "sleep", env=SLOW)  # 200 ms a batch of one: 5 requests/s
    fe.wait_replicas("slow", 1)
    outcomes: list[tuple[bool, float]] = []

    def one(i: int) -> None:
        t0 = time.monotonic()
        r = fe.post("/app/predict", json={"input": [float(i)]})
        outcomes.append((r.json()["default"], time.monotonic() - t0))

    threads = []
    for i in range(60):  # 20 requests/s
        threads.append(threading.Thread(target=one, args=(i,)))
        threads[-1].start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=15)
    predictions = sum(1 for default, _ in outcomes if not default)
    assert len(outcomes) == 60
    # Oldest-first without this would answer a handful in time, then spend each batch on a request
    # already too late (about 2-4 predictions); a model that stays useful answers about 5 a second.
    assert predictions >= 8, f"{predictions} predictions of 60"
    assert max(latency for _, latency in outcomes) < 2.0, "every answer comes by the SLO, give or take"
