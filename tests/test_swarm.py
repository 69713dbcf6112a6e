"""`SwarmContainerManager` on a real three-node Docker Swarm formed on this machine (`swarm_harness`).

Three Docker engines, each in its own network namespace on one bridge, form the swarm; the images are
copied onto them from the main engine. Real services, real overlay network, real predictions over HTTP to
each node's address. Load tests account for every request (`benchmarks.chaos_load`): sent, predictions,
defaults, failures. `pytest -s` prints the counts and timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import REPO, needs_docker

sys.path.insert(0, str(REPO))  # benchmarks/ and tests/ are packages of the repository
from benchmarks.chaos_load import PREDICTION, Counts, LoadDriver  # noqa: E402
from clipper import ClipperConnection, management_client  # noqa: E402
from clipper.deployers import python as python_deployer  # noqa: E402
from clipper.image_names import default_base_image, image_ref  # noqa: E402
from clipper.managers.swarm import SwarmContainerManager  # noqa: E402
from tests import swarm_harness  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.swarm, needs_docker]

#: The images every node gets before the tests (the model images are copied by the manager itself), the
#: deployers' base image under its own name among them: with DOCKER_HOST naming node0, a deployer builds there
#: and would otherwise build the whole image chain on node0 first (two minutes).
IMAGES = [*(image_ref(n) for n in ("query_frontend", "management_frontend", "redis", "python-closure-container")),
          default_base_image()]
SLO_MICROS = 1_000_000


@pytest.fixture(scope="module")
def swarm(current_images: float) -> Iterator[swarm_harness.Swarm]:
    yield from swarm_harness.swarm_session(3, images=IMAGES, labels={"node1": {"gpu": "true"}},
                                           generic_resources={"node1": ["NVIDIA-GPU=GPU-fake-0"]})


def manager(swarm: swarm_harness.Swarm, name: str, **kwargs: Any) -> SwarmContainerManager:
    kwargs.setdefault("insecure", True)
    return SwarmContainerManager(name, docker_client=swarm.manager.client, docker_network=f"{name}-net",
                                 node_engines={n.name: n.client for n in swarm.nodes}, heartbeat_timeout=3.0,
                                 start_timeout=180, **kwargs)


def version_sum(version: int):
    """A model answering ``v<version>:<sum of the input>`` (a closure: pickled by value)."""
    def predict(xs: list) -> list[str]:
        return [f"v{version}:{sum(x)}" for x in xs]
    return predict


def predict(addr: str, app: str, x: list[float], timeout: float = 10) -> dict:
    r = requests.post(f"http://{addr}/{app}/predict", json={"input": x}, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def predict_until_served(addr: str, app: str, x: list[float], within: float = 30) -> dict:
    deadline = time.monotonic() + within
    while True:
        body = predict(addr, app, x)
        if not body["default"]:
            return body
        assert time.monotonic() < deadline, f"{addr} answers only defaults: {body}"
        time.sleep(0.2)


def task_nodes(swarm: swarm_harness.Swarm, service_name: str) -> list[str]:
    """The node names running a task of a service (one entry per running task)."""
    names = {n.id: n.name for n in swarm.nodes}
    service = swarm.manager.client.services.get(service_name)
    return sorted(names.get(t["NodeID"], t["NodeID"]) for t in service.tasks(filters={"desired-state": "running"})
                  if t["Status"]["State"] == "running")


def per_frontend(conn: ClipperConnection, name: str, version: str) -> dict[str, int]:
    return management_client.count_replicas_per_frontend(conn.cm.get_admin_addr(), name, version,
                                                         token=conn.cm.admin_token)


def loads(addrs: list[str], app: str) -> list[LoadDriver]:
    drivers = []
    for addr in addrs:
        host, port = addr.rsplit(":", 1)
        drivers.append(LoadDriver(int(port), app, connections=2, interval_s=0.01, timeout_s=10, host=host).start())
    for d in drivers:
        d.wait_predictions(20, timeout_s=60)
    return drivers


def stop_and_count(drivers: list[LoadDriver], what: str) -> Counts:
    for d in drivers:
        d.stop()
    outcomes = [o for d in drivers for o in d.outcomes()]
    counts = Counts.of(outcomes)
    odd = [f"{o.kind}: {o.detail[:100]}" for o in outcomes if o.kind != PREDICTION][:5]
    print(f"\n[swarm] {what}: {counts} {odd}")
    assert counts.balanced, f"requests went unanswered: {counts}"
    return counts


def test_quickstart_on_the_swarm(swarm: swarm_harness.Swarm) -> None:
    """Clipper's quickstart, verbatim but for the imports and the manager line; stop_all leaves nothing."""
    cm = manager(swarm, "swq")
    clipper_conn = ClipperConnection(cm)
    try:
        t0 = time.monotonic()
        clipper_conn.start_clipper()
        started = time.monotonic() - t0
        clipper_conn.register_application(name="hello-world", input_type="doubles", default_output="-1.0",
                                          slo_micros=100000)

        def feature_sum(xs):
            return [str(sum(x)) for x in xs]

        python_deployer.deploy_python_closure(clipper_conn, name="sum-model", version=1, input_type="doubles",
                                              func=feature_sum)
        clipper_conn.link_model_to_app(app_name="hello-world", model_name="sum-model")
        body = predict_until_served(clipper_conn.get_query_addr(), "hello-world", [1.1, 2.2, 3.3])
        assert body["output"] == pytest.approx(6.6)
        print(f"\n[swarm] quickstart: start_clipper {started:.1f} s, first prediction {time.monotonic() - t0:.1f} s")
        services = sorted(s.name for s in swarm.manager.client.services.list(
            filters={"label": "ai.clipper.container.label=swq"}))
        assert services == ["swq-m-sum-model-1", "swq-mgmt", "swq-query", "swq-redis"]
    finally:
        clipper_conn.stop_all()
    client = swarm.manager.client
    assert client.services.list(filters={"label": "ai.clipper.container.label=swq"}) == []
    assert not client.networks.list(names=["swq-net"])
    assert not client.volumes.list(filters={"name": cm.redis_volume})


