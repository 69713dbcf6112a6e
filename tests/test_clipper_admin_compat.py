"""The published `clipper_admin==0.4.1` drives our cluster, unchanged.

`clipper_admin` is pip-installed with ``--no-deps`` into a cache directory (reused between runs;
``$CLIPPER_ADMIN_TARGET`` overrides where) unless it is already importable. Its package imports
`docker`, `yaml`, `jinja2` and `kubernetes` at import time; those that are not installed are
replaced by stub modules for the duration of the module (only `build_model` would use Docker,
and it is replaced by our `LocalContainerManager.build_model`).

A small subclass of `clipper_admin`'s own `ContainerManager` hands its calls to our
`LocalContainerManager`: `start_clipper` starts our processes, and every REST call goes to our
management frontend. Predictions go over plain HTTP (clipper_admin never predicts).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clipper.managers.local import LocalContainerManager

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

CLIPPER_ADMIN_VERSION = "0.4.1"
PROPAGATION_S = 10.0
SUM_IMAGE = "python:clipper.model_runtime.models:sum"


# ---------------------------------------------------------------------- getting clipper_admin


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__stub__ = True  # type: ignore[attr-defined]
    return module


def _stub_modules() -> dict[str, types.ModuleType]:
    """Importable stand-ins for the packages `import clipper_admin` needs and this machine lacks."""
    stubs: dict[str, types.ModuleType] = {}

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    if missing("docker"):
        class DockerException(Exception):
            pass

        class APIError(DockerException):
            pass

        class NotFound(APIError):
            pass

        errors = _stub("docker.errors", DockerException=DockerException, APIError=APIError, NotFound=NotFound)

        def from_env(*_: Any, **__: Any) -> Any:
            raise DockerException("docker is a test stub: no Docker daemon")

        stubs["docker"] = _stub("docker", errors=errors, from_env=from_env, DockerClient=object)
        stubs["docker.errors"] = errors
    if missing("yaml"):
        def unavailable(*_: Any, **__: Any) -> Any:
            raise RuntimeError("yaml is a test stub")

        stubs["yaml"] = _stub("yaml", safe_load=unavailable, load=unavailable, dump=unavailable)
    if missing("jinja2"):
        class TemplateNotFound(Exception):
            pass

        exceptions = _stub("jinja2.exceptions", TemplateNotFound=TemplateNotFound)
        stubs["jinja2"] = _stub("jinja2", exceptions=exceptions, Environment=object, FileSystemLoader=object)
        stubs["jinja2.exceptions"] = exceptions
    if missing("kubernetes"):
        class ApiException(Exception):
            pass

        rest = _stub("kubernetes.client.rest", ApiException=ApiException)
        configuration = _stub("kubernetes.client.configuration")
        client = _stub("kubernetes.client", rest=rest, configuration=configuration, V1DeleteOptions=object)
        config = _stub("kubernetes.config")
        stubs.update({"kubernetes": _stub("kubernetes", client=client, config=config), "kubernetes.client": client,
                      "kubernetes.config": config, "kubernetes.client.rest": rest,
                      "kubernetes.client.configuration": configuration})
    return stubs


def _install_target() -> Path:
    default = Path("/tmp") / f"clipper-admin-{CLIPPER_ADMIN_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"
    return Path(os.environ.get("CLIPPER_ADMIN_TARGET", default))


def _ensure_installed() -> Path | None:
    """Where to import clipper_admin from (None: already importable); skips when pip cannot get it."""
    if importlib.util.find_spec("clipper_admin") is not None:
        return None
    target = _install_target()
    if (target / "clipper_admin" / "clipper_admin.py").is_file():
        return target
    tmp = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--target", str(tmp), f"clipper_admin=={CLIPPER_ADMIN_VERSION}"],
            capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install clipper_admin=={CLIPPER_ADMIN_VERSION} timed out (no package index?)")
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"cannot pip install clipper_admin=={CLIPPER_ADMIN_VERSION}: {(done.stderr or done.stdout)[-500:]}")
    try:
        tmp.rename(target)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="module")
def ca() -> Iterator[types.SimpleNamespace]:
    """The imported `clipper_admin` modules; stubs and sys.path changes are undone afterwards."""
    target = _ensure_installed()
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _stub_modules().items():
            mp.setitem(sys.modules, name, module)
        if target is not None:
            mp.syspath_prepend(str(target))
        try:
            clipper_admin = importlib.import_module("clipper_admin")
            yield types.SimpleNamespace(
                package=clipper_admin,
                container_manager=importlib.import_module("clipper_admin.container_manager"),
                python_deployer=importlib.import_module("clipper_admin.deployers.python"),
                exceptions=importlib.import_module("clipper_admin.exceptions"),
            )
        finally:
            for name in [n for n in sys.modules if n == "clipper_admin" or n.startswith("clipper_admin.")]:
                del sys.modules[name]


# ---------------------------------------------------------------------- the cluster


def make_container_manager(ca: types.SimpleNamespace, local: LocalContainerManager) -> Any:
    """A `clipper_admin` ContainerManager whose every call goes to our LocalContainerManager."""

    class LocalProcesses(ca.container_manager.ContainerManager):
        def __init__(self) -> None:
            self.local = local
            self.cluster_identifier = local.cluster_identifier

        def start_clipper(self, query_frontend_image, mgmt_frontend_image, frontend_exporter_image, cache_size,
                          qf_http_thread_pool_size, qf_http_timeout_request, qf_http_timeout_content,
                          num_frontend_replicas=1):
            self.local.start_clipper(query_frontend_image, mgmt_frontend_image, frontend_exporter_image, cache_size,
                                     qf_http_thread_pool_size, qf_http_timeout_request, qf_http_timeout_content,
                                     num_frontend_replicas)

        def connect(self):
            self.local.connect()

        def deploy_model(self, name, version, input_type, image, num_replicas=1):
            self.local.deploy_model(name, version, input_type, image, num_replicas=num_replicas)

        def get_num_replicas(self, name, version):
            return self.local.get_num_replicas(name, version)

        def set_num_replicas(self, name, version, input_type, image, num_replicas):
            self.local.set_num_replicas(name, version, input_type, image, num_replicas)

        def get_logs(self, logging_dir):
            return self.local.get_logs(logging_dir)

        def stop_models(self, models):
            self.local.stop_models(models)

        def stop_all_model_containers(self):
            self.local.stop_all_model_containers()

        def stop_all(self, graceful=True):
            self.local.stop_all(graceful=graceful)

        def get_admin_addr(self):
            return self.local.get_admin_addr()

        def get_query_addr(self):
            return self.local.get_query_addr()

        def get_metric_addr(self):
            return self.local.get_metric_addr()

    return LocalProcesses()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalContainerManager:
    return LocalContainerManager(cluster_name=f"compat-{os.getpid()}", cluster_dir=tmp_path_factory.mktemp("compat"),
                                 clipper_query_port=0, clipper_management_port=0, clipper_rpc_port=0, redis_port=0,
                                 query_frontend_args=["--heartbeat-timeout", "3"])


@pytest.fixture(scope="module")
def conn(ca: types.SimpleNamespace, local: LocalContainerManager) -> Iterator[Any]:
    """clipper_admin's ClipperConnection, started through its own start_clipper (health checks included)."""
    c = ca.package.ClipperConnection(make_container_manager(ca, local))

    def build_model(name, version, model_data_path, base_image, container_registry=None, pkgs_to_install=None):
        return local.build_model(name, str(version), model_data_path, base_image, container_registry,
                                 pkgs_to_install)

    c.build_model = build_model  # clipper_admin's builds a Docker image
    try:
        c.start_clipper()
        assert c.connected
        yield c
    finally:
        c.stop_all()


