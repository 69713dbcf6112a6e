"""Shared fixtures: real query-frontend and model-container processes on free 127.0.0.1 ports.

`cluster` (per test) and `module_cluster` (per module) hand out a `Cluster`, which starts
processes and kills all of them at teardown:

    fe = cluster.frontend({"apps": [...], "models": [...]}, heartbeat_timeout=2)
    cluster.container(fe, "m", "sum", input_type="integers")
    fe.wait_replicas("m", 1)
    fe.predict("app", [1, 2])
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clipper.managers.local import LocalContainerManager
from clipper.ports import free_ports
from clipper.state import StateStore
from clipper.state.redis_server import RedisServer, redis_server_binary

REPO = Path(__file__).resolve().parents[1]
#: Timeout of every HTTP request a test makes, so that a hung server fails the test, not the run.
HTTP_TIMEOUT_S = 10.0
#: How long a frontend may take to answer its first request, or containers to register.
START_TIMEOUT_S = 20.0
#: The heartbeat timeout of the query frontends `make_manager` starts (Clipper: 30).
MANAGER_HEARTBEAT_TIMEOUT_S = 3


def make_manager(name: str, cluster_dir: Path, **kwargs: Any) -> LocalContainerManager:
    """A `LocalContainerManager` on free ports (0 = chosen at start) with its state under `cluster_dir`."""
    settings: dict[str, Any] = {"clipper_query_port": 0, "clipper_management_port": 0, "clipper_rpc_port": 0,
                                "redis_port": 0, "start_timeout": 30, "use_prometheus": False,
                                "query_frontend_args": ["--heartbeat-timeout", str(MANAGER_HEARTBEAT_TIMEOUT_S)]}
    return LocalContainerManager(cluster_name=name, cluster_dir=cluster_dir, **{**settings, **kwargs})



class TimeoutSession(requests.Session):
    """A `requests.Session` whose requests time out after HTTP_TIMEOUT_S unless told otherwise."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return super().request(*args, **kwargs)


def flat_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """`GET /metrics` as one name -> value map: counters as ints, the rest as their dicts."""
    out: dict[str, Any] = {}
    for entry in report.get("counters", []):
        for name, value in entry.items():
            out[name] = int(value["count"])
    for kind in ("ratio_counters", "meters", "histograms"):
        for entry in report.get(kind, []):
            out.update(entry)
    return out


class RawConnection:
    """A plain TCP connection to a frontend, for keep-alive, pipelining and non-HTTP bytes."""

    def __init__(self, port: int, timeout: float = HTTP_TIMEOUT_S) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        """The bytes of one HTTP/1.1 request."""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Reads one response (Content-Length framed): status, lower-cased headers, body."""
        status_line = self.reader.readline()
        assert status_line, "connection closed before a response"
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, value = line.decode("latin-1").split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = self.reader.read(int(headers.get("content-length", "0")))
        return int(status), headers, body

    def at_eof(self) -> bool:
        """True when the server has closed the connection (waits up to the socket timeout)."""
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True


class Frontend:
    """A running `python -m clipper.frontend.query` process and an HTTP client for it."""

    def __init__(self, proc: subprocess.Popen, port: int, rpc_port: int, log_path: Path) -> None:
        self.proc, self.port, self.rpc_port, self.log_path = proc, port, rpc_port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.http = TimeoutSession()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + path, **kwargs)

    def predict(self, app: str, value: Any, **extra: Any) -> dict[str, Any]:
        """POSTs `{"input": value, **extra}` and returns the 200 response's JSON."""
        r = self.post(f"/{app}/predict", json={"input": value, **extra})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def predict_batch(self, app: str, values: list[Any], timeout: float = HTTP_TIMEOUT_S) -> list[dict[str, Any]]:
        r = self.post(f"/{app}/predict", json={"input_batch": values}, timeout=timeout)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["batch_predictions"]

    def metrics(self) -> dict[str, Any]:
        r = self.get("/metrics")
        assert r.status_code == 200, (r.status_code, r.text)
        return flat_metrics(r.json())

    def connect(self) -> RawConnection:
        """A raw TCP connection to the HTTP port."""
        return RawConnection(self.port)

    def replicas(self, model: str, version: str = "1") -> int:
        return self.metrics().get(f"model:{model}:{version}:num_replicas", 0)

    def wait_replicas(self, model: str, n: int, version: str = "1", timeout: float = START_TIMEOUT_S) -> None:
        """Waits until `n` replicas of the model version are connected."""
        deadline = time.monotonic() + timeout
        while (seen := self.replicas(model, version)) != n:
            assert self.proc.poll() is None, f"frontend exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"{model}:{version} has {seen} replicas, expected {n}"
            time.sleep(0.05)