def test_images_through_a_registry(swarm: swarm_harness.Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Clipper's `container_registry`, images are pushed from the engine DOCKER_HOST names (node0, as on a
    real cluster) and every node pulls them: no image is copied by the manager."""
    why = swarm_harness.registry_problem()
    if why:
        pytest.skip(why)
    registry = swarm.start_registry()
    monkeypatch.setenv("DOCKER_HOST", swarm.manager.url)
    cm = SwarmContainerManager("swr", docker_network="swr-net", container_registry=registry, insecure=True,
                               heartbeat_timeout=3.0, start_timeout=180)
    conn = ClipperConnection(cm)
    try:
        conn.start_clipper()
        conn.register_application("app", "doubles", "-1.0", SLO_MICROS)
        python_deployer.deploy_python_closure(conn, "m", 1, "doubles", version_sum(1), num_replicas=3)
        conn.link_model_to_app("app", "m")
        assert predict_until_served(conn.get_query_addr(), "app", [1.0, 2.0])["output"] == "v1:3.0"
        for service in ("swr-m-m-1", "swr-query"):
            image = swarm.manager.client.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            assert image.startswith(f"{registry}/"), image
        nodes = task_nodes(swarm, "swr-m-m-1")
        assert len(set(nodes)) >= 2, nodes
        for node in swarm.nodes:
            if node.name in nodes:
                assert node.client.images.list(name=f"{registry}/swr-m"), f"{node.name} did not pull the model"
    finally:
        conn.stop_all()


@pytest.fixture(scope="module")
def cluster3(swarm: swarm_harness.Swarm) -> Iterator[ClipperConnection]:
    """A cluster with a query frontend on each of the three nodes, and app ``app`` with model ``m``."""
    conn = ClipperConnection(manager(swarm, "sw3"))
    conn.start_clipper(num_frontend_replicas=3)
    try:
        conn.register_application("app", "doubles", "-1.0", SLO_MICROS)
        python_deployer.deploy_python_closure(conn, "m", 1, "doubles", version_sum(1), num_replicas=3)
        conn.link_model_to_app("app", "m")
        yield conn
    finally:
        conn.stop_all()


def test_every_frontend_answers_with_every_replica(swarm: swarm_harness.Swarm, cluster3: ClipperConnection) -> None:
    addrs = cluster3.cm.get_query_addrs(refresh=True)
    assert sorted(a.split(":")[0] for a in addrs) == sorted(n.ip for n in swarm.nodes)
    for addr in addrs:
        assert predict_until_served(addr, "app", [1.0, 2.0])["output"] == "v1:3.0"
    nodes = task_nodes(swarm, "sw3-m-m-1")
    assert len(nodes) == 3 and len(set(nodes)) >= 2, f"replicas not spread: {nodes}"
    counts = per_frontend(cluster3, "m", "1")
    assert len(counts) == 3 and set(counts.values()) == {3}, counts


def test_connect_and_logs_from_another_process(swarm: swarm_harness.Swarm, cluster3: ClipperConnection,
                                               tmp_path: Any) -> None:
    code = (
        "import json, sys\n"
        "from clipper import ClipperConnection\n"
        "from clipper.managers.swarm import SwarmContainerManager\n"
        "conn = ClipperConnection(SwarmContainerManager('sw3'))\n"
        "conn.connect()\n"
        f"paths = conn.get_clipper_logs({str(tmp_path)!r})\n"
        "print(json.dumps({'query': conn.cm.get_query_addrs(), 'apps': conn.get_all_apps(),\n"
        "                  'replicas': conn.cm.get_num_replicas('m', '1'), 'logs': paths}))\n"
    )
    env = {"DOCKER_HOST": swarm.manager.url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(found["query"]) == sorted(cluster3.cm.get_query_addrs())
    assert found["apps"] == ["app"] and found["replicas"] == 3
    logs = {p.rsplit("/", 1)[-1]: open(p).read() for p in found["logs"]}
    assert "service_sw3-query.log" in logs and "query frontend listening" in logs["service_sw3-query.log"]


def test_scale_1_6_2_under_load(cluster3: ClipperConnection, tmp_path: Any) -> None:
    conn = cluster3
    conn.set_num_replicas("m", 1, "1")
    drivers = loads(conn.cm.get_query_addrs(), "app")
    t0 = time.monotonic()
    conn.set_num_replicas("m", 6, "1")
    assert set(per_frontend(conn, "m", "1").values()) == {6}
    up = time.monotonic() - t0
    time.sleep(2)
    t1 = time.monotonic()
    conn.set_num_replicas("m", 2, "1")
    down = time.monotonic() - t1
    time.sleep(3)
    counts = stop_and_count(drivers, f"scale 1 -> 6 ({up:.1f} s) -> 2 ({down:.1f} s) under load")
    if counts.default or counts.failed:
        # When, against the phases (the scale up started at 0 s, the scale down at t1), and what the frontends
        # logged about replicas: what the assertion below cannot say.
        odd = sorted(o.sent - t0 for d in drivers for o in d.outcomes() if o.kind != PREDICTION)
        print(f"[swarm] not predictions, sent at {odd[0]:.2f} to {odd[-1]:.2f} s; scale down at {t1 - t0:.2f} s")
        for path in conn.get_clipper_logs(str(tmp_path)):
            lines = [line for line in open(path) if "replica" in line]
            print(f"[swarm] {path.rsplit('/', 1)[-1]}: " + "".join(lines[-20:]))
    assert counts.failed == 0 and counts.default == 0
    assert conn.cm.get_num_replicas("m", "1") == 2


def test_rolling_set_model_version_under_load(cluster3: ClipperConnection) -> None:
    conn = cluster3
    drivers = loads(conn.cm.get_query_addrs(), "app")
    python_deployer.deploy_python_closure(conn, "m", 2, "doubles", version_sum(2), num_replicas=2)
    conn.set_model_version("m", "2")
    addrs = conn.cm.get_query_addrs()
    deadline = time.monotonic() + 30
    while not all(predict(a, "app", [5.0, 1.0])["output"] == "v2:6.0" for a in addrs):
        assert time.monotonic() < deadline, "not every frontend serves version 2"
        time.sleep(0.2)
    time.sleep(1)
    counts = stop_and_count(drivers, "rolling set_model_version 1 -> 2 under load")
    assert counts.failed == 0 and counts.default == 0
    conn.set_model_version("m", "1")
    conn.stop_inactive_model_versions(["m"])


def test_query_frontend_task_killed(swarm: swarm_harness.Swarm, cluster3: ClipperConnection) -> None:
    """One frontend's container is killed: clients of the others see nothing; Swarm starts it again and the
    replicas serve the new one too (they find it by DNS)."""
    conn = cluster3
    victim = swarm.nodes[2]
    others = [a for a in conn.cm.get_query_addrs(refresh=True) if not a.startswith(victim.ip + ":")]
    drivers = loads(others, "app")
    killed = [c for c in victim.client.containers.list(filters={"label": "com.docker.swarm.service.name=sw3-query"})]
    assert len(killed) == 1
    t0 = time.monotonic()
    killed[0].kill()
    addr = f"{victim.ip}:{conn.cm.clipper_query_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if predict(addr, "app", [2.0, 2.0], timeout=2)["output"] == "v1:4.0":
                break
        except (requests.RequestException, AssertionError):
            pass
        assert time.monotonic() < deadline, "the killed frontend was not replaced within 60 s"
        time.sleep(0.2)
    back = time.monotonic() - t0
    time.sleep(1)
    counts = stop_and_count(drivers, f"query frontend task on {victim.name} killed (back with predictions in "
                                     f"{back:.1f} s)")
    assert counts.failed == 0 and counts.default == 0


def test_redis_container_lost(swarm: swarm_harness.Swarm, cluster3: ClipperConnection) -> None:
    """Redis's container is killed: Swarm starts it again on its node with its append-only file; the
    configuration is still there and predictions go on."""
    conn = cluster3
    drivers = loads(conn.cm.get_query_addrs(), "app")
    redis = swarm.manager.client.containers.list(filters={"label": "com.docker.swarm.service.name=sw3-redis"})
    assert len(redis) == 1
    redis[0].kill()
    deadline = time.monotonic() + 60
    while True:
        try:
            if conn.get_all_apps() == ["app"] and conn.get_all_models() and redis[0].id not in {
                    c.id for c in swarm.manager.client.containers.list(
                        filters={"label": "com.docker.swarm.service.name=sw3-redis"})}:
                break
        except Exception:  # noqa: BLE001 - the management frontend waits for Redis meanwhile
            pass
        assert time.monotonic() < deadline, "Redis did not come back with its state within 60 s"
        time.sleep(0.5)
    counts = stop_and_count(drivers, "Redis container killed")
    assert counts.failed == 0 and counts.default == 0


def test_placement_constraints_and_resources(swarm: swarm_harness.Swarm, cluster3: ClipperConnection) -> None:
    """Constraints and limits per model reach the service; a model asking for a GPU runs only where one is
    advertised (node1 advertises a pretend NVIDIA-GPU to the scheduler), whatever the constraints say."""
    conn = cluster3
    conn.cm.model_constraints["labelled"] = ["node.labels.gpu==true"]
    conn.cm.set_model_resources("labelled", cpu_limit=0.5, mem_limit="256m")
    conn.register_application("labelled-app", "doubles", "-1.0", SLO_MICROS)
    python_deployer.deploy_python_closure(conn, "labelled", 1, "doubles", version_sum(0), num_replicas=2)
    conn.link_model_to_app("labelled-app", "labelled")
    assert task_nodes(swarm, "sw3-m-labelled-1") == ["node1", "node1"]
    spec = swarm.manager.client.services.get("sw3-m-labelled-1").attrs["Spec"]["TaskTemplate"]
    assert spec["Placement"]["Constraints"] == ["node.labels.gpu==true"]
    assert spec["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 256 * 1024 ** 2}
    assert predict_until_served(conn.cm.get_query_addr(), "labelled-app", [1.0, 2.0])["output"] == "v0:3.0"

    image = conn.get_model_info("labelled", "1")["container_name"]
    conn.deploy_model("gpu", "1", "doubles", image, gpus=1)
    assert task_nodes(swarm, "sw3-m-gpu-1") == ["node1"]
    spec = swarm.manager.client.services.get("sw3-m-gpu-1").attrs["Spec"]["TaskTemplate"]
    assert spec["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}]
    conn.stop_versioned_models({"labelled": ["1"], "gpu": ["1"]})


def test_worker_node_lost_under_load(swarm: swarm_harness.Swarm, cluster3: ClipperConnection) -> None:
    """A worker's engine is killed (the node is lost) under steady load on the other two nodes' frontends:
    every request is accounted for, Swarm starts the lost replicas on the remaining nodes, and the
    frontends there answer throughout."""
    conn = cluster3
    conn.set_num_replicas("m", 3, "1")
    victim = swarm.nodes[2]
    others = [a for a in conn.cm.get_query_addrs(refresh=True) if not a.startswith(victim.ip + ":")]
    drivers = loads(others, "app")
    t0 = time.monotonic()
    swarm.kill_engine(victim)
    down = swarm.wait_node(victim, "down", timeout=90)
    deadline = time.monotonic() + 90
    while True:
        nodes = task_nodes(swarm, "sw3-m-m-1")
        if len(nodes) == 3 and victim.name not in nodes:
            break
        assert time.monotonic() < deadline, f"replicas not rescheduled: {nodes}"
        time.sleep(0.5)
    moved = time.monotonic() - t0
    time.sleep(2)
    counts = stop_and_count(drivers, f"worker {victim.name} lost (down after {down:.1f} s, replicas on "
                                     f"{nodes} after {moved:.1f} s)")
    assert counts.failed == 0
    assert counts.prediction >= 0.95 * counts.sent
    swarm.restart_engine(victim)
