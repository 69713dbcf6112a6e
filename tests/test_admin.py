"""`ClipperConnection` against a real local cluster: Redis, both frontends and model replicas as processes.

One cluster (free ports, its own state directory) serves the whole module; each test uses its own
app and model names. Predictions go over real HTTP and wait for the query frontend to follow
Redis (it does within a second).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import MANAGER_HEARTBEAT_TIMEOUT_S, make_manager

from clipper import ClipperConnection, ClipperException, LocalContainerManager, UnconnectedException
from clipper.deployers import python as python_deployer
from clipper.managers.local import _pid_alive

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

REPO = Path(__file__).resolve().parents[1]
HTTP_TIMEOUT_S = 10.0
PROPAGATION_S = 10.0


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-cluster")


@pytest.fixture(scope="module")
def conn(cluster_dir: Path) -> Iterator[ClipperConnection]:
    c = ClipperConnection(make_manager(f"test-admin-{os.getpid()}", cluster_dir), health_check_timeout=60)
    try:
        c.start_clipper()
        yield c
    finally:
        c.stop_all()


def predict(conn: ClipperConnection, app: str, value: Any) -> dict[str, Any]:
    """The answer's JSON; ``{"status": 404}`` while the query frontend does not know the app yet."""
    r = requests.post(f"http://{conn.get_query_addr()}/{app}/predict", json={"input": value}, timeout=HTTP_TIMEOUT_S)
    if r.status_code == 404:
        return {"status": 404, "default": None}
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def wait_for(check: Callable[[], Any], what: str, timeout: float = PROPAGATION_S) -> Any:
    """Polls `check` until it returns something truthy; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_output(conn: ClipperConnection, app: str, value: Any, expected: Any) -> dict[str, Any]:
    """Predicts until the answer is `expected` and not a default (routes propagate through Redis)."""
    last: dict[str, Any] = {}

    def ok() -> bool:
        nonlocal last
        last = predict(conn, app, value)
        out = last.get("output")
        if last.get("default") is not False or out is None:
            return False
        return out == pytest.approx(expected) if isinstance(expected, float) else out == expected

    deadline = time.monotonic() + PROPAGATION_S
    while not ok():
        assert time.monotonic() < deadline, f"{app} answered {last}, expected {expected!r}"
        time.sleep(0.05)
    return last


def replicas_of(conn: ClipperConnection, name: str, version: str) -> list[dict[str, Any]]:
    return [c for c in conn.get_all_model_replicas(verbose=True)
            if c["model_name"] == name and c["model_version"] == version]


# ---------------------------------------------------------------------- connection state


def test_unconnected_connection_refuses_and_connect_needs_a_cluster(tmp_path: Path) -> None:
    c = ClipperConnection(make_manager("never-started", tmp_path / "nothing"))
    assert not c.connected
    for call in (lambda: c.register_application("a", "doubles", "0", 1000), lambda: c.get_all_apps(),
                 lambda: c.get_all_models(), lambda: c.link_model_to_app("a", "m"),
                 lambda: c.deploy_model("m", 1, "doubles", "python:clipper.model_runtime.models:sum"),
                 lambda: c.get_query_addr(), lambda: c.inspect_instance(), lambda: c.stop_models(["m"])):
        with pytest.raises(UnconnectedException, match="No connection to Clipper cluster"):
            call()
    with pytest.raises(ClipperException, match="No local Clipper cluster named 'never-started' is running"):
        c.connect()
    assert not c.connected
    c.stop_all()  # nothing to stop: no error


def test_addresses(conn: ClipperConnection) -> None:
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    assert conn.get_query_addr() == f"127.0.0.1:{cm.query_port}" == cm.get_query_addr()
    assert cm.get_admin_addr() == f"127.0.0.1:{cm.management_port}"
    # make_manager runs no Prometheus (tests/test_prometheus.py does): get_metric_addr says so
    with pytest.raises(ClipperException, match=r"runs no Prometheus server.*serves its metrics at http://127\.0\.0\.1:"):
        conn.get_metric_addr()
    assert len({cm.query_port, cm.management_port, cm.rpc_port, cm.redis_port}) == 4
    # Clipper's attribute names
    assert (cm.clipper_query_port, cm.clipper_management_port, cm.clipper_rpc_port) == \
        (cm.query_port, cm.management_port, cm.rpc_port)
    assert (cm.centralize_log, cm.logging_system, cm.logging_system_instance, cm.external_redis) == \
        (False, None, None, False)
    assert requests.get(f"http://{cm.get_admin_addr()}/admin/ping", timeout=HTTP_TIMEOUT_S).text == "PONG"
    metrics = conn.inspect_instance()
    assert isinstance(metrics, dict) and "counters" in metrics


def test_start_twice_is_refused(conn: ClipperConnection, cluster_dir: Path) -> None:
    again = ClipperConnection(make_manager(conn.cm.cluster_identifier, cluster_dir))
    with pytest.raises(ClipperException, match="already running"):
        again.start_clipper()
    assert conn.get_all_apps() is not None  # the running cluster is untouched


def test_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = ClipperConnection(LocalContainerManager(cluster_name="busy-port", cluster_dir=tmp_path,
                                                    clipper_query_port=port, clipper_management_port=0,
                                                    clipper_rpc_port=0, redis_port=0))
        with pytest.raises(ClipperException, match=f"Port {port} .* already in use.*clipper_query_port"):
            c.start_clipper()
    assert not (tmp_path / "cluster.json").exists()


# ---------------------------------------------------------------------- applications and links


def test_applications(conn: ClipperConnection) -> None:
    conn.register_application("adm-app", "doubles", "-1.0", 100000)
    assert "adm-app" in conn.get_all_apps()
    verbose = [a for a in conn.get_all_apps(verbose=True) if a["name"] == "adm-app"]
    assert verbose == [{"name": "adm-app", "input_type": "doubles", "default_output": "-1.0",
                        "latency_slo_micros": 100000, "linked_models": [],
                        "selection_policy": "DefaultOutputSelectionPolicy"}]
    assert conn.get_app_info("adm-app") == verbose[0]
    assert conn.get_app_info("no-such-app") is None
    assert conn.get_linked_models("adm-app") == []
    with pytest.raises(ClipperException) as e:
        conn.register_application("adm-app", "doubles", "-1.0", 100000)
    assert e.value.msg == "Received error status code: 400 and message: application 'adm-app' already exists"
    conn.unregister_application("adm-app")
    assert conn.get_app_info("adm-app") is None
    assert "adm-app" not in conn.get_all_apps()
    with pytest.raises(ClipperException, match="Application 'adm-app' does not exist"):
        conn.delete_application("adm-app")


def test_errors_carry_the_server_message(conn: ClipperConnection) -> None:
    with pytest.raises(ClipperException) as e:
        conn.link_model_to_app("no-such-app", "some-model")
    assert e.value.msg == "Received error status code: 400 and message: No app with name 'no-such-app' exists."
    assert str(e.value) == e.value.msg
    with pytest.raises(ClipperException, match="No application with name 'nope' exists."):
        conn.get_linked_models("nope")
    with pytest.raises(ClipperException, match="Invalid model name supplied: a:b"):
        conn.register_model("a:b", "1", "doubles")  # not validated client-side, as in clipper_admin
    with pytest.raises(ClipperException, match="Invalid value: Bad_Name"):
        conn.deploy_model("Bad_Name", 1, "doubles", "python:clipper.model_runtime.models:sum")
    with pytest.raises(ClipperException, match="No versions of model ghost registered"):
        conn.get_current_model_version("ghost")


# ---------------------------------------------------------------------- models, versions, replicas


def test_deploy_versions_and_rollback(conn: ClipperConnection) -> None:
    def v1(xs: Any) -> list[str]:
        return [str(sum(x)) for x in xs]

    def v2(xs: Any) -> list[str]:
        return [str(10 * sum(x)) for x in xs]

    conn.register_application("roll-app", "doubles", "-1.0", 1000000)
    python_deployer.deploy_python_closure(conn, name="roll-model", version=1, input_type="doubles", func=v1)
    assert conn.get_num_replicas("roll-model") == 1
    conn.link_model_to_app("roll-app", "roll-model")
    assert conn.get_linked_models("roll-app") == ["roll-model"]
    wait_output(conn, "roll-app", [1.0, 2.0], 3.0)

    python_deployer.deploy_python_closure(conn, name="roll-model", version="2", input_type="doubles", func=v2,
                                          labels=["fast"], batch_size=4)
    assert conn.get_current_model_version("roll-model") == "2"
    wait_output(conn, "roll-app", [1.0, 2.0], 30.0)
    assert {"roll-model:1", "roll-model:2"} <= set(conn.get_all_models())
    info = conn.get_model_info("roll-model", 2)
    assert info is not None
    assert {k: info[k] for k in ("model_name", "model_version", "input_type", "labels", "is_current_version")} == {
        "model_name": "roll-model", "model_version": "2", "input_type": "doubles", "labels": ["fast"],
        "is_current_version": True}
    assert info["container_name"].startswith("local:")
    assert conn.get_model_info("roll-model", 3) is None

    conn.set_model_version("roll-model", 1)  # roll back: version 1's replica still runs
    assert conn.get_current_model_version("roll-model") == "1"
    assert conn.get_model_info("roll-model", "2")["is_current_version"] is False
    wait_output(conn, "roll-app", [1.0, 2.0], 3.0)
    with pytest.raises(ClipperException, match="Cannot set non-existent version '7'"):
        conn.set_model_version("roll-model", 7)

    conn.unlink_model_from_app("roll-app", "roll-model")
    assert conn.get_linked_models("roll-app") == []
    wait_for(lambda: predict(conn, "roll-app", [1.0, 2.0])["default"] is True, "the unlinked app to answer its default")
    conn.link_model_to_app("roll-app", "roll-model")
    wait_output(conn, "roll-app", [1.0, 2.0], 3.0)
    conn.set_model_version("roll-model", "2", num_replicas=2)  # roll forward and resize in one call
    assert conn.get_num_replicas("roll-model") == 2
    wait_output(conn, "roll-app", [2.0, 2.0], 40.0)


def test_set_num_replicas(conn: ClipperConnection) -> None:
    def one(xs: Any) -> list[str]:
        return ["1" for _ in xs]

    python_deployer.deploy_python_closure(conn, name="scale-model", version=1, input_type="doubles", func=one)
    cm = conn.cm
    assert conn.get_num_replicas("scale-model") == 1 == conn.get_num_replicas("scale-model", 1)
    wait_for(lambda: len(replicas_of(conn, "scale-model", "1")) == 1, "1 registered replica")

    conn.set_num_replicas("scale-model", 3)
    assert conn.get_num_replicas("scale-model") == 3
    replicas = wait_for(lambda: r if len(r := replicas_of(conn, "scale-model", "1")) == 3 else None,
                        "3 registered replicas")
    assert sorted(r["model_replica_id"] for r in replicas) == sorted({r["model_replica_id"] for r in replicas})
    one_replica = replicas[0]
    assert set(one_replica) >= {"model_id", "model_name", "model_version", "model_replica_id", "input_type"}
    assert one_replica["model_id"] == "scale-model:1" and one_replica["input_type"] == "doubles"
    assert conn.get_model_replica_info("scale-model", 1, one_replica["model_replica_id"]) == one_replica
    assert conn.get_model_replica_info("scale-model", 1, 999) is None
    assert "scale-model:1:" + str(one_replica["model_replica_id"]) in conn.get_all_model_replicas()
    pids = [r["pid"] for r in cm.status()["replicas"] if r["name"] == "scale-model"]
    assert len(pids) == 3

    conn.set_num_replicas("scale-model", 1)
    assert conn.get_num_replicas("scale-model") == 1
    stopped = [p for p in pids if p not in {r["pid"] for r in cm.status()["replicas"]}]
    assert len(stopped) == 2 and not any(_pid_alive(p, None) for p in stopped)
    # the frontend notices the stopped replicas after its heartbeat timeout and unregisters them
    wait_for(lambda: len(replicas_of(conn, "scale-model", "1")) == 1, "the stopped replicas to be dropped",
             timeout=MANAGER_HEARTBEAT_TIMEOUT_S + 10)


def test_containerless_model_cannot_be_resized(conn: ClipperConnection) -> None:
    conn.register_model("nc-model", 1, "integers", labels=["a", "b"])
    info = conn.get_model_info("nc-model", "1")
    assert info["container_name"] == "NO_CONTAINER" and info["labels"] == ["a", "b"]
    with pytest.raises(ClipperException, match="Cannot resize the replica set for containerless model nc-model:1"):
        conn.set_num_replicas("nc-model", 2)
    with pytest.raises(ClipperException, match="Cannot add container for non-registered model nc-model:9"):
        conn.set_num_replicas("nc-model", 2, version=9)
    conn.stop_models(["nc-model"])
    assert conn.get_model_info("nc-model", 1) is None


def test_stop_models(conn: ClipperConnection) -> None:
    def f(xs: Any) -> list[str]:
        return ["x" for _ in xs]

    for version in (1, 2, 3):
        python_deployer.deploy_python_closure(conn, name="stop-model", version=version, input_type="strings",
                                              func=f)
    cm = conn.cm
    pids = {r["version"]: r["pid"] for r in cm.status()["replicas"] if r["name"] == "stop-model"}
    assert set(pids) == {"1", "2", "3"}

    conn.stop_versioned_models({"stop-model": ["1"]})
    assert conn.get_model_info("stop-model", 1) is None
    assert not _pid_alive(pids["1"], None)
    conn.stop_inactive_model_versions(["stop-model"])  # version 2; 3 is current
    assert [m for m in conn.get_all_models() if m.startswith("stop-model:")] == ["stop-model:3"]
    assert cm.get_num_replicas("stop-model", "2") == 0 and not _pid_alive(pids["2"], None)
    assert cm.get_num_replicas("stop-model", "3") == 1

    conn.stop_models(["stop-model"])
    assert not [m for m in conn.get_all_models() if m.startswith("stop-model:")]
    assert cm.get_num_replicas("stop-model", "3") == 0 and not _pid_alive(pids["3"], None)
    with pytest.raises(ClipperException, match="No versions of model stop-model"):
        conn.get_num_replicas("stop-model")


def test_failed_replica_is_reported_and_nothing_registered(conn: ClipperConnection) -> None:
    with pytest.raises(ClipperException) as e:
        conn.deploy_model("bad-model", 1, "doubles", "python:no_such_module_xyz:predict")
    msg = e.value.msg
    assert "Model bad-model:1 replica failed to start" in msg and "exited with code 3" in msg, msg
    assert "no_such_module_xyz" in msg and "model-bad-model-1-" in msg, msg
    assert conn.get_model_info("bad-model", 1) is None
    assert conn.cm.get_num_replicas("bad-model", "1") == 0

    with pytest.raises(ClipperException, match="cannot run model image 'clipper/noop-container:0.4.1'"):
        conn.deploy_model("bad-model", 1, "doubles", "clipper/noop-container:0.4.1")


def test_duplicate_version_stops_the_new_replicas(conn: ClipperConnection) -> None:
    def f(xs: Any) -> list[str]:
        return ["0" for _ in xs]

    python_deployer.deploy_python_closure(conn, name="dup-model", version=1, input_type="doubles", func=f)
    image = conn.get_model_info("dup-model", 1)["container_name"]
    with pytest.raises(ClipperException, match="model with name 'dup-model' and version '1' already exists"):
        conn.deploy_model("dup-model", 1, "doubles", image)
    assert conn.get_num_replicas("dup-model", 1) == 1  # the running replica is left alone
    conn.register_model("dup-model-2", 5, "doubles")
    with pytest.raises(ClipperException, match="already exists"):
        conn.deploy_model("dup-model-2", 5, "doubles", image)
    assert conn.cm.get_num_replicas("dup-model-2", "5") == 0  # replicas started for it were stopped


def test_sklearn_deployer(conn: ClipperConnection) -> None:
    pytest.importorskip("sklearn")
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from clipper.deployers import sklearn as sklearn_deployer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    sklearn_deployer.create_endpoint(conn, "sk-iris", "doubles", model, slo_micros=1000000)
    assert conn.get_linked_models("sk-iris") == ["sk-iris"]
    for row in x[:5]:
        wait_output(conn, "sk-iris", [float(v) for v in row], int(model.predict(row[None, :])[0]))


# ---------------------------------------------------------------------- logs, metrics, local checks


def test_get_clipper_logs(conn: ClipperConnection, tmp_path: Path) -> None:
    paths = conn.get_clipper_logs(str(tmp_path / "logs"))
    names = {Path(p).name for p in paths}
    assert {"redis.log", "management_frontend.log", "query_frontend.log"} <= names
    assert all(Path(p).is_file() and Path(p).parent == tmp_path / "logs" for p in paths)
    assert "clipper.frontend.query" in (tmp_path / "logs" / "query_frontend.log").read_text()


def test_test_predict_function(conn: ClipperConnection) -> None:
    def feature_sum(xs: Any) -> list[str]:
        return [str(sum(x)) for x in xs]

    assert conn.test_predict_function({"input": [1.0, 2.0, 3.0]}, feature_sum, "doubles") == ["6.0"]
    assert conn.test_predict_function({"input_batch": [[1.0], [2.5]]}, feature_sum, "doubles") == ["1.0", "2.5"]
    assert conn.test_predict_function({"input": [1, 2]}, feature_sum, "integers") == ["3"]
    assert conn.test_predict_function({"input": [1, 2]}, feature_sum, "doubles") == "Invalid input type"
    assert conn.test_predict_function({"input": 3}, feature_sum, "doubles") == "Invalid input type or JSON key"


# ---------------------------------------------------------------------- other processes


def test_connect_from_another_process(conn: ClipperConnection, cluster_dir: Path) -> None:
    def f(xs: Any) -> list[str]:
        return ["7" for _ in xs]

    conn.register_application("proc-app", "doubles", "-1.0", 1000000)
    python_deployer.deploy_python_closure(conn, name="proc-model", version=1, input_type="doubles", func=f)
    conn.link_model_to_app("proc-app", "proc-model")
    script = textwrap.dedent(f"""
        import json
        from clipper import ClipperConnection, LocalContainerManager
        conn = ClipperConnection(LocalContainerManager(cluster_name={conn.cm.cluster_identifier!r},
                                                       cluster_dir={str(cluster_dir)!r}))
        conn.connect()
        conn.set_num_replicas("proc-model", 2)
        print(json.dumps({{"apps": conn.get_all_apps(), "query": conn.get_query_addr(),
                          "replicas": conn.get_num_replicas("proc-model"),
                          "linked": conn.get_linked_models("proc-app")}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "proc-app" in seen["apps"] and seen["query"] == conn.get_query_addr()
    assert seen["replicas"] == 2 and seen["linked"] == ["proc-model"]
    # the replica started by the other (now finished) process is ours to count and stop
    assert conn.get_num_replicas("proc-model") == 2
    wait_output(conn, "proc-app", [1.0], 7)
    conn.set_num_replicas("proc-model", 1)
    assert conn.get_num_replicas("proc-model") == 1
    wait_output(conn, "proc-app", [2.0], 7)


def test_command_line(conn: ClipperConnection, cluster_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "cli_model.py").write_text("def triple(xs):\n    return [str(3 * sum(x)) for x in xs]\n")
    base = [sys.executable, "-m", "clipper", "--cluster-name", conn.cm.cluster_identifier,
            "--cluster-dir", str(cluster_dir)]

    def clipper(*args: str) -> str:
        done = subprocess.run([*base, *args], cwd=tmp_path, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    out = clipper("deploy", "cli-model", "--version", "1", "--input-type", "doubles", "--predict",
                  "cli_model:triple", "--app", "cli-app", "--slo-micros", "1000000", "--default-output", "-1")
    assert "Deployed model cli-model:1" in out and "Registered application cli-app" in out
    wait_output(conn, "cli-app", [1.0, 2.0], 9.0)
    assert conn.get_linked_models("cli-app") == ["cli-model"]
    assert "cli-app" in clipper("apps") and "cli-model" in clipper("apps")
    models = clipper("models")
    assert any(line.split()[:3] == ["cli-model", "1", "yes"] for line in models.splitlines()), models
    status = clipper("status")
    assert "running" in status and "query_frontend" in status and "model cli-model:1" in status
    assert json.loads(clipper("predict", "cli-app", "[2.0, 2.0]"))["output"] == 12.0
    assert "cli-model:1 has 2 replica(s)" in clipper("replicas", "cli-model", "2")
    logs = clipper("logs", str(tmp_path / "cli-logs")).split()
    assert any(p.endswith("query_frontend.log") for p in logs)
    failed = subprocess.run([*base, "set-version", "cli-model", "9"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "Cannot set non-existent version '9'" in failed.stderr


# ---------------------------------------------------------------------- packages, Redis, prerequisites


def _tiny_wheel(directory: Path) -> Path:
    """A pure-Python wheel of module `clipper_tiny_pkg` (VALUE = "from-modules"), made without a build backend."""
    import base64
    import hashlib
    import zipfile

    files = {
        "clipper_tiny_pkg.py": b'VALUE = "from-modules"\n',
        "clipper_tiny_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: clipper-tiny-pkg\nVersion: 1.0\n",
        "clipper_tiny_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("clipper_tiny_pkg-1.0.dist-info/RECORD,,")
    path = directory / "clipper_tiny_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("clipper_tiny_pkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_pkgs_to_install_go_into_the_image(conn: ClipperConnection, tmp_path: Path) -> None:
    wheel = _tiny_wheel(tmp_path)

    def uses_package(xs: Any) -> list[str]:
        import clipper_tiny_pkg  # installed into <image>/modules, which the runtime puts on sys.path

        return [clipper_tiny_pkg.VALUE for _ in xs]

    python_deployer.create_endpoint(conn, "pkg-app", "doubles", uses_package, pkgs_to_install=[str(wheel)])
    image = Path(conn.get_model_info("pkg-app", 1)["container_name"][len("local:"):])
    assert (image / "modules" / "clipper_tiny_pkg.py").is_file()
    assert json.loads((image / "image.json").read_text())["pkgs_to_install"] == [str(wheel)]
    wait_output(conn, "pkg-app", [1.0], "from-modules")


def test_external_redis_is_used_and_left_running(tmp_path: Path) -> None:
    from clipper.state.redis_server import RedisServer

    with RedisServer() as redis:
        c = ClipperConnection(make_manager("external-redis", tmp_path, redis_ip="127.0.0.1", redis_port=redis.port))
        try:
            c.start_clipper()
            status = c.cm.status()
            assert sorted(p["role"] for p in status["processes"]) == ["management_frontend", "query_frontend"]
            assert status["redis"] == {"host": "127.0.0.1", "port": redis.port, "managed": False}
            c.register_application("ext-app", "doubles", "0", 1000)
            assert c.get_all_apps() == ["ext-app"]
        finally:
            c.stop_all()
        assert redis.running


def test_missing_redis_server_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clipper.managers.local as local

    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    c = ClipperConnection(make_manager("no-redis", tmp_path))
    with pytest.raises(ClipperException, match="redis-server is not installed.*apt-get install redis-server"):
        c.start_clipper()


def test_command_line_start_and_stop(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "clipper", "--cluster-name", "cli-cluster", "--cluster-dir", str(tmp_path)]

    def clipper(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, *args], cwd=REPO, capture_output=True, text=True, timeout=90)
        assert done.returncode == rc, (args, done.stdout, done.stderr)
        return done

    assert "is not running" in clipper("status", rc=1).stdout
    try:
        out = clipper("start", "--query-port", "0", "--management-port", "0", "--rpc-port", "0",
                      "--redis-port", "0").stdout
        assert "Clipper cluster 'cli-cluster' is running" in out
        # the command has exited; the cluster keeps running and another process can use it
        c = ClipperConnection(LocalContainerManager(cluster_name="cli-cluster", cluster_dir=tmp_path))
        c.connect()
        assert f"http://{c.get_query_addr()}" in out
        assert c.get_all_apps() == []
        again = clipper("start", rc=1)
        assert "already running" in again.stderr and again.stderr.startswith("clipper: error:")
        c.register_application("cli-app", "doubles", "0", 1000)
        pids = [p["pid"] for p in c.cm.status()["processes"]]
        out = clipper("stop", "--keep-state").stdout
        assert f"Stopped Clipper cluster 'cli-cluster'; its state is kept in {tmp_path / 'redis-data'}" in out
        assert not any(_pid_alive(pid, None) for pid in pids)
        clipper("start", "--query-port", "0", "--management-port", "0", "--rpc-port", "0", "--redis-port", "0")
        c.connect()
        assert c.get_all_apps() == ["cli-app"]  # kept
        pids = [p["pid"] for p in c.cm.status()["processes"]]
        assert "Stopped Clipper cluster 'cli-cluster'\n" in clipper("stop").stdout
        assert not any(_pid_alive(pid, None) for pid in pids)
        assert not (tmp_path / "redis-data").exists()  # a plain stop forgets the state
        assert "No Clipper cluster 'cli-cluster' was running" in clipper("stop").stdout
    finally:
        LocalContainerManager(cluster_name="cli-cluster", cluster_dir=tmp_path).stop_all()


# ---------------------------------------------------------------------- GPU requests


def test_gpu_requests_become_cuda_visible_devices(conn: ClipperConnection) -> None:
    """One app links a CPU model (``gpus=0``: no GPU visible) and a GPU model (device 1); scaling keeps each
    model's request."""
    def _visible_devices(xs: Any) -> list[str]:  # defined here: pickled by value
        import os

        return [os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>") for _ in xs]

    conn.register_application("gpu-mix", "doubles", "none", 3_000_000)
    python_deployer.deploy_python_closure(conn, "cpu-part", 1, "doubles", _visible_devices)
    conn.cm.set_model_resources("cpu-part", "1", gpus=0)
    conn.set_num_replicas("cpu-part", 1, "1")  # a request recorded later applies to new replicas only
    conn.set_num_replicas("cpu-part", 0, "1")
    conn.set_num_replicas("cpu-part", 1, "1")
    image = conn.cm.build_model("gpu-part", "1", python_deployer.save_python_function("gpu-part", _visible_devices),
                                "default")
    conn.deploy_model("gpu-part", "1", "doubles", image, gpus=["1"])
    conn.link_model_to_app("gpu-mix", "cpu-part")
    wait_output(conn, "gpu-mix", [1.0], "")
    conn.unlink_model_from_app("gpu-mix", "cpu-part")
    conn.link_model_to_app("gpu-mix", "gpu-part")
    wait_output(conn, "gpu-mix", [2.0], 1)  # the frontend answers "1" as the JSON number 1
    conn.set_num_replicas("gpu-part", 2, "1")
    assert [r.get("gpus") for r in conn.cm._read_state()["replicas"] if r["name"] == "gpu-part"] == [["1"], ["1"]]
    with pytest.raises(ClipperException, match="Invalid GPU request"):
        conn.cm.set_model_resources("gpu-part", "1", gpus=-1)
    conn.stop_models(["cpu-part", "gpu-part"])