def predict(conn: Any, app: str, value: Any) -> dict[str, Any]:
    """The answer's JSON; ``{"status": 404}`` while the query frontend does not know the app yet."""
    r = requests.post(f"http://{conn.get_query_addr()}/{app}/predict", json={"input": value}, timeout=10)
    if r.status_code == 404:
        return {"status": 404, "default": None}
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def wait_output(conn: Any, app: str, value: Any, expected: Any) -> None:
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        body = predict(conn, app, value)
        if body["default"] is False and body["output"] == pytest.approx(expected):
            return
        assert time.monotonic() < deadline, f"{app} answered {body}, expected {expected!r}"
        time.sleep(0.05)


def wait_default(conn: Any, app: str, value: Any) -> None:
    deadline = time.monotonic() + PROPAGATION_S
    while (body := predict(conn, app, value))["default"] is not True:
        assert time.monotonic() < deadline, f"{app} does not answer its default output: {body}"
        time.sleep(0.05)


# ---------------------------------------------------------------------- the tests


def test_it_is_the_published_package(ca: types.SimpleNamespace, conn: Any) -> None:
    assert ca.package.__version__ == CLIPPER_ADMIN_VERSION
    assert type(conn).__module__ == "clipper_admin.clipper_admin"
    assert conn.get_query_addr() == conn.cm.local.get_query_addr()


