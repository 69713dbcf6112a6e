"""`DockerContainerManager` on the local Docker engine (no registry: images are built by `clipper.images`).

Clipper's quickstart with only the imports (and the manager's arguments) changed, scaling 1 -> 3 -> 1
under load, a killed replica, `connect()` from another Python process, two clusters at once, logs, a
model that fails to start, `pkgs_to_install` without network, a Redis that crashes or is killed (its
volume and restart policy), `stop_all(keep_state=True)`; `stop_all()` must leave no container,
network, volume or listening port behind. Every test uses its own cluster name, network and free host ports,
and removes everything labelled with its cluster at the end, whatever happens.

Skipped when the Docker engine does not answer. Missing images are built first (minutes, once).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import needs_docker

from clipper import ClipperConnection, ClipperException, DockerContainerManager
from clipper.deployers import python as python_deployer
from clipper.managers.base import CLIPPER_DOCKER_LABEL, CLIPPER_MODEL_CONTAINER_LABEL
from clipper.managers.docker import CLIPPER_NETWORK_LABEL
from clipper.ports import free_ports

REPO = Path(__file__).resolve().parents[1]
HTTP_TIMEOUT_S = 30.0
PROPAGATION_S = 20.0
#: Images a cluster with a Python closure needs.
IMAGES = ("clipper/redis:0.4.1", "clipper/management_frontend:0.4.1", "clipper/query_frontend:0.4.1",
          "clipper/python311-closure-container:0.4.1")
#: Latency objective of the module cluster's app: long enough for the engine to requeue the batch of a
#: replica that was dropped after the heartbeat timeout (5 s), so that no request gets the default.
MODULE_SLO_MICROS = 15_000_000
#: Time the module cluster's model takes per batch, and the number of clients of the load tests: enough
#: for every replica to be busy, so that replicas are stopped or killed in the middle of a batch.
BATCH_SECONDS = 0.01
LOAD_THREADS = 8




pytestmark = [pytest.mark.docker, needs_docker]


# ---------------------------------------------------------------------- helpers



def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=120)


def cluster_containers(cluster: str) -> list[Any]:
    return docker_client().containers.list(all=True, filters={"label": f"{CLIPPER_DOCKER_LABEL}={cluster}"})


def network_exists(name: str) -> bool:
    return bool(docker_client().networks.list(names=[name]))


def volume_exists(name: str) -> bool:
    return any(v.name == name for v in docker_client().volumes.list(filters={"name": name}))


def purge(cluster: str, network: str) -> None:
    """Whatever a test leaves behind: the cluster's containers (killed, removed), its network, its model images."""
    with contextlib.suppress(Exception):
        DockerContainerManager(cluster_name=cluster, docker_network=network).stop_all(graceful=False)
    client = docker_client()
    for c in cluster_containers(cluster):
        with contextlib.suppress(Exception):
            c.remove(force=True, v=True)
    for net in client.networks.list(names=[network]):
        with contextlib.suppress(Exception):
            net.remove()
    for volume in client.volumes.list(filters={"label": f"{CLIPPER_DOCKER_LABEL}={cluster}"}):
        with contextlib.suppress(Exception):
            volume.remove(force=True)
    for image in client.images.list():  # the model images built for the cluster: <cluster>-<model>:<version>
        for tag in image.tags:
            if tag.startswith(f"{cluster.lower()}-"):
                with contextlib.suppress(Exception):
                    client.images.remove(tag, noprune=False)


@dataclass
class Cluster:
    name: str
    network: str
    ports: dict[str, int]
    cm: DockerContainerManager
    conn: ClipperConnection
    started_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.conn.get_query_addr()}"

    def frontend_replicas(self, model: str, version: str = "1") -> int:
        report = requests.get(f"{self.url}/metrics", timeout=HTTP_TIMEOUT_S).json()
        for entry in report.get("counters", []):
            key = f"model:{model}:{version}:num_replicas"
            if key in entry:
                return int(entry[key]["count"])
        return 0

    def wait_frontend_replicas(self, model: str, n: int, timeout: float = 30.0) -> float:
        """Seconds until the query frontend counts `n` replicas of ``model:1``."""
        start = time.monotonic()
        while (seen := self.frontend_replicas(model)) != n:
            assert time.monotonic() - start < timeout, f"{model}: frontend counts {seen} replicas, expected {n}"
            time.sleep(0.05)
        return time.monotonic() - start

    def model_containers(self, model: str) -> list[Any]:
        return docker_client().containers.list(filters={"label": [
            f"{CLIPPER_DOCKER_LABEL}={self.name}", f"{CLIPPER_MODEL_CONTAINER_LABEL}={model}_1"]})


