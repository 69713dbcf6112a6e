"""The query frontend following Redis: changes made through the management API are served within a
second, replicas are recorded, and a restarted frontend serves again from Redis state.

Real processes throughout: redis-server, the management frontend, query frontends, model containers.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from conftest import Cluster, Frontend, TimeoutSession, free_ports

from clipper.state import StateStore
from clipper.state.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.skipif(redis_server_binary() is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

PROPAGATION_S = 1.0


class Admin:
    """The management API over HTTP."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/admin"
        self.http = TimeoutSession()

    def __call__(self, route: str, **body: Any) -> Any:
        response = self.http.post(f"{self.url}/{route}", json=body)
        assert response.status_code == 200, response.text
        return response.json() if route.startswith("get_") else response.text


@pytest.fixture
def stack(cluster: Cluster) -> Iterator[tuple[Cluster, RedisServer, Admin]]:
    with RedisServer(log_path=cluster.workdir / "redis.log") as redis_server:
        (port,) = free_ports(1)
        argv = [sys.executable, "-m", "clipper.frontend.management", "--redis-port", str(redis_server.port),
                "--port", str(port)]
        cluster._spawn(argv, cluster._log_file("management"))
        admin = Admin(port)
        deadline = time.monotonic() + 15
        while True:
            try:
                if admin.http.get(f"{admin.url}/ping").status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "management frontend did not start"
            time.sleep(0.05)
        yield cluster, redis_server, admin
        cluster.close()