def test_applications(ca: types.SimpleNamespace, conn: Any) -> None:
    conn.register_application("ca-app", "doubles", "-1.0", 100000)
    assert "ca-app" in conn.get_all_apps()
    assert {"name": "ca-app", "input_type": "doubles", "default_output": "-1.0", "latency_slo_micros": 100000,
            "linked_models": [], "selection_policy": "DefaultOutputSelectionPolicy"} in conn.get_all_apps(verbose=True)
    assert conn.get_app_info("ca-app")["default_output"] == "-1.0"
    assert conn.get_app_info("ca-missing") is None
    with pytest.raises(ca.exceptions.ClipperException) as e:
        conn.register_application("ca-app", "doubles", "-1.0", 100000)
    assert e.value.msg == "Received error status code: 400 and message: application 'ca-app' already exists"
    wait_default(conn, "ca-app", [1.0])
    conn.unregister_application("ca-app")
    assert conn.get_app_info("ca-app") is None
    conn.register_application("ca-app-2", "ints", "0", 100000)
    assert conn.get_app_info("ca-app-2")["input_type"] == "integers"
    conn.delete_application("ca-app-2")  # deprecated alias
    assert "ca-app-2" not in conn.get_all_apps()


def test_models_versions_links_and_replicas(ca: types.SimpleNamespace, conn: Any, local: LocalContainerManager) -> None:
    conn.register_application("ca-sum", "doubles", "-1.0", 1000000)
    conn.register_model("ca-nc", "1", "doubles")  # containerless
    assert conn.get_model_info("ca-nc", 1)["container_name"] == "NO_CONTAINER"
    with pytest.raises(ca.exceptions.ClipperException, match="containerless"):
        conn.set_num_replicas("ca-nc", 2)

    conn.deploy_model("ca-sum-model", 1, "doubles", SUM_IMAGE)
    conn.link_model_to_app("ca-sum", "ca-sum-model")
    assert conn.get_linked_models("ca-sum") == ["ca-sum-model"]
    wait_output(conn, "ca-sum", [1.0, 2.0, 3.5], 6.5)

    conn.deploy_model("ca-sum-model", "2", "doubles", "python:clipper.model_runtime.models:batch_size", labels=["b"],
                      batch_size=1)
    assert conn.get_current_model_version("ca-sum-model") == "2"
    wait_output(conn, "ca-sum", [1.0, 2.0, 3.5], 1)
    assert {"ca-sum-model:1", "ca-sum-model:2", "ca-nc:1"} <= set(conn.get_all_models())
    info = conn.get_model_info("ca-sum-model", 2)
    assert info["labels"] == ["b"] and info["is_current_version"] is True
    assert info["container_name"] == "python:clipper.model_runtime.models:batch_size"

    conn.set_model_version("ca-sum-model", 1)  # roll back
    assert conn.get_current_model_version("ca-sum-model") == "1"
    wait_output(conn, "ca-sum", [1.0, 2.0, 3.5], 6.5)

    assert conn.get_num_replicas("ca-sum-model") == 1
    conn.set_num_replicas("ca-sum-model", 2)
    assert conn.get_num_replicas("ca-sum-model", 1) == 2 == local.get_num_replicas("ca-sum-model", "1")
    deadline = time.monotonic() + PROPAGATION_S
    while len(mine := [c for c in conn.get_all_model_replicas(verbose=True) if c["model_id"] == "ca-sum-model:1"]) < 2:
        assert time.monotonic() < deadline, conn.get_all_model_replicas(verbose=True)
        time.sleep(0.05)
    assert all(f"ca-sum-model:1:{c['model_replica_id']}" in conn.get_all_model_replicas() for c in mine)
    assert conn.get_model_replica_info("ca-sum-model", 1, mine[0]["model_replica_id"]) == mine[0]
    assert conn.get_model_replica_info("ca-sum-model", 1, 12345) is None

    metrics = conn.inspect_instance()
    assert any("model:ca-sum-model:1:num_replicas" in entry for entry in metrics["counters"])

    conn.unlink_model_from_app("ca-sum", "ca-sum-model")
    assert conn.get_linked_models("ca-sum") == []
    wait_default(conn, "ca-sum", [1.0])

    conn.stop_inactive_model_versions(["ca-sum-model"])  # version 2 (1 is current)
    assert conn.get_model_info("ca-sum-model", 2) is None
    assert local.get_num_replicas("ca-sum-model", "2") == 0
    conn.deploy_model("ca-sum-model", 3, "doubles", SUM_IMAGE)
    conn.stop_versioned_models({"ca-sum-model": ["3"]})
    assert conn.get_model_info("ca-sum-model", 3) is None and local.get_num_replicas("ca-sum-model", "3") == 0
    conn.stop_models(["ca-sum-model", "ca-nc"])
    assert not [m for m in conn.get_all_models() if m.startswith(("ca-sum-model:", "ca-nc:"))]
    assert local.get_num_replicas("ca-sum-model", "1") == 0


