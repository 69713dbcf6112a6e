"""Selection policies on the query path: real frontends, real containers of known accuracy, feedback
over HTTP, state shared through Redis.

The `classifier` model answers the class `int(sum(x)) % 2` right for a set fraction of inputs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import Cluster, Frontend, TimeoutSession, free_ports

from clipper.selection import get_policy
from clipper.state import StateStore
from clipper.state.redis_server import RedisServer, redis_server_binary

ACCURACY = {"good": 0.9, "fair": 0.75, "poor": 0.55}


def config(policy: str, slo_micros: int = 500_000, models: tuple[str, ...] = tuple(ACCURACY)) -> dict[str, Any]:
    return {
        "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": slo_micros, "default_output": "-1",
                  "models": list(models), "selection_policy": policy}],
        "models": [{"name": m, "version": "1", "input_type": "doubles"} for m in models],
    }


def start_models(cluster: Cluster, fe: Frontend, accuracy: dict[str, float], slow: dict[str, float] | None = None):
    for seed, (name, acc) in enumerate(accuracy.items()):
        env = {"CLIPPER_ACCURACY": str(acc), "CLIPPER_SEED": str(seed)}
        if slow and name in slow:
            env["CLIPPER_SLEEP_FIXED_MS"] = str(slow[name])
        cluster.container(fe, name, "classifier", env=env)
    for name in accuracy:
        fe.wait_replicas(name, 1)


def feedback(http: requests.Session, url: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        r = http.post(f"{url}/app/update", json={"uid": 0, "input": [float(i)], "label": float(i % 2)})
        assert r.status_code == 200, r.text


def traffic(http: requests.Session, url: str, n: int, start: int = 100_000) -> Counter:
    """Which model answered each of `n` predictions."""
    seen: Counter = Counter()
    for i in range(start, start + n):
        answer = http.post(f"{url}/app/predict", json={"input": [float(i)]}).json()
        assert answer["default"] is False, answer
        seen.update(answer["models"])
    return seen


def test_exp3_sends_most_traffic_to_the_best_model(cluster: Cluster, http: requests.Session) -> None:
    fe = cluster.frontend(config("exp3"))
    start_models(cluster, fe, ACCURACY)
    before = traffic(http, fe.url, 150)
    assert len(before) == 3, f"all models are tried before feedback: {before}"
    feedback(http, fe.url, 3000)
    after = traffic(http, fe.url, 300)
    assert after["good"] >= 0.8 * 300, after


def test_a_model_that_turns_bad_loses_its_traffic(cluster: Cluster, http: requests.Session) -> None:
    fe = cluster.frontend(config("exp3"))
    quality = cluster.workdir / "good-accuracy"
    quality.write_text("0.9")
    for seed, (name, acc) in enumerate(ACCURACY.items()):
        env = {"CLIPPER_SEED": str(seed), "CLIPPER_ACCURACY": str(acc)}
        if name == "good":
            env["CLIPPER_ACCURACY_FILE"] = str(quality)
        cluster.container(fe, name, "classifier", env=env)
    for name in ACCURACY:
        fe.wait_replicas(name, 1)
    feedback(http, fe.url, 2000)
    assert traffic(http, fe.url, 200)["good"] >= 0.8 * 200
    quality.write_text("0.3")  # the best model goes bad
    feedback(http, fe.url, 2500, start=10_000)
    after = traffic(http, fe.url, 200, start=300_000)
    assert after["good"] <= 0.2 * 200 and after.most_common(1)[0][0] == "fair", after


def test_exp4_combines_at_least_as_well_as_the_best_model(cluster: Cluster, http: requests.Session) -> None:
    fe = cluster.frontend(config("exp4"))
    start_models(cluster, fe, ACCURACY)
    feedback(http, fe.url, 1000)
    right = 0
    for i in range(200_000, 201_000):
        answer = http.post(f"{fe.url}/app/predict", json={"input": [float(i)]}).json()
        assert sorted(answer["models"]) == sorted(ACCURACY)
        right += answer["output"] == i % 2
    assert right >= ACCURACY["good"] * 1000, right


def test_epsilon_greedy_and_ucb_converge(cluster: Cluster, http: requests.Session) -> None:
    for policy in ("epsilon_greedy", "ucb"):
        fe = cluster.frontend(config(policy))
        start_models(cluster, fe, ACCURACY)
        feedback(http, fe.url, 1500)
        after = traffic(http, fe.url, 200)
        assert after.most_common(1)[0][0] == "good", (policy, after)


def test_exp4_answers_within_the_slo_without_a_straggler(cluster: Cluster, http: requests.Session) -> None:
    fe = cluster.frontend(config("exp4", slo_micros=150_000))
    start_models(cluster, fe, ACCURACY, slow={"poor": 1000})
    for i in range(5):
        started = time.monotonic()
        answer = http.post(f"{fe.url}/app/predict", json={"input": [float(i)]}).json()
        elapsed = time.monotonic() - started
        assert answer["default"] is False, answer
        assert sorted(answer["models"]) == ["fair", "good"], answer
        assert elapsed < 0.15 + 0.1, elapsed


def test_no_model_answering_gives_the_default(cluster: Cluster, http: requests.Session) -> None:
    fe = cluster.frontend(config("exp4", slo_micros=100_000, models=("a", "b")))
    answer = http.post(f"{fe.url}/app/predict", json={"input": [1.0]}).json()
    assert answer == {"query_id": answer["query_id"], "output": -1, "default": True,
                      "default_explanation": "No connected models found for query"}


redis_only = pytest.mark.skipif(redis_server_binary() is None,
                                reason="redis-server is not installed (apt-get install redis-server)")


@pytest.fixture
def shared(cluster: Cluster) -> Iterator[tuple[Cluster, RedisServer, str]]:
    """Redis, a management frontend with an exp3 app over three models, and its address."""
    with RedisServer(log_path=cluster.workdir / "redis.log") as redis_server:
        (port,) = free_ports(1)
        cluster._spawn([sys.executable, "-m", "clipper.frontend.management", "--redis-port", str(redis_server.port),
                        "--port", str(port)], cluster._log_file("management"))
        admin = f"http://127.0.0.1:{port}/admin"
        with TimeoutSession() as http:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if http.get(f"{admin}/ping").status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert http.post(f"{admin}/add_app", json={
                "name": "app", "input_type": "doubles", "default_output": "-1", "latency_slo_micros": 500_000,
                "selection_policy": "exp3"}).status_code == 200
            for name in ACCURACY:
                assert http.post(f"{admin}/add_model", json={
                    "model_name": name, "model_version": "1", "labels": [], "input_type": "doubles",
                    "container_name": "local", "model_data_path": "", "batch_size": -1}).status_code == 200
            assert http.post(f"{admin}/add_model_links",
                             json={"app_name": "app", "model_names": list(ACCURACY)}).status_code == 200
        yield cluster, redis_server, admin
        cluster.close()


@redis_only
def test_policy_state_is_shared_and_survives_a_restart(shared, http: requests.Session) -> None:
    cluster, redis_server, admin = shared
    ports_b = tuple(free_ports(2))
    a = cluster.frontend(redis_port=redis_server.port)
    b = cluster.frontend(redis_port=redis_server.port, ports=ports_b)
    start_models(cluster, a, ACCURACY)
    start_models(cluster, b, ACCURACY)
    feedback(http, a.url, 3000)  # everything learned through frontend a
    deadline = time.monotonic() + 3
    while True:  # saves go to Redis in the background; none may be lost
        state = http.post(f"{admin}/get_selection_state", json={"app_name": "app", "uid": 0}).json()
        if state.get("t") == 3000 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (state["policy"], state["t"]) == ("exp3", 3000)
    assert traffic(http, b.url, 200)["good"] >= 0.8 * 200, "frontend b uses what a learned"

    b.proc.kill()
    b.proc.wait(timeout=5)
    restarted = cluster.frontend(redis_port=redis_server.port, ports=ports_b)
    restarted.wait_replicas("good", 1)
    assert traffic(http, restarted.url, 200)["good"] >= 0.8 * 200, "the state survives a restart"

    assert http.post(f"{admin}/reset_selection_state", json={"app_name": "app"}).status_code == 200
    deadline = time.monotonic() + 5
    while traffic(http, a.url, 30)["good"] > 0.6 * 30 and time.monotonic() < deadline:
        pass  # until the reset reaches frontend a: the learned preference for "good" is gone
    assert len(traffic(http, a.url, 150)) == 3, "after a reset every model is tried again"


@redis_only
def test_feedback_through_two_frontends_all_counts(cluster: Cluster) -> None:
    """Two query frontends on one Redis, N feedbacks through each at the same time: the state in Redis has
    learned from all 2N, and both frontends end up serving with it.

    Exp4 over two models whose outputs are numbers, 5.0 (`s`, the sum of the input [5.0]) and 1.0 (`one`),
    answers their mean weighted by the state, so a frontend's answer shows the state it serves with."""
    n = 40
    with RedisServer(log_path=cluster.workdir / "redis.log") as redis_server:
        store = StateStore.connect(redis_server.host, redis_server.port)
        store.add_app("app", "doubles", "-1", 5_000_000, policy="exp4")
        for name in ("one", "s"):
            store.add_model(name, "1", "doubles")
        store.add_links("app", ["one", "s"])
        a = cluster.frontend(redis_port=redis_server.port)
        b = cluster.frontend(redis_port=redis_server.port)
        for name, predict in (("s", "sum"), ("one", "noop")):  # one container serves both frontends
            cluster.container(a, name, predict, env={"CLIPPER_PORT": f"{a.rpc_port},{b.rpc_port}"})
        for fe in (a, b):
            fe.wait_replicas("s", 1)
            fe.wait_replicas("one", 1)

        errors: list[str] = []

        def give_feedback(fe: Frontend) -> None:
            with TimeoutSession() as http:
                for _ in range(n):
                    r = http.post(f"{fe.url}/app/update", json={"uid": 0, "input": [5.0], "label": 5.0})
                    if r.status_code != 200:
                        errors.append(r.text)

        threads = [threading.Thread(target=give_feedback, args=(fe,)) for fe in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors

        exp4 = get_policy("exp4")
        deadline = time.monotonic() + 10
        while (stored := exp4.load(store.get_selection_state("app"), ["one", "s"])).t < 2 * n:
            assert time.monotonic() < deadline, f"the state in Redis learned from {stored.t} of {2 * n} feedbacks"
            time.sleep(0.05)
        assert stored.t == 2 * n and [arm.n for arm in stored.arms] == [2 * n, 2 * n]
        assert stored.arm("one").log_weight == pytest.approx(-0.1 * 2 * n)  # `one` was wrong every time
        combined = exp4.combine(stored, {"one": "1.0", "s": "5.0"})
        assert combined is not None
        expected = json.loads(combined.output)
        for fe in (a, b):
            deadline = time.monotonic() + 5
            while (answer := fe.predict("app", [5.0]))["output"] != expected:
                assert time.monotonic() < deadline, f"{fe.url} serves {answer}, not the stored state ({expected})"
                time.sleep(0.05)
            assert answer["default"] is False and sorted(answer["models"]) == ["one", "s"]
        store.close()