def new_cluster(prefix: str, **options: Any) -> Cluster:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    network = f"{name}-net"
    query, mgmt, rpc, redis = free_ports(4)
    cm = DockerContainerManager(cluster_name=name, clipper_query_port=query, clipper_management_port=mgmt,
                                clipper_rpc_port=rpc, redis_port=redis, docker_network=network,
                                **{"use_prometheus": False, **options})  # tests/test_prometheus.py runs it
    return Cluster(name, network, {"query": query, "management": mgmt, "rpc": rpc, "redis": redis}, cm,
                   ClipperConnection(cm, health_check_timeout=120))


def predict(url: str, app: str, value: Any, session: Any = requests) -> requests.Response:
    return session.post(f"{url}/{app}/predict", headers={"Content-type": "application/json"},
                        data=json.dumps({"input": value}), timeout=HTTP_TIMEOUT_S)


def predict_until_served(url: str, app: str, value: Any, session: Any = requests) -> dict[str, Any]:
    """POSTs until the model answers (not the default output: links propagate through Redis)."""
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        r = predict(url, app, value, session)
        assert r.status_code in (200, 404), (r.status_code, r.text)
        if r.status_code == 200 and r.json()["default"] is False:
            return r.json()
        assert time.monotonic() < deadline, f"{app}: still no model answer after {PROPAGATION_S} s: {r.text}"
        time.sleep(0.05)


def deploy_sum(conn: ClipperConnection, app: str, model: str, slo_micros: int, num_replicas: int = 1,
               batch_seconds: float = 0.0) -> None:
    """App `app` -> model `model` (sum of the inputs, taking `batch_seconds` per batch, like a real model)."""
    conn.register_application(name=app, input_type="doubles", default_output="-1.0", slo_micros=slo_micros)

    def feature_sum(xs):
        if batch_seconds:
            import time

            time.sleep(batch_seconds)
        return [str(sum(x)) for x in xs]

    python_deployer.deploy_python_closure(conn, name=model, version=1, input_type="doubles", func=feature_sum,
                                          num_replicas=num_replicas)
    conn.link_model_to_app(app_name=app, model_name=model)


#: Inputs of the load generators, never repeated in a run (the prediction cache would answer repeats).
_INPUTS = itertools.count()


@dataclass
class Load:
    """Threads POSTing predictions to one app without pause; every answer is recorded."""

    url: str
    app: str
    threads: int = LOAD_THREADS
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[float, int, bool, Any]] = field(default_factory=list)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with requests.Session() as s:
            while not self.stop.is_set():
                k = next(_INPUTS)  # a new input every time: no answer comes from the prediction cache
                t0 = time.monotonic()
                try:
                    r = predict(self.url, self.app, [float(k), 1.0, 2.0], s)
                    body = r.json() if r.status_code == 200 else {}
                    self.results.append((time.monotonic() - t0, r.status_code,
                                         bool(body.get("default", True)) or body.get("output") != k + 3.0,
                                         body.get("output", r.text[:200])))
                except requests.RequestException as e:
                    self.results.append((time.monotonic() - t0, 0, True, str(e)))

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._workers:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._workers:
            t.join(timeout=HTTP_TIMEOUT_S + 5)

    def failures(self) -> list[tuple[float, int, bool, Any]]:
        """Answers that are not 200 with the model's output (default outputs, errors, wrong sums)."""
        return [r for r in self.results if r[1] != 200 or r[2]]

    def summary(self) -> str:
        lat = sorted(r[0] for r in self.results)
        if not lat:
            return "no requests"
        failed = self.failures()
        defaults = sum(1 for r in failed if r[1] == 200)
        slow = sum(1 for r in self.results if r[0] > 1.0)
        return (f"{len(lat)} requests, {len(failed)} failed ({defaults} default outputs), {slow} slower than 1 s, "
                f"p50 {1000 * lat[len(lat) // 2]:.1f} ms, max {1000 * lat[-1]:.0f} ms")


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def images_ready(current_images: float) -> float:
    """The default images, up to date with this checkout (`conftest.current_images`); the seconds that took."""
    return current_images