def test_python_closure_deployer(ca: types.SimpleNamespace, conn: Any, local: LocalContainerManager) -> None:
    offset = 100.0

    def add_offset(xs):
        return [str(sum(x) + offset) for x in xs]

    ca.python_deployer.create_endpoint(conn, "ca-closure", "doubles", add_offset, default_output="-1.0",
                                       base_image="local-python-closure")
    assert conn.get_linked_models("ca-closure") == ["ca-closure"]
    image = conn.get_model_info("ca-closure", 1)["container_name"]
    assert image.startswith("local:") and Path(image[len("local:"):], "func.pkl").is_file()
    wait_output(conn, "ca-closure", [1.0, 2.0], 103.0)

    ca.python_deployer.deploy_python_closure(conn, "ca-closure", "2", "doubles", lambda xs: ["-5" for _ in xs],
                                             base_image="local-python-closure", num_replicas=2)
    assert conn.get_num_replicas("ca-closure") == 2
    wait_output(conn, "ca-closure", [1.0, 2.0], -5)
    assert conn.test_predict_function({"input": [1.0, 2.0]}, add_offset, "doubles") == ["103.0"]


def test_logs_and_stop_all_model_containers(conn: Any, local: LocalContainerManager, tmp_path: Path) -> None:
    conn.deploy_model("ca-last", 1, "doubles", SUM_IMAGE)
    paths = conn.get_clipper_logs(logging_dir=str(tmp_path))
    assert {"query_frontend.log", "management_frontend.log", "redis.log"} <= {Path(p).name for p in paths}
    conn.stop_all_model_containers()
    assert conn.get_all_models() == []
    assert local.status()["replicas"] == []
    assert json.loads(json.dumps(conn.get_all_apps())) is not None