def eventually(check: Callable[[], Any], within: float = PROPAGATION_S) -> Any:
    """Polls `check` until it returns a truthy value; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {within} s"
        time.sleep(0.02)


def output_of(fe: Frontend, app: str, value: Any) -> dict[str, Any]:
    """The answer to one predict; `{"status": code}` when it is not a 200 (e.g. 404 before the app is loaded)."""
    response = fe.post(f"/{app}/predict", json={"input": value})
    return response.json() if response.status_code == 200 else {"status": response.status_code}


def add_model(admin: Admin, name: str, version: str, input_type: str = "doubles") -> None:
    admin("add_model", model_name=name, model_version=version, labels=[], input_type=input_type,
          container_name="local", model_data_path="", batch_size=-1)


def test_app_changes_are_served_within_a_second(stack):
    cluster, redis_server, admin = stack
    fe = cluster.frontend(redis_port=redis_server.port)
    admin("add_app", name="app", input_type="doubles", default_output="-1.0", latency_slo_micros=2_000_000)
    eventually(lambda: output_of(fe, "app", [1.0]) != {"status": 404})
    answer = output_of(fe, "app", [1.0])
    assert (answer["default"], answer["default_explanation"]) == (True, "No connected models found for query")

    add_model(admin, "m", "1")
    cluster.container(fe, "m", "sum", version="1")
    fe.wait_replicas("m", 1, version="1")
    admin("add_model_links", app_name="app", model_names=["m"])
    eventually(lambda: output_of(fe, "app", [1.0, 2.0]).get("output") == 3.0)

    add_model(admin, "m", "2")  # a new version becomes current at once
    cluster.container(fe, "m", "echo_len", version="2")
    fe.wait_replicas("m", 1, version="2")
    eventually(lambda: output_of(fe, "app", [5.0, 6.0, 7.0]).get("output") == 3)

    admin("set_model_version", model_name="m", model_version="1")  # rollback
    eventually(lambda: output_of(fe, "app", [5.0, 6.0, 7.5]).get("output") == 18.5)
    assert fe.post("/app/predict", json={"input": [1.0], "version": "2"}).json()["output"] == 1

    admin("delete_model_links", app_name="app", model_names=["m"])
    eventually(lambda: output_of(fe, "app", [9.0]).get("default") is True)

    admin("delete_app", name="app")
    eventually(lambda: output_of(fe, "app", [9.0]) == {"status": 404})


def test_deleting_the_current_version_answers_no_connected_model(stack):
    cluster, redis_server, admin = stack
    fe = cluster.frontend(redis_port=redis_server.port)
    admin("add_app", name="app", input_type="doubles", default_output="0.0", latency_slo_micros=1_000_000)
    add_model(admin, "m", "1")
    admin("add_model_links", app_name="app", model_names=["m"])
    cluster.container(fe, "m", "sum")
    fe.wait_replicas("m", 1)
    eventually(lambda: output_of(fe, "app", [4.0]).get("output") == 4.0)
    admin("delete_versioned_model", model_name="m", model_version="1")
    answer = eventually(lambda: (a := output_of(fe, "app", [5.0])).get("default") and a)
    assert answer["default_explanation"] == "No connected models found for query"


def test_rollback_under_load_fails_no_request(stack):
    cluster, redis_server, admin = stack
    fe = cluster.frontend(redis_port=redis_server.port)
    admin("add_app", name="app", input_type="doubles", default_output="-1.0", latency_slo_micros=2_000_000)
    for version, model in (("1", "sum"), ("2", "echo_len")):
        add_model(admin, "m", version)
        cluster.container(fe, "m", model, version=version)
        fe.wait_replicas("m", 1, version=version)
    admin("add_model_links", app_name="app", model_names=["m"])
    eventually(lambda: output_of(fe, "app", [1.0]).get("default") is False)

    answers: list[Any] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with TimeoutSession() as http:
            i = 0
            while not stop.is_set():
                i += 1
                r = http.post(f"{fe.url}/app/predict", json={"input": [float(worker), float(i), 0.5]})
                answers.append(r.json() if r.status_code == 200 else r.status_code)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for version in ("1", "2", "1", "2", "1"):
            admin("set_model_version", model_name="m", model_version=version)
            time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert len(answers) > 100
    failed = [a for a in answers if not isinstance(a, dict) or a["default"]]
    assert failed == []
    outputs = {type(a["output"]) for a in answers}
    assert outputs == {int, float}, "both versions answered during the run"


def test_replicas_are_recorded_and_dropped(stack):
    cluster, redis_server, admin = stack
    fe = cluster.frontend(redis_port=redis_server.port, heartbeat_timeout=1.5)
    add_model(admin, "m", "1")
    first = cluster.container(fe, "m", "sum")
    cluster.container(fe, "m", "sum")
    eventually(lambda: admin("get_all_containers", verbose=False) == ["m:1:0", "m:1:1"], within=10)
    info = admin("get_container", model_name="m", model_version="1", replica_id=0)
    assert info == {"model_id": "m:1", "model_name": "m", "model_version": "1", "model_replica_id": 0,
                    "input_type": "doubles", "frontend_id": f"127.0.0.1:{fe.port}/{fe.rpc_port}"}
    first.send_signal(signal.SIGKILL)
    eventually(lambda: len(admin("get_all_containers", verbose=False)) == 1, within=5)


def test_restarted_query_frontend_serves_again_from_redis(stack):
    cluster, redis_server, admin = stack
    ports = tuple(free_ports(2))
    fe = cluster.frontend(redis_port=redis_server.port, ports=ports)
    admin("add_app", name="app", input_type="doubles", default_output="-1.0", latency_slo_micros=1_000_000)
    add_model(admin, "m", "1")
    admin("add_model_links", app_name="app", model_names=["m"])
    cluster.container(fe, "m", "sum")
    fe.wait_replicas("m", 1)
    eventually(lambda: output_of(fe, "app", [2.0]).get("output") == 2.0)

    fe.proc.send_signal(signal.SIGKILL)
    fe.proc.wait(timeout=5)
    restarted = cluster.frontend(redis_port=redis_server.port, ports=ports)
    # The app comes from Redis; the container re-registers by heartbeat with the new process.
    eventually(lambda: output_of(restarted, "app", [3.0, 4.0]).get("output") == 7.0, within=15)
    # Exactly one record: the stale one of the killed process is gone, the re-registered replica is there.
    store = StateStore.connect("127.0.0.1", redis_server.port)
    fresh = f"127.0.0.1:{ports[0]}/{ports[1]}#{restarted.proc.pid}#"
    eventually(lambda: [r["connection_id"][:len(fresh)] for r in store.get_replicas()] == [fresh], within=5)
    store.close()