@pytest.fixture(scope="module")
def cluster(images_ready: float) -> Iterator[Cluster]:
    """One cluster for several tests: app ``sum-app`` -> model ``sum`` (one replica)."""
    c = new_cluster("dcm")
    try:
        t0 = time.monotonic()
        c.conn.start_clipper()
        c.started_s = time.monotonic() - t0
        deploy_sum(c.conn, "sum-app", "sum", MODULE_SLO_MICROS, batch_seconds=BATCH_SECONDS)
        predict_until_served(c.url, "sum-app", [1.0, 2.0, 3.0])
        yield c
    finally:
        try:
            c.conn.stop_all()
        finally:
            purge(c.name, c.network)


# ---------------------------------------------------------------------- tests


def test_host_network_is_rejected() -> None:
    with pytest.raises(ClipperException, match='"host" docker network'):
        DockerContainerManager(docker_network="host")


def test_quickstart_and_stop_all_leaves_nothing(images_ready: float) -> None:
    """Clipper's quickstart, verbatim but for the imports and the manager's arguments; timed."""
    c = new_cluster("dcm-quickstart")
    clipper_conn = c.conn
    try:
        t0 = time.monotonic()
        clipper_conn.start_clipper()
        t_started = time.monotonic() - t0
        clipper_conn.register_application(name="hello-world", input_type="doubles", default_output="-1.0",
                                          slo_micros=100000)

        def feature_sum(xs):
            return [str(sum(x)) for x in xs]

        python_deployer.deploy_python_closure(clipper_conn, name="sum-model", version=1, input_type="doubles",
                                              func=feature_sum)
        clipper_conn.link_model_to_app(app_name="hello-world", model_name="sum-model")
        body = predict_until_served(c.url, "hello-world", [1.1, 2.2, 3.3])
        t_first = time.monotonic() - t0
        assert body["output"] == pytest.approx(6.6) and body["default"] is False
        built = "images built first" if images_ready > 1 else "images already built"
        print(f"\n[docker] nothing -> first prediction: {t_first:.1f} s ({built}: +{images_ready:.0f} s; "
              f"start_clipper {t_started:.1f} s)")

        # what runs: Clipper's names, labels, and ports published on 127.0.0.1 only
        containers = {c_.name.rsplit("-", 1)[0]: c_ for c_ in cluster_containers(c.name)}
        assert sorted(containers) == ["mgmt_frontend", "query_frontend", "redis", "sum-model_1"]
        for container in containers.values():
            assert container.labels[CLIPPER_DOCKER_LABEL] == c.name
            assert list(container.attrs["NetworkSettings"]["Networks"]) == [c.network]
            for bindings in (container.attrs["HostConfig"].get("PortBindings") or {}).values():
                assert all(b["HostIp"] == "127.0.0.1" for b in bindings)
        qf = containers["query_frontend"]
        assert qf.labels["ai.clipper.query_frontend.query.port"] == str(c.ports["query"])
        assert qf.labels["ai.clipper.query_frontend.rpc.port"] == str(c.ports["rpc"])
        model = containers["sum-model_1"]
        env = dict(e.split("=", 1) for e in model.attrs["Config"]["Env"])
        assert env["CLIPPER_IP"] == qf.name and env["CLIPPER_PORT"] == "7000"
        assert model.labels[CLIPPER_MODEL_CONTAINER_LABEL] == "sum-model_1"
        assert model.attrs["Config"]["Image"] == f"{c.name}-sum-model:1"
        assert docker_client().networks.get(c.network).attrs["Labels"][CLIPPER_NETWORK_LABEL] == c.name
        for port in c.ports.values():
            assert listening(port)

        t1 = time.monotonic()
        clipper_conn.stop_all()
        print(f"[docker] stop_all: {time.monotonic() - t1:.1f} s")
        assert cluster_containers(c.name) == []
        assert not network_exists(c.network)
        assert not volume_exists(c.cm.redis_volume)
        for port in c.ports.values():
            assert not listening(port), f"port {port} still listening after stop_all()"
    finally:
        purge(c.name, c.network)


