"""The swarm harness (`tests/swarm_harness.py`) forms a real three-node Docker Swarm on this machine: nodes
ready, replicas spread, overlay traffic across nodes, host-mode ports at a node's address, a lost node
seen down and its tasks rescheduled, a cut link, the optional registry, and nothing left after `down()`.

Needs root and a Docker engine (skipped with the reason otherwise); about a minute.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.swarm_harness import (
    BRIDGE,
    DEFAULT_DIR,
    OVERLAY_POOL,
    Swarm,
    leftovers,
    main_engine,
    problem,
    registry_problem,
    swarm_session,
)

REPO = Path(__file__).resolve().parents[1]
PROBLEM = problem()
pytestmark = [pytest.mark.docker, pytest.mark.swarm,
              pytest.mark.skipif(PROBLEM is not None, reason=f"cannot form a Docker swarm here: {PROBLEM}")]

#: Seconds to wait for tasks to run, nodes to change state, ports to answer.
WAIT_S = 60


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - state is being built
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@pytest.fixture(scope="module")
def image() -> str:
    """A small image of ours with python3 (built if missing)."""
    from clipper import images

    ref = images.image_ref("base")
    try:
        main_engine().images.get(ref)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound: build it (minutes)
        return images.ensure_image("base", progress=print, rebuild_stale=False)
    return ref


@pytest.fixture(scope="module")
def swarm(image: str) -> Iterator[Swarm]:
    yield from swarm_session(3, images=[image], labels={"node1": {"gpu": "true"}})


def running(swarm: Swarm, service: Any) -> list[dict[str, Any]]:
    """The service's tasks that run and are meant to, with ``"node"``: the node's name."""
    names = {n.id: n.name for n in swarm.nodes}
    tasks = service.tasks(filters={"desired-state": "running"})
    return [{**t, "node": names.get(t.get("NodeID"), "?")} for t in tasks if t["Status"]["State"] == "running"]


def wait_running(swarm: Swarm, service: Any, count: int, where: Callable[[list[dict[str, Any]]], bool] = bool,
                 ) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        tasks = running(swarm, service)
        return tasks if len(tasks) == count and where(tasks) else None

    return wait_for(f"{count} tasks of {service.name} running", enough)


@pytest.fixture
def new_service(swarm: Swarm) -> Iterator[Callable[..., Any]]:
    """Creates services through the swarm's manager (``new_service(image, command, name=..., **kwargs)``) and
    removes them after the test, waiting until their containers are gone; their tasks stop at once."""
    made: list[Any] = []

    def create(image: str, command: list[str], **kwargs: Any) -> Any:
        made.append(swarm.manager.client.services.create(image, command, stop_signal="SIGKILL", **kwargs))
        return made[-1]

    yield create
    client = swarm.manager.client
    for s in made:
        s.remove()
    for s in made:
        wait_for(f"{s.name}'s containers gone", lambda s=s: not any(
            n.client.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={s.name}"})
            for n in swarm.nodes if n.engine_alive()))
    for net in client.networks.list(filters={"label": "swarm-harness-test"}):
        wait_for(f"network {net.name} removed", lambda net=net: net.remove() is None)


def http_status(url: str) -> int:
    return requests.get(url, timeout=3).status_code


# ----------------------------------------------------------------------------------------------- the swarm


def test_three_ready_nodes(swarm: Swarm) -> None:
    nodes = swarm.manager.client.nodes.list()
    assert len(nodes) == 3
    seen = {n.attrs["Description"]["Hostname"]: n.attrs for n in nodes}
    assert sorted(seen) == ["node0", "node1", "node2"]
    for node in swarm.nodes:
        attrs = seen[node.name]
        assert attrs["ID"] == node.id == node.client.info()["Swarm"]["NodeID"]
        assert attrs["Status"]["State"] == "ready"
        assert attrs["Status"]["Addr"] == node.ip
        assert attrs["Spec"]["Role"] == ("manager" if node.manager else "worker")
        assert node.socket.is_socket()
    assert seen["node0"]["ManagerStatus"]["Leader"] is True
    assert seen["node1"]["Spec"]["Labels"] == {"gpu": "true"}
    # every node answers at its address from the host (the gossip port)
    for node in swarm.nodes:
        socket.create_connection((node.ip, 7946), timeout=3).close()
    print(f"\n[swarm] timings {swarm.timings}\n[swarm] memory (MiB) {swarm.memory()}")


def test_replicas_spread_over_nodes(swarm: Swarm, image: str, new_service: Callable[..., Any]) -> None:
    from docker.types import ServiceMode

    service = new_service(image, ["sleep", "infinity"], name="spread", mode=ServiceMode("replicated", replicas=3))
    tasks = wait_running(swarm, service, 3)
    assert len({t["node"] for t in tasks}) >= 2, tasks


def test_overlay_network_across_nodes(swarm: Swarm, image: str, new_service: Callable[..., Any]) -> None:
    """A container on node0 reaches a task on node2 over an overlay network (by the task's DNS name)."""
    from docker.types import EndpointSpec

    client = swarm.manager.client
    client.networks.create("harness-overlay", driver="overlay", attachable=True, labels={"swarm-harness-test": "1"})
    service = new_service(image, ["python3", "-m", "http.server", "8000"], name="echo", networks=["harness-overlay"],
                          constraints=["node.hostname == node2"], endpoint_spec=EndpointSpec(mode="dnsrr"))
    [task] = wait_running(swarm, service, 1)
    assert task["node"] == "node2"
    probe = ("import socket, urllib.request\n"
             "ip = socket.gethostbyname('tasks.echo')\n"
             "print(ip, urllib.request.urlopen(f'http://{ip}:8000/', timeout=5).status)\n")

    def fetch() -> str:
        return swarm.node("node0").client.containers.run(image, ["python3", "-c", probe], network="harness-overlay",
                                                          remove=True).decode()

    out = wait_for("a container on node0 fetches from the task on node2", fetch, timeout=30, interval=1)
    ip, status = out.split()
    assert status == "200"
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(OVERLAY_POOL)
    [attachment] = [a for a in task["NetworksAttachments"] if a["Network"]["Spec"]["Name"] == "harness-overlay"]
    assert any(a.startswith(ip + "/") for a in attachment["Addresses"])


def test_host_mode_port_answers_at_the_nodes_address(swarm: Swarm, image: str,
                                                     new_service: Callable[..., Any]) -> None:
    """Placed by a node label (node1 has gpu=true), published in host mode: node1's address answers,
    node0's does not (no routing mesh here)."""
    from docker.types import EndpointSpec

    service = new_service(image, ["python3", "-m", "http.server", "8000"], name="web",
                          constraints=["node.labels.gpu == true"],
                          endpoint_spec=EndpointSpec(mode="dnsrr", ports={18080: (8000, "tcp", "host")}))
    [task] = wait_running(swarm, service, 1)
    assert task["node"] == "node1"
    node1, node0 = swarm.node("node1"), swarm.node("node0")
    assert wait_for("node1's port answers", lambda: http_status(f"http://{node1.ip}:18080/") == 200)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{node0.ip}:18080/", timeout=3)


def test_registry_serves_images_to_the_nodes(swarm: Swarm, image: str, new_service: Callable[..., Any]) -> None:
    """Pushed from node0's engine to the harness's registry, pulled by node2 for a task there."""
    if registry_problem():
        pytest.skip(registry_problem())
    pushed = swarm.push_images([image], via="node0")[image]
    assert pushed.startswith(f"{swarm.registry}/")
    node2 = swarm.node("node2")
    with pytest.raises(Exception, match="No such image|not found"):
        node2.client.images.get(pushed)
    service = new_service(pushed, ["sleep", "infinity"], name="pulled", constraints=["node.hostname == node2"])
    wait_running(swarm, service, 1)
    assert node2.client.images.get(pushed).id == node2.client.images.get(image).id


# ------------------------------------------------------------------------------------------------- faults


def test_killed_engine_is_down_and_its_tasks_move(swarm: Swarm, image: str, new_service: Callable[..., Any]) -> None:
    from docker.types import ServiceMode

    service = new_service(image, ["sleep", "infinity"], name="victims", mode=ServiceMode("replicated", replicas=3))
    tasks = wait_running(swarm, service, 3)
    victim = swarm.node(next(t["node"] for t in tasks if t["node"] != swarm.manager.name))
    lost = {t["ID"] for t in tasks if t["node"] == victim.name}
    assert victim.pids()
    killed = swarm.kill_engine(victim)
    assert killed >= 3  # dockerd, containerd, a shim, the task's process...
    assert victim.pids() == []
    with pytest.raises(ConnectionRefusedError):  # its address is up, nothing answers: a lost node
        socket.create_connection((victim.ip, 7946), timeout=3)
    took = swarm.wait_node(victim, "down")
    print(f"\n[swarm] {victim.name} seen down {took:.1f} s after its engine was killed")
    moved = wait_running(swarm, service, 3, where=lambda ts: all(t["node"] != victim.name for t in ts))
    assert not lost & {t["ID"] for t in moved}
    swarm.restart_engine(victim)
    assert swarm.node_states() == {"node0": "ready", "node1": "ready", "node2": "ready"}


def test_cut_link_makes_the_node_unreachable(swarm: Swarm) -> None:
    node = swarm.node("node2")
    swarm.cut_link(node)
    try:
        with pytest.raises(OSError):
            socket.create_connection((node.ip, 7946), timeout=2)
        assert node.engine_alive()  # the engine runs on, unreachable
        took = swarm.wait_node(node, "down")
        print(f"\n[swarm] {node.name} seen down {took:.1f} s after its link was cut")
    finally:
        swarm.restore_link(node)
    swarm.wait_node(node, "ready")
    socket.create_connection((node.ip, 7946), timeout=3).close()


# ----------------------------------------------------------------------------------------------- teardown


def _host_state() -> dict[str, str]:
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout

    return {"netns": out("ip", "netns", "list"), "links": out("ip", "-o", "link", "show"),
            "forward": out("iptables", "-w", "-S", "FORWARD"), "mounts": Path("/proc/mounts").read_text(),
            "processes": out("ps", "-eo", "args")}


def _assert_nothing_left() -> None:
    assert {k: v for k, v in leftovers().items() if v} == {}
    state = _host_state()
    assert "clipper-swarm" not in state["netns"]
    assert "csw-" not in state["links"] and BRIDGE not in state["links"]
    assert "clipper-swarm" not in state["forward"] and BRIDGE not in state["forward"]
    assert str(DEFAULT_DIR) not in state["mounts"]
    assert str(DEFAULT_DIR) not in state["processes"]
    assert not DEFAULT_DIR.exists()


def test_down_leaves_nothing(swarm: Swarm) -> None:
    """Last of the module: takes the swarm down (the fixture's own `down()` then finds nothing to do)."""
    swarm.down()
    _assert_nothing_left()
    swarm.down()  # idempotent
    _assert_nothing_left()


def test_up_removes_what_a_previous_run_left(swarm: Swarm) -> None:
    """A swarm left by another process (the command line's ``up`` exits and leaves it running) is removed by
    the next `up()`, and that one's `down()` leaves nothing."""
    swarm.down()  # (done already when test_down_leaves_nothing ran) lets another process form one
    subprocess.run([sys.executable, "-m", "tests.swarm_harness", "up", "-n", "1"], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    assert leftovers()["processes"] and leftovers()["netns"] == ["clipper-swarm-node0"]
    swarm = Swarm(progress=print).up(2)
    try:
        assert len(swarm.node_states()) == 2
    finally:
        swarm.down()
    _assert_nothing_left()
