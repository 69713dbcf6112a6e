"""The Docker images of `clipper.images`: built once (minutes the first time), then run for real.

Skipped when no Docker engine answers. The module fixture builds every image (cached: a second build
only inspects them); the tests then run clipper/redis, the two frontends and clipper/noop-container,
published on 127.0.0.1 and joined by a user-defined network, and remove every container and network
they made. Run with ``-s`` to see the build progress and the image sizes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import docker_engine, needs_docker

from clipper import images
from clipper.images import COMPAT_VERSION, VERSION, image_ref

# ----------------------------------------------------------------------------- no Docker needed


def test_manylinux_platforms_cover_older_glibc() -> None:
    tags = images._manylinux_platforms("glibc 2.36")
    machine = platform.machine()
    assert tags[0] == f"manylinux_2_36_{machine}"
    assert f"manylinux_2_17_{machine}" in tags and f"manylinux2014_{machine}" in tags
    assert tags[-1] == f"linux_{machine}"


@pytest.mark.parametrize("layout", ["one-line", "deb822"])
def test_the_debian_mirror_comes_from_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.delenv("CLIPPER_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("CLIPPER_DEBIAN_SUITE", raising=False)
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text('NAME="Debian"\nVERSION_CODENAME=trixie\n')
    if layout == "one-line":
        (tmp_path / "etc/apt/sources.list").write_text(
            "# deb http://commented.example/debian trixie main\n"
            "deb http://security.example/debian-security trixie-security main\n"
            "deb [arch=amd64] http://mirror.example/debian/ trixie main\n")
    else:
        (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(
            "Types: deb\nURIs: http://security.example/debian-security\nSuites: trixie-security\n\n"
            "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: trixie trixie-updates\n"
            "Components: main\n")
    assert images.debian_suite_and_mirror(root=tmp_path) == ("trixie", "http://mirror.example/debian")
    monkeypatch.setenv("CLIPPER_DEBIAN_MIRROR", "http://override.example/debian/")
    assert images.debian_suite_and_mirror(root=tmp_path) == ("trixie", "http://override.example/debian")


def test_no_mirror_is_an_error_that_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPPER_DEBIAN_MIRROR", raising=False)
    monkeypatch.setenv("CLIPPER_DEBIAN_SUITE", "bookworm")
    with pytest.raises(images.ImageBuildError, match="CLIPPER_DEBIAN_MIRROR"):
        images.debian_suite_and_mirror(root=tmp_path)
    assert images.debian_suite_and_mirror(required=False, root=tmp_path) == ("bookworm", "")


def test_no_mirror_host_is_written_in_the_code() -> None:
    assert "debian.org" not in Path(images.__file__).read_text()


def test_project_files_skip_build_outputs() -> None:
    src = images.source_dir()
    if src is None:
        pytest.skip("not a source checkout")
    files = [p.relative_to(src).as_posix() for p in images.project_files(src)]
    assert "pyproject.toml" in files and "clipper/images.py" in files
    assert not [f for f in files if f.endswith((".so", ".pyc")) or "__pycache__" in f or f.startswith("target/")]
    # the package data the images' wheel must carry (an .html of the status page is not a Cython annotation)
    assert {"clipper/frontend/management/static/status.html", "clipper/frontend/openapi/query.json"} <= set(files)


def test_every_recipe_has_a_dockerfile() -> None:
    if images.source_dir() is None:
        pytest.skip("not a source checkout")
    root = images.containers_dir()
    assert (root / "base" / "mkrootfs.sh").is_file()
    for name, recipe in images.RECIPES.items():
        if name != "base":
            assert (root / name / "Dockerfile").is_file(), name
        if recipe.wheels:
            assert (root / recipe.wheels).is_file(), recipe.wheels


# ----------------------------------------------------------------------------- with Docker




CLIENT, _ = docker_engine()
TEST_LABEL = {"ai.clipper.test": "test_images"}


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    """Builds every image (if missing or out of date); returns the first build's time and the sizes."""
    base = os.environ.get(images.BASE_ENV)
    have_base = images._inspect(CLIENT, image_ref("base")) is not None
    if not base and not have_base and shutil.which("debootstrap") is None:
        pytest.skip("clipper/base is missing and debootstrap is not installed (apt-get install debootstrap)")
    started = time.monotonic()
    names = images.build_images(progress=print)
    elapsed = time.monotonic() - started
    sizes = {}
    for name in images.IMAGE_NAMES:
        info = images._inspect(CLIENT, image_ref(name))
        if info is not None:
            sizes[name] = info["Size"]
    print(f"\n[test_images] build_images(): {len(names)} built in {elapsed:.1f} s: {', '.join(names) or '-'}")
    for name, size in sizes.items():
        print(f"[test_images]   {image_ref(name):<42} {size / 1e6:7.0f} MB")
    return {"built": names, "seconds": elapsed, "sizes": sizes}


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Containers and networks appended here are removed after the test, whatever happens."""
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        try:
            if hasattr(thing, "stop") and hasattr(thing, "logs"):
                thing.remove(force=True)
            else:
                thing.remove()
        except Exception as e:  # noqa: BLE001 - keep cleaning
            print(f"cleanup of {thing}: {e}")


def _host_port(container: Any, port: str) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(port) or []
    assert bindings, f"{port} is not published: {container.attrs['NetworkSettings']['Ports']}"
    return int(bindings[0]["HostPort"])


def _logs(*containers: Any) -> str:
    out = []
    for c in containers:
        try:
            out.append(f"--- {c.name} ---\n{c.logs(tail=40).decode(errors='replace')}")
        except Exception as e:  # noqa: BLE001
            out.append(f"--- {c.name}: no logs ({e})")
    return "\n".join(out)


def _wait_healthy(container: Any, timeout: float, *others: Any) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status")
        if status == "healthy":
            return
        if container.status == "exited":
            break
        time.sleep(0.5)
    raise AssertionError(f"{container.name} is {container.status}/{status}\n{_logs(container, *others)}")


def _http(method: str, url: str, body: Any = None, timeout: float = 5.0,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@pytest.mark.docker
@needs_docker
def test_images_are_tagged(built: dict[str, Any]) -> None:
    for name in images.IMAGE_NAMES:
        info = images._inspect(CLIENT, image_ref(name))
        assert info is not None, name
        tags = set(info["RepoTags"])
        assert {image_ref(name), image_ref(name, COMPAT_VERSION)} <= tags
        assert info["Config"]["Labels"][images.HASH_LABEL]
    closure = images._inspect(CLIENT, image_ref("python-closure-container"))
    python = closure["Config"]["Labels"][images.PYTHON_LABEL].replace(".", "")
    assert f"clipper/python{python}-closure-container:{VERSION}" in closure["RepoTags"]
    assert images.ensure_image("clipper/query_frontend:0.4.1", progress=None, rebuild_stale=False) == image_ref(
        "query_frontend")
    probe = "import importlib.util as u; print([m for m in ('requests', 'docker') if u.find_spec(m)])"
    out = CLIENT.containers.run(image_ref("python-runtime"), ["python3", "-c", probe], remove=True,
                                network_mode="none")
    assert out.decode().strip() == "[]", "the images leave out the admin extra"


@pytest.mark.docker
@needs_docker
def test_second_build_is_cached(built: dict[str, Any]) -> None:
    # sources edited meanwhile make a call rebuild; with nothing changed a call must build nothing
    for _attempt in range(4):
        started = time.monotonic()
        names = images.build_images(progress=None)
        elapsed = time.monotonic() - started
        if not names:
            break
    print(f"\n[test_images] cached build_images(): {elapsed:.2f} s")
    assert names == []
    assert elapsed < 15
    rows = {r["name"]: r for r in images.list_images() if r["name"] in images.IMAGE_NAMES}  # not those built on use
    assert all(r["status"] == "up to date" for r in rows.values()), rows


@pytest.mark.docker
@needs_docker
def test_redis_and_management_frontend(built: dict[str, Any], cleanup: list[Any]) -> None:
    suffix = uuid.uuid4().hex[:8]
    net = CLIENT.networks.create(f"clipper-test-{suffix}", driver="bridge", labels=TEST_LABEL)
    cleanup.append(net)
    redis = CLIENT.containers.run(
        image_ref("redis"), ["redis-server", "--port", "6379"], name=f"redis-{suffix}", detach=True,
        network=net.name, ports={"6379/tcp": ("127.0.0.1", None)}, labels=TEST_LABEL,
    )
    cleanup.append(redis)
    port = _host_port(redis, "6379/tcp")
    deadline, answer = time.monotonic() + 30, b""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                answer = s.recv(64)
            if answer == b"+PONG\r\n":
                break
        except OSError:
            pass
        time.sleep(0.3)
    assert answer == b"+PONG\r\n", _logs(redis)
    _wait_healthy(redis, 30)

    args = [f"--redis_ip={redis.name}", "--redis_port=6379"]
    # bound to 0.0.0.0 in its container: without a token the frontend refuses to start, and says why
    refused = CLIENT.containers.run(image_ref("management_frontend"), args, name=f"mgmt_refused-{suffix}",
                                    detach=True, network=net.name, labels=TEST_LABEL)
    cleanup.append(refused)
    assert refused.wait(timeout=60)["StatusCode"] == 2, _logs(refused)
    assert "accepts connections from other machines" in _logs(refused)
    mgmt = CLIENT.containers.run(
        image_ref("management_frontend"), args, name=f"mgmt_frontend-{suffix}", detach=True, network=net.name,
        ports={"1338/tcp": ("127.0.0.1", None)}, labels=TEST_LABEL, environment={"CLIPPER_ADMIN_TOKEN": "t0ken"},
    )
    cleanup.append(mgmt)
    mport = _host_port(mgmt, "1338/tcp")
    deadline, status = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        try:
            status, _ = _http("GET", f"http://127.0.0.1:{mport}/admin/ping")
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.3)
    assert status == 200, _logs(mgmt, redis)
    _wait_healthy(mgmt, 30, redis)
    url = f"http://127.0.0.1:{mport}/admin/get_all_applications"
    assert _http("POST", url, {"verbose": False})[0] == 401
    assert _http("POST", url, {"verbose": False}, headers={"Authorization": "Bearer t0ken"}) == (200, [])


def _predict_until(port: int, app: str, body: Any, timeout: float, *containers: Any) -> dict[str, Any]:
    """POSTs to /<app>/predict until a non-default answer (the model has connected) or `timeout`."""
    deadline, answer = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            status, answer = _http("POST", f"http://127.0.0.1:{port}/{app}/predict", body)
            if status == 200 and isinstance(answer, dict) and answer.get("default") is False:
                return answer
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{app}: {answer}\n{_logs(*containers)}")


@pytest.mark.docker
@needs_docker
def test_query_frontend_serves_model_containers(built: dict[str, Any], cleanup: list[Any], tmp_path: Path) -> None:
    """clipper/query_frontend with a --config file, clipper/noop-container and a closure in
    clipper/python-closure-container (func.pkl at /model), over a user-defined network."""
    import cloudpickle

    suffix = uuid.uuid4().hex[:8]
    config = {
        "models": [{"name": "noop", "version": "1", "input_type": "doubles"},
                   {"name": "adder", "version": "1", "input_type": "doubles"}],
        "apps": [{"name": "app", "input_type": "doubles", "latency_slo_micros": 5_000_000,
                  "default_output": "default", "models": ["noop"]},
                 {"name": "sums", "input_type": "doubles", "latency_slo_micros": 5_000_000,
                  "default_output": "default", "models": ["adder"]}],
    }
    conf_dir, model_dir = tmp_path / "config", tmp_path / "model"
    conf_dir.mkdir()
    model_dir.mkdir()
    (conf_dir / "apps.json").write_text(json.dumps(config))
    (model_dir / "func.pkl").write_bytes(cloudpickle.dumps(lambda xs: [str(float(sum(x))) for x in xs]))
    for d in (tmp_path, conf_dir, model_dir):
        d.chmod(0o755)
    net = CLIENT.networks.create(f"clipper-test-{suffix}", driver="bridge", labels=TEST_LABEL)
    cleanup.append(net)
    frontend = CLIENT.containers.run(
        image_ref("query_frontend"), ["--config", "/config/apps.json", "--insecure"], name=f"query_frontend-{suffix}",
        detach=True, network=net.name, volumes={str(conf_dir): {"bind": "/config", "mode": "ro"}},
        ports={"1337/tcp": ("127.0.0.1", None), "7000/tcp": ("127.0.0.1", None)}, labels=TEST_LABEL,
    )
    cleanup.append(frontend)
    env = {"CLIPPER_MODEL_VERSION": "1", "CLIPPER_IP": frontend.name, "CLIPPER_INPUT_TYPE": "doubles"}
    noop = CLIENT.containers.run(
        image_ref("noop-container"), name=f"noop_1-{suffix}", detach=True, network=net.name, labels=TEST_LABEL,
        environment={**env, "CLIPPER_MODEL_NAME": "noop"},
    )
    cleanup.append(noop)
    adder = CLIENT.containers.run(
        image_ref("python-closure-container"), name=f"adder_1-{suffix}", detach=True, network=net.name,
        labels=TEST_LABEL, environment={**env, "CLIPPER_MODEL_NAME": "adder"},
        volumes={str(model_dir): {"bind": "/model", "mode": "ro"}},
    )
    cleanup.append(adder)
    port = _host_port(frontend, "1337/tcp")
    answer = _predict_until(port, "app", {"input": [1.0, 2.0, 3.0]}, 60, frontend, noop)
    assert float(answer["output"]) == 1.0
    answer = _predict_until(port, "sums", {"input": [1.0, 2.0, 3.5]}, 60, frontend, adder)
    assert float(answer["output"]) == 6.5
    _wait_healthy(noop, 30, frontend)
    _wait_healthy(adder, 30, frontend)
    _wait_healthy(frontend, 30)