class Cluster:
    """Starts frontends and containers as subprocesses; `close` kills every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.frontends: list[Frontend] = []
        self._logs = 0

    def _log_file(self, stem: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self._logs:02d}-{stem}.log"

    def _spawn(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts `argv` in its own session (so that `close` ends its children too, e.g. a wrapper's)."""
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def frontend(self, config: dict[str, Any] | None = None, *, redis_port: int | None = None,
                 ports: tuple[int, int] | None = None, heartbeat_timeout: float | None = None,
                 max_body_bytes: int | None = None, cache_size: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> Frontend:
        """Starts a query frontend serving `config`, or what Redis on `redis_port` holds, and waits until it
        answers `GET /metrics`. `ports` (http, rpc) fixes the ports, e.g. to restart a frontend in place."""
        if config is not None:
            config_path = self.workdir / f"config-{len(self.frontends)}.json"
            config_path.write_text(json.dumps(config))
            options = ["--config", str(config_path)]
        else:
            options = ["--redis-port", str(redis_port)]
        for flag, value in (("--heartbeat-timeout", heartbeat_timeout), ("--max-body-bytes", max_body_bytes),
                            ("--cache-size", cache_size)):
            if value is not None:
                options += [flag, str(value)]
        options += extra_args
        for _attempt in range(3):  # a port picked as free may be taken before the frontend binds it
            port, rpc_port = ports or free_ports(2)
            log_path = self._log_file("frontend")
            argv = [sys.executable, "-m", "clipper.frontend.query",
                    "--port", str(port), "--rpc-port", str(rpc_port), *options]
            fe = Frontend(self._spawn(argv, log_path), port, rpc_port, log_path)
            if self._wait_serving(fe):
                self.frontends.append(fe)
                return fe
        raise AssertionError(f"query frontend did not start:\n{fe.log_tail()}")

    @staticmethod
    def _wait_serving(fe: Frontend) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if fe.proc.poll() is not None:
                return False
            try:
                if requests.get(fe.url + "/metrics", timeout=1.0).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"query frontend did not answer within {START_TIMEOUT_S} s:\n{fe.log_tail()}")

    def container(self, fe: Frontend, model: str, predict: str, *, version: str = "1",
                  input_type: str = "doubles", env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts `clipper.model_runtime.models:<predict>` serving `model:version` to `fe`."""
        container_env = {
            "CLIPPER_MODEL_NAME": model,
            "CLIPPER_MODEL_VERSION": version,
            "CLIPPER_PORT": str(fe.rpc_port),
            "CLIPPER_IP": "127.0.0.1",
            "CLIPPER_INPUT_TYPE": input_type,
            **(env or {}),
        }
        argv = [sys.executable, "-m", "clipper.model_runtime", "--predict", f"clipper.model_runtime.models:{predict}"]
        return self._spawn(argv, self._log_file(f"container-{model}"), container_env)

    def command_container(self, fe: Frontend, model: str, argv: list[str], *, version: str = "1",
                          input_type: str = "doubles", env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts any container command `argv` serving `model:version` to `fe`, with Clipper's environment
        (CLIPPER_MODEL_NAME/VERSION, CLIPPER_IP/PORT, CLIPPER_INPUT_TYPE) on top of `env`."""
        container_env = {
            **(env or {}),
            "CLIPPER_MODEL_NAME": model,
            "CLIPPER_MODEL_VERSION": version,
            "CLIPPER_PORT": str(fe.rpc_port),
            "CLIPPER_IP": "127.0.0.1",
            "CLIPPER_INPUT_TYPE": input_type,
        }
        return self._spawn(argv, self._log_file(f"container-{model}"), container_env)

    def close(self) -> None:
        for fe in self.frontends:
            fe.http.close()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the process and whatever it started
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()



# ---------------------------------------------------------------------- Docker

@functools.cache
def docker_engine() -> tuple[Any, str | None]:
    """``(client, None)`` when a Docker engine answers, else ``(None, why not)``; asked once per run."""
    try:
        import docker
    except ImportError:
        return None, "the docker Python package is not installed (pip install 'clipper-serving[admin]')"
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        return None, f"the Docker engine does not answer ({type(e).__name__}: {e})"
    return client, None


def docker_problem() -> str | None:
    """Why the Docker tests cannot run here (None: they can)."""
    return docker_engine()[1]


#: Skips a test, with the reason, when no Docker engine answers (add ``pytest.mark.docker`` too).
needs_docker = pytest.mark.skipif(docker_problem() is not None, reason=f"needs a Docker engine: {docker_problem()}")


@pytest.fixture(scope="session")
def current_images() -> float:
    """Brings the default images up to date with this checkout once per run (minutes the first time, an
    inspection after that), so that no Docker test runs on images a previous checkout left; the seconds taken."""
    from clipper import images

    started = time.monotonic()
    built = images.build_images(progress=print)
    took = time.monotonic() - started
    print(f"\n[docker] images: {'built ' + ', '.join(built) if built else 'up to date'} ({took:.1f} s)")
    return took


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Processes for one test."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Processes shared by the tests of one module."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A `requests` session with a default timeout."""
    with TimeoutSession() as s:
        yield s


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the tests of one module (skipped when it is not installed)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(log_path=tmp_path_factory.mktemp("redis") / "redis.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[StateStore]:
    """A StateStore over an empty database."""
    s = StateStore.connect(redis_server.host, redis_server.port)
    s.redis.flushdb()
    try:
        yield s
    finally:
        s.close()