def test_scale_1_3_1_under_load(cluster: Cluster) -> None:
    conn = cluster.conn
    with Load(cluster.url, "sum-app") as load:
        time.sleep(1.0)
        t0 = time.monotonic()
        conn.set_num_replicas("sum", 3)
        up = time.monotonic() - t0
        assert conn.get_num_replicas("sum") == 3
        assert cluster.frontend_replicas("sum") >= 3  # set_num_replicas returned after registration
        time.sleep(2.0)
        t0 = time.monotonic()
        conn.set_num_replicas("sum", 1)
        down = time.monotonic() - t0
        assert conn.get_num_replicas("sum") == 1
        dropped = cluster.wait_frontend_replicas("sum", 1)
        time.sleep(2.0)
    print(f"\n[docker] scale 1->3: {up:.1f} s; 3->1: {down:.1f} s (+{dropped:.1f} s until the frontend dropped "
          f"them); load: {load.summary()}")
    assert len(load.results) > 50
    assert load.failures() == [], load.summary()


def test_killed_replica_is_dropped_and_app_still_served(cluster: Cluster) -> None:
    conn = cluster.conn
    conn.set_num_replicas("sum", 2)
    victim = cluster.model_containers("sum")[0]
    with Load(cluster.url, "sum-app") as load:
        time.sleep(1.0)
        n_before = len(load.results)
        victim.kill()
        dropped = cluster.wait_frontend_replicas("sum", 1, timeout=20)
        n_kill = len(load.results)
        time.sleep(2.0)
    after = load.results[n_kill:]
    print(f"\n[docker] killed {victim.name}: dropped by the frontend after {dropped:.1f} s; "
          f"load: {load.summary()}")
    assert conn.get_num_replicas("sum") == 1
    assert n_before > 0 and len(after) > 10 and all(r[1] == 200 and not r[2] for r in after)
    assert load.failures() == [], load.summary()
    victim.reload()
    assert victim.status == "exited"  # kept (its log can be read) until stop_all
    conn.set_num_replicas("sum", 1)  # the killed one does not count
    assert conn.get_num_replicas("sum") == 1


def test_connect_from_another_process(cluster: Cluster) -> None:
    script = (
        "import json, sys\n"
        "from clipper import ClipperConnection, DockerContainerManager\n"
        "conn = ClipperConnection(DockerContainerManager(cluster_name=sys.argv[1]))\n"
        "conn.connect()\n"
        "print(json.dumps({'query': conn.get_query_addr(), 'admin': conn.cm.get_admin_addr(),\n"
        "                  'admin_token': conn.cm.admin_token,\n"
        "                  'models': conn.get_all_models(), 'replicas': conn.get_num_replicas('sum'),\n"
        "                  'network': conn.cm.docker_network,\n"
        "                  'clipper': {a: getattr(conn.cm, a) for a in ('cluster_name', 'cluster_identifier',\n"
        "                      'public_hostname', 'clipper_query_port', 'clipper_management_port',\n"
        "                      'clipper_rpc_port', 'redis_port', 'prometheus_port', 'external_redis',\n"
        "                      'centralize_log', 'logging_system',\n"
        "                      'logging_system_instance', 'log_config')}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CLIPPER_ADMIN_TOKEN"}
    out = subprocess.run([sys.executable, "-c", script, cluster.name], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["query"] == f"localhost:{cluster.ports['query']}"
    assert seen["admin"] == f"localhost:{cluster.ports['management']}"
    assert "sum:1" in seen["models"]
    assert seen["replicas"] == cluster.conn.get_num_replicas("sum")
    assert seen["network"] == cluster.network
    assert seen["admin_token"] == cluster.cm.admin_token, "connect() reads the drawn token back"
    # Clipper's public attributes, as connect() in another process finds them
    assert seen["clipper"] == {
        "cluster_name": cluster.name, "cluster_identifier": cluster.name, "public_hostname": "localhost",
        "clipper_query_port": cluster.ports["query"], "clipper_management_port": cluster.ports["management"],
        "clipper_rpc_port": cluster.cm.clipper_rpc_port, "redis_port": cluster.cm.redis_port,
        "prometheus_port": cluster.cm.prometheus_port, "external_redis": False, "centralize_log": False,
        "logging_system": None, "logging_system_instance": None, "log_config": cluster.cm.log_config,
    }
    assert seen["clipper"]["log_config"]["type"] == "json-file"
    admin = f"http://localhost:{cluster.ports['management']}/admin/get_all_models"
    assert requests.post(admin, json={}, timeout=HTTP_TIMEOUT_S).status_code == 401

    other = DockerContainerManager(cluster_name=f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ClipperException, match="No running Docker Clipper cluster named"):
        other.connect()


def test_start_refuses_a_running_cluster(cluster: Cluster) -> None:
    twin = DockerContainerManager(cluster_name=cluster.name, docker_network=cluster.network)
    with pytest.raises(ClipperException, match="already exists"):
        twin.start_clipper()


def test_get_clipper_logs(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.cm.centralize_log is False  # Clipper's tests branch on it: no fluentd, logs come from Docker
    paths = cluster.conn.get_clipper_logs(str(tmp_path / "logs"))
    containers = cluster_containers(cluster.name)
    assert len(paths) == len(containers) >= 4
    for p in paths:
        assert re.fullmatch(r"image_sha256:[0-9a-f]{12}:container_[0-9a-f]{12}\.log", Path(p).name), p
        assert Path(p).is_file()
    text = "\n".join(Path(p).read_text(errors="replace") for p in paths)
    assert "query frontend listening" in text
    assert "management frontend listening" in text
    assert "registered sum:1" in text
    assert "Ready to accept connections" in text  # redis


def test_failing_model_reports_its_log(cluster: Cluster, tmp_path: Path) -> None:
    model_dir = tmp_path / "bad"
    model_dir.mkdir()
    (model_dir / "func.pkl").write_bytes(b"this is not a pickle")
    image = cluster.conn.build_model("bad", "1", str(model_dir), "default")
    t0 = time.monotonic()
    with pytest.raises(ClipperException) as info:
        cluster.conn.deploy_model("bad", "1", "doubles", image)
    msg = info.value.msg
    print(f"\n[docker] failing model reported after {time.monotonic() - t0:.1f} s:\n{msg}")
    assert "Model bad:1 replica failed to start" in msg and "container bad_1-" in msg
    assert "exited with code" in msg and "func.pkl" in msg
    assert [c for c in cluster_containers(cluster.name) if c.name.startswith("bad_1-")] == []


def _write_wheel(dest: Path) -> Path:
    """A pure-Python wheel by hand (module ``dcm_probe`` with ``OFFSET = 100``): no network, no build backend."""
    files = {
        "dcm_probe.py": b"OFFSET = 100\n",
        "dcm_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: dcm-probe\nVersion: 1.0\n",
        "dcm_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                         b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("dcm_probe-1.0.dist-info/RECORD,,")
    path = dest / "dcm_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("dcm_probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_pkgs_to_install_without_network(cluster: Cluster, tmp_path: Path) -> None:
    wheel = _write_wheel(tmp_path)
    conn = cluster.conn
    conn.register_application(name="pkg-app", input_type="doubles", default_output="-1.0", slo_micros=10_000_000)

    def plus_offset(xs):
        import dcm_probe

        return [str(sum(x) + dcm_probe.OFFSET) for x in xs]

    python_deployer.deploy_python_closure(conn, name="pkg", version=1, input_type="doubles", func=plus_offset,
                                          pkgs_to_install=[str(wheel)])
    conn.link_model_to_app(app_name="pkg-app", model_name="pkg")
    assert predict_until_served(cluster.url, "pkg-app", [1.0, 2.0])["output"] == 103.0
    conn.stop_models(["pkg"])
    assert conn.get_num_replicas("pkg", "1") == 0


def test_two_clusters_at_once(cluster: Cluster) -> None:
    """A second cluster beside the first; it publishes its ports on every interface, so its predictions
    need the token its manager drew."""
    other = new_cluster("dcm-second", host_ip="0.0.0.0")
    try:
        other.conn.start_clipper()
        token = other.conn.predict_token
        assert token and len(token) >= 32 and cluster.conn.predict_token is None
        authorized = requests.Session()
        authorized.headers["Authorization"] = f"Bearer {token}"
        other.conn.register_application(name="sum-app", input_type="doubles", default_output="-1.0",
                                        slo_micros=10_000_000)

        def doubled_sum(xs):
            return [str(2 * sum(x)) for x in xs]

        python_deployer.deploy_python_closure(other.conn, name="sum", version=1, input_type="doubles",
                                              func=doubled_sum)
        other.conn.link_model_to_app(app_name="sum-app", model_name="sum")
        assert other.url != cluster.url
        assert predict_until_served(other.url, "sum-app", [1.0, 2.0, 3.0], authorized)["output"] == 12.0
        assert predict(other.url, "sum-app", [1.0]).status_code == 401
        assert predict_until_served(cluster.url, "sum-app", [1.0, 2.0, 3.0])["output"] == 6.0
        assert {c.name for c in cluster_containers(other.name)}.isdisjoint(
            c.name for c in cluster_containers(cluster.name))
        other.conn.stop_all()
        assert cluster_containers(other.name) == [] and not network_exists(other.network)
        assert predict_until_served(cluster.url, "sum-app", [1.0, 2.0, 3.0])["output"] == 6.0
        assert cluster_containers(cluster.name) and network_exists(cluster.network)
    finally:
        purge(other.name, other.network)


def test_scale_down_with_a_tight_slo_is_reported(cluster: Cluster) -> None:
    """Informational: scale 2 -> 1 under load on an app with a 100 ms objective (prints what was seen)."""
    conn = cluster.conn
    conn.register_application(name="tight-app", input_type="doubles", default_output="-1.0", slo_micros=100_000)
    conn.link_model_to_app(app_name="tight-app", model_name="sum")
    predict_until_served(cluster.url, "tight-app", [1.0, 2.0, 3.0])
    for _ in range(3):
        conn.set_num_replicas("sum", 2)
        with Load(cluster.url, "tight-app") as load:
            time.sleep(1.0)
            conn.set_num_replicas("sum", 1)
            time.sleep(1.0)
        print(f"\n[docker] 2->1 with a 100 ms objective: {load.summary()}")
        assert all(r[1] == 200 for r in load.results)



# ---------------------------------------------------------------------- Redis durability


def crash(container: Any) -> None:
    """Kills the container's main process as a crash (or the kernel's OOM killer) would.

    Not ``docker kill``: Docker takes that as an operator's stop and never restarts the container, whatever
    its restart policy. From this machine when allowed, else from a container in the host's process space.
    """
    container.reload()
    pid = container.attrs["State"]["Pid"]
    try:
        os.kill(pid, signal.SIGKILL)
    except PermissionError:
        docker_client().containers.run(container.attrs["Config"]["Image"], ["sh", "-c", f"kill -9 {pid}"],
                                       entrypoint=[], pid_mode="host", remove=True)


def redis_container(cluster: Cluster) -> Any:
    (redis,) = [c for c in cluster_containers(cluster.name) if c.name.startswith("redis-")]
    return redis


def state_of(conn: ClipperConnection) -> dict[str, Any]:
    return {
        "apps": sorted(conn.get_all_apps(verbose=True), key=lambda a: a["name"]),
        "models": sorted(conn.get_all_models(verbose=True), key=lambda m: (m["model_name"], m["model_version"])),
        "links": {app: conn.get_linked_models(app) for app in ("sum-app", "bandit")},
        "selection": conn.get_selection_state("bandit", 0),
    }


def wait_state(conn: ClipperConnection, expected: dict[str, Any], timeout: float = PROPAGATION_S) -> float:
    """Seconds until the management API serves `expected` (503 meanwhile, while Redis is away)."""
    start = time.monotonic()
    seen: Any = None
    while True:
        try:
            seen = state_of(conn)
            if seen == expected:
                return time.monotonic() - start
        except ClipperException as e:
            seen = e
        assert time.monotonic() - start < timeout, f"the state is not served again: {seen!r}"
        time.sleep(0.1)


def test_redis_crash_and_kill_keep_the_state_and_keep_state_restarts(images_ready: float) -> None:
    c = new_cluster("dcm-durable")
    conn = c.conn
    try:
        conn.start_clipper()
        deploy_sum(conn, "sum-app", "sum", 10_000_000)
        conn.register_application("bandit", "doubles", "-1.0", 10_000_000, selection_policy="exp3")
        conn.link_model_to_app("bandit", "sum")
        predict_until_served(c.url, "bandit", [1.0, 2.0])
        for i in range(5):
            r = requests.post(f"{c.url}/bandit/update", json={"uid": 0, "input": [float(i)], "label": float(i)},
                              timeout=HTTP_TIMEOUT_S)
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + PROPAGATION_S
        while conn.get_selection_state("bandit", 0).get("t") != 5:
            assert time.monotonic() < deadline, conn.get_selection_state("bandit", 0)
            time.sleep(0.1)
        before = state_of(conn)

        redis = redis_container(c)
        assert redis.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert any(m.get("Name") == c.cm.redis_volume and m["Destination"] == "/data" for m in redis.attrs["Mounts"])

        # a crash: Docker restarts it, and it loads its append-only file
        t0 = time.monotonic()
        crash(redis)
        while True:
            redis.reload()
            if redis.attrs["RestartCount"] >= 1 and redis.status == "running":
                break
            assert time.monotonic() - t0 < 30, (redis.status, redis.attrs["RestartCount"])
            time.sleep(0.1)
        restarted = time.monotonic() - t0
        served = restarted + wait_state(conn, before)
        assert predict_until_served(c.url, "sum-app", [1.0, 2.0, 3.0])["output"] == 6.0
        conn.register_application("after-app", "doubles", "-1.0", 10_000_000)  # writes, seen by the frontend
        conn.link_model_to_app("after-app", "sum")
        assert predict_until_served(c.url, "after-app", [2.0, 2.0])["output"] == 4.0
        conn.unregister_application("after-app")
        print(f"\n[docker] Redis crashed: restarted by Docker after {restarted:.1f} s, state served after "
              f"{served:.1f} s")

        # docker kill is an operator's stop: not restarted; the query frontend keeps serving; a start brings it back
        redis.kill()
        time.sleep(2.0)
        redis.reload()
        assert redis.status == "exited" and redis.attrs["RestartCount"] == 1
        assert predict_until_served(c.url, "sum-app", [1.0, 1.0])["output"] == 2.0
        with pytest.raises(ClipperException, match="503"):
            conn.get_all_apps()
        redis.start()
        wait_state(conn, before, timeout=30)

        # stop_all(keep_state=True): the volume stays; start_clipper comes back with the state and the replica
        conn.stop_all(keep_state=True)
        assert cluster_containers(c.name) == [] and volume_exists(c.cm.redis_volume)
        conn.start_clipper()
        wait_state(conn, before)
        assert conn.get_num_replicas("sum") == 1
        assert predict_until_served(c.url, "sum-app", [3.0, 4.0])["output"] == 7.0

        # stop_all(): the volume goes, the next start is empty
        conn.stop_all()
        assert cluster_containers(c.name) == [] and not volume_exists(c.cm.redis_volume)
        conn.start_clipper()
        assert conn.get_all_apps() == [] and conn.get_all_models() == []
        conn.stop_all()
        assert not volume_exists(c.cm.redis_volume)
    finally:
        purge(c.name, c.network)


def test_gpu_and_resource_requests(cluster: Cluster) -> None:
    """``gpus=1`` becomes a Docker device request: this engine has no NVIDIA runtime, so the replica cannot start
    and the error says why (nothing is left running); ``gpus=0`` hides GPUs; CPU and memory limits reach the
    container, and a scale-up from another manager (connect()) keeps them."""
    conn = cluster.conn
    image = conn.get_model_info("sum", "1")["container_name"]
    with pytest.raises(ClipperException, match="NVIDIA Container Toolkit"):
        conn.deploy_model("sum-gpu", "1", "doubles", image, gpus=1)
    assert cluster.model_containers("sum-gpu") == []
    conn.cm.set_model_resources("sum-cpu", "1", gpus=0, cpu_limit=0.5, mem_limit="256m")
    conn.deploy_model("sum-cpu", "1", "doubles", image)
    (container,) = cluster.model_containers("sum-cpu")
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 1024 ** 2
    assert "CUDA_VISIBLE_DEVICES=" in container.attrs["Config"]["Env"]
    other = ClipperConnection(DockerContainerManager(cluster_name=cluster.name, docker_network=cluster.network))
    other.connect()
    other.set_num_replicas("sum-cpu", 2, "1")
    assert sorted(c.attrs["HostConfig"]["NanoCpus"] for c in cluster.model_containers("sum-cpu")) == \
        [500_000_000] * 2
    conn.stop_models(["sum-cpu"])
