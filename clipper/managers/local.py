"""`LocalContainerManager`: a whole cluster as child processes on 127.0.0.1 (the default manager).

`start_clipper` starts, in this order, each one after the previous answers:

1. Redis on `redis_port` (skipped when `redis_ip` is given: then that Redis is used, never stopped
   nor cleaned). It keeps the cluster's state in an append-only file under
   ``<cluster_dir>/redis-data/`` (``appendonly yes``, ``appendfsync everysec``) and runs under a
   supervisor (``python -I clipper/state/redis_server.py supervise -- redis-server ...``, the
   ``redis`` process of `status()`) that restarts it on the same port whenever it exits, after a
   backoff of 0.1 s doubling up to 5 s. The frontends reconnect on their own. With
   ``redis_persistence=False``: ``redis-server --save '' --appendonly no`` alone, as before (in
   memory, not restarted);
2. the management frontend ``python -m clipper.frontend.management`` on `clipper_management_port`;
3. the query frontend ``python -m clipper.frontend.query`` on `clipper_query_port` (HTTP) and
   `clipper_rpc_port` (model replicas).

Model replicas are ``python -m clipper.model_runtime`` processes configured by Clipper's environment
variables (``CLIPPER_MODEL_NAME``, ``CLIPPER_MODEL_VERSION``, ``CLIPPER_IP``, ``CLIPPER_PORT``,
``CLIPPER_INPUT_TYPE``, ``CLIPPER_MODEL_PATH``). `deploy_model` and `set_num_replicas` return once
every new replica has registered with the query frontend, and fail with a `ClipperException`
quoting the end of its log when one exits or does not register in time.

Model "images". A Docker image is replaced by a directory:

* ``build_model`` (``ClipperConnection.build_model`` and every deployer) copies the model directory
  (e.g. the one with ``func.pkl`` written by `deploy_python_closure`) to
  ``<cluster_dir>/images/<name>/<version>`` and returns ``"local:<that path>"``;
  ``pkgs_to_install`` are installed there with ``pip install --target <image>/modules`` (the
  container runtime puts ``<model path>/modules`` on ``sys.path``); `base_image` and
  `container_registry` are recorded in ``image.json`` and otherwise ignored.
* ``deploy_model(..., image=...)`` accepts ``"local:/path/to/dir"`` or a plain directory path (a
  directory holding ``func.pkl``), or ``"python:package.module:function"`` for a function the
  replica imports (``CLIPPER_PREDICT``; the module must be installed or on ``PYTHONPATH``, e.g.
  through `extra_env`), or ``"command:<command line>"``: any program as the replica (a model container
  in another language), split with `shlex` and run as is (see `command_image`). Anything else, e.g. a
  Docker image name, is refused.

A replica gets Clipper's environment (``CLIPPER_MODEL_NAME``, ``CLIPPER_MODEL_VERSION``, ``CLIPPER_IP``,
``CLIPPER_PORT``, ``CLIPPER_INPUT_TYPE``) plus ``CLIPPER_READY_FILE``, which our runtime touches once it has
registered. A ``command:`` replica need not touch it: it counts as registered once the query frontend
reports it (the management API's replica count, as `DockerContainerManager` does for images without a
ready file). Its working directory is ``<cluster_dir>/run``, so give the program as an absolute path.

Everything runs on 127.0.0.1 and is recorded in ``<cluster_dir>/cluster.json`` (pids, ports,
replicas), by default ``/tmp/clipper-clusters/<cluster_name>/`` (base directory:
``$CLIPPER_CLUSTERS_DIR``), so that another Python process (or the ``clipper`` command) can
`connect()` to the cluster, resize it and stop it. The processes run in their own sessions: like
Docker containers they outlive the Python process that started them, until `stop_all()`.

Logs go to ``<log_dir>`` (default ``<cluster_dir>/logs``): ``redis.log``,
``management_frontend.log``, ``query_frontend.log`` and one ``model-<name>-<version>-<n>.log`` per
replica (the Redis supervisor writes to ``redis.log`` too). Apart from Redis, nothing is restarted
behind your back: a frontend or replica that dies stays dead (see `status()`), and `start_clipper`
refuses to start a cluster whose processes still run.

State across stops. `stop_all()` keeps Clipper's meaning: it also removes ``<cluster_dir>/redis-data/``,
so the next `start_clipper()` starts empty. `stop_all(keep_state=True)` stops Redis last (it writes
its file out) and keeps that folder together with the list of model replicas that ran
(``redis-data/clipper-replicas.json``): the next `start_clipper()` loads apps, models, versions, links
and selection state, and starts those replicas again. A cluster that ended without `stop_all` (a
crash, a reboot: the folder survives a reboot when it is not under a /tmp that the boot clears; move
it with ``$CLIPPER_CLUSTERS_DIR`` or `cluster_dir`) comes back the same way, its replicas taken from
the state file it left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import management_client
from ..exceptions import ClipperException
from ..frontend.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_QUERY_PORT,
    DEFAULT_REDIS_PORT,
    DEFAULT_RPC_PORT,
)
from ..input_types import parse_input_type
from ..ports import free_port, port_free
from ..state import redis_server
from ..state.redis_server import ping as redis_ping
from . import prometheus
from .base import ClusterAdapter, ContainerManager, http_ok, wait_frontend_replicas

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("clipper.managers.local")

LOCAL_IMAGE_PREFIX = "local:"
PYTHON_IMAGE_PREFIX = "python:"
COMMAND_IMAGE_PREFIX = "command:"
#: Where clusters keep their state, logs and images unless told otherwise. Not Clipper's
#: ``/tmp/clipper``: a directory named ``clipper`` in /tmp would shadow this package (as a namespace
#: package) for every script run from /tmp.
DEFAULT_BASE_DIR = os.environ.get("CLIPPER_CLUSTERS_DIR", "/tmp/clipper-clusters")
_HOST = "127.0.0.1"
_ROLES = ("redis", "management_frontend", "query_frontend")
#: The replicas to start again, kept next to Redis's data by `stop_all(keep_state=True)`.
KEPT_REPLICAS_FILE = "clipper-replicas.json"


# ---------------------------------------------------------------------- process helpers


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("latin-1")
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def _start_time(pid: int) -> int | None:
    st = _proc_stat(pid)
    return st[1] if st else None


def _pid_alive(pid: int, start_time: int | None) -> bool:
    """True when `pid` runs and is the process started at `start_time` (not a reused pid)."""
    if not Path("/proc/self/stat").exists():  # pragma: no cover - no procfs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start_time is None or st[1] == start_time


def log_tail(path: str | os.PathLike[str], lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def command_image(argv: Sequence[str]) -> str:
    """The ``command:`` image that runs `argv` as a model replica (``shlex``-quoted, so `resolve_image` splits
    it back into the same argv)."""
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        raise ClipperException(f"A command must be a non-empty list of strings, got {argv!r}")
    return COMMAND_IMAGE_PREFIX + shlex.join(argv)


def resolve_image(image: str) -> dict[str, Any]:
    """How a replica runs `image`: ``{"model_path": dir}``, ``{"predict": "module:function"}`` or
    ``{"command": [argv...]}``."""
    if not isinstance(image, str) or not image:
        raise ClipperException(f"Invalid model image {image!r}")
    if image.startswith(COMMAND_IMAGE_PREFIX):
        try:
            argv = shlex.split(image[len(COMMAND_IMAGE_PREFIX):])
        except ValueError as e:
            raise ClipperException(f"Invalid model image {image!r}: {e}") from e
        if not argv:
            raise ClipperException(f"Invalid model image {image!r}: expected 'command:<command line>'")
        return {"command": argv}
    if image.startswith(PYTHON_IMAGE_PREFIX):
        spec = image[len(PYTHON_IMAGE_PREFIX):]
        module, sep, func = spec.partition(":")
        if not sep or not module or not func:
            raise ClipperException(f"Invalid model image {image!r}: expected 'python:package.module:function'")
        return {"predict": spec}
    path = Path(image[len(LOCAL_IMAGE_PREFIX):] if image.startswith(LOCAL_IMAGE_PREFIX) else image).expanduser()
    if path.is_dir():
        if not (path / "func.pkl").is_file():
            raise ClipperException(f"Model image directory {path} has no func.pkl")
        return {"model_path": str(path.resolve())}
    if image.startswith(LOCAL_IMAGE_PREFIX) or image.startswith(("/", ".", "~")):
        raise ClipperException(f"Model image directory {path} does not exist")
    raise ClipperException(
        f"LocalContainerManager cannot run model image {image!r}: it runs local directories holding func.pkl "
        "('local:/path/to/dir', as returned by ClipperConnection.build_model), 'python:package.module:function' "
        "or 'command:<command line>'. "
        "Docker images need a Docker container manager."
    )


def _replica_specs(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replica records grouped as ``[{"name", "version", "input_type", "image", "count"}]`` (first seen first)."""
    specs: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        key = (r["name"], str(r["version"]))
        if key in specs:
            specs[key]["count"] += 1
        else:
            specs[key] = {"name": r["name"], "version": str(r["version"]), "input_type": r["input_type"],
                          "image": r["image"], "count": 1}
    return list(specs.values())


# ---------------------------------------------------------------------- the manager


class LocalContainerManager(ContainerManager):
    """Runs Redis, both frontends and the model replicas as local processes on 127.0.0.1.

    Arguments follow `DockerContainerManager` where they make sense. A port of ``0`` (or None)
    means "pick a free one when the cluster starts". `redis_ip` uses an already-running Redis at
    `redis_ip:redis_port` instead of starting one. `python` is the interpreter of the frontends and
    replicas (default ``$CLIPPER_PYTHON``, else this one). `cluster_dir` (default
    ``/tmp/clipper-clusters/<cluster_name>``) holds the state file, logs (unless `log_dir`) and model images.
    `start_timeout` bounds the wait for each frontend and each new model replica; `stop_timeout`
    is the grace period between SIGTERM and SIGKILL. `extra_env` is added to every process's
    environment; `query_frontend_args` / `management_frontend_args` are appended to the frontends'
    command lines (e.g. ``["--heartbeat-timeout", "5"]``). A model's ``gpus`` (`set_model_resources`,
    ``deploy_model(..., gpus=...)``) becomes its replicas' ``CUDA_VISIBLE_DEVICES`` (a count n: devices 0 to
    n-1; 0: none visible; a list: those ids).

    `redis_persistence` (default True): the managed Redis keeps its data in an append-only file in
    `redis_data_dir` (``<cluster_dir>/redis-data``) and a supervisor restarts it when it dies;
    False runs it in memory and unsupervised, as this manager used to (a Redis restarted empty
    would make the frontends drop their configuration, so it is not restarted).

    Prometheus (`clipper.managers.prometheus`): `start_clipper` also runs Debian's ``prometheus`` binary on
    127.0.0.1:`prometheus_port` (default 9090; 0 or a taken port: a free one, with a warning when one was
    asked for), scraping the query frontend and every model replica every `prometheus_scrape_interval`
    seconds; each replica then gets ``CLIPPER_METRICS_PORT`` (a free port on 127.0.0.1) and the manager
    rewrites the file_sd target files in ``<cluster_dir>/prometheus/targets/`` whenever replicas come or
    go. Its data lives in ``<cluster_dir>/prometheus-data`` (removed by `stop_all()` unless
    ``keep_state=True``), its log in ``<log_dir>/prometheus.log``; `prometheus_args` are appended to its
    command line (e.g. ``["--storage.tsdb.retention.time=1d"]``). `use_prometheus`: None (default) runs it
    when the binary is installed and otherwise warns and runs without; True requires it (a
    `ClipperException` naming the package when it is missing); False runs none (`get_metric_addr` then
    raises). Prometheus is an onlooker: its death does not make the cluster unhealthy.

    Clipper's public attributes that make sense without Docker: `cluster_name`, `cluster_identifier`,
    `public_hostname` (127.0.0.1), `clipper_query_port`, `clipper_management_port` and `clipper_rpc_port`
    (the same as `query_port`, `management_port`, `rpc_port`), `redis_ip`, `redis_port`, `external_redis`,
    `prometheus_port` (where Prometheus listens, once started or connected),
    `logger`, and `centralize_log` (False: the logs are files in `log_dir`, no fluentd).
    """

    #: Where the cluster's ports are reached (Clipper's `docker_ip_address`): everything binds 127.0.0.1.
    public_hostname = _HOST

    supports_gpus = True

    def __init__(
        self,
        cluster_name: str = "default-cluster",
        clipper_query_port: int | None = DEFAULT_QUERY_PORT,
        clipper_management_port: int | None = DEFAULT_MANAGEMENT_PORT,
        clipper_rpc_port: int | None = DEFAULT_RPC_PORT,
        redis_ip: str | None = None,
        redis_port: int | None = DEFAULT_REDIS_PORT,
        log_dir: str | os.PathLike[str] | None = None,
        cluster_dir: str | os.PathLike[str] | None = None,
        python: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
        query_frontend_args: Sequence[str] = (),
        management_frontend_args: Sequence[str] = (),
        redis_persistence: bool = True,
        prometheus_port: int | None = prometheus.DEFAULT_PROMETHEUS_PORT,
        use_prometheus: bool | None = None,
        prometheus_scrape_interval: float = prometheus.DEFAULT_SCRAPE_INTERVAL_S,
        prometheus_args: Sequence[str] = (),
    ) -> None:
        if not cluster_name or "/" in cluster_name or cluster_name in (".", ".."):
            raise ClipperException(f"Invalid cluster name {cluster_name!r}")
        self.cluster_name = cluster_name
        self.cluster_identifier = cluster_name
        self.query_port = clipper_query_port or 0
        self.management_port = clipper_management_port or 0
        self.rpc_port = clipper_rpc_port or 0
        self.redis_ip = redis_ip
        self.redis_port = redis_port or 0
        self.cluster_dir = Path(cluster_dir) if cluster_dir is not None else Path(DEFAULT_BASE_DIR) / cluster_name
        self.log_dir = Path(log_dir) if log_dir is not None else self.cluster_dir / "logs"
        self.python = python or os.environ.get("CLIPPER_PYTHON") or sys.executable
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(extra_env or {})
        self.query_frontend_args = [str(a) for a in query_frontend_args]
        self.management_frontend_args = [str(a) for a in management_frontend_args]
        self.redis_persistence = bool(redis_persistence)
        self.prometheus_port = prometheus_port or 0
        self.use_prometheus = use_prometheus
        if not prometheus_scrape_interval or prometheus_scrape_interval <= 0:
            raise ClipperException(f"Invalid prometheus_scrape_interval {prometheus_scrape_interval!r}: must be > 0 s")
        self.prometheus_scrape_interval = float(prometheus_scrape_interval)
        self.prometheus_args = [str(a) for a in prometheus_args]
        #: The running Prometheus's port once started or connected (None: the cluster runs none).
        self._prometheus_running_port: int | None = None
        self.logger = ClusterAdapter(logger, {"cluster_name": cluster_name})
        self._children: dict[int, subprocess.Popen] = {}
        self._assigned_metrics_ports: set[int] = set()

    # ------------------------------------------------------------------ Clipper's attribute names

    @property
    def clipper_query_port(self) -> int:
        """Clipper's name of `query_port`."""
        return self.query_port

    @clipper_query_port.setter
    def clipper_query_port(self, port: int) -> None:
        self.query_port = port

    @property
    def clipper_management_port(self) -> int:
        """Clipper's name of `management_port`."""
        return self.management_port

    @clipper_management_port.setter
    def clipper_management_port(self, port: int) -> None:
        self.management_port = port

    @property
    def clipper_rpc_port(self) -> int:
        """Clipper's name of `rpc_port`."""
        return self.rpc_port

    @clipper_rpc_port.setter
    def clipper_rpc_port(self, port: int) -> None:
        self.rpc_port = port

    @property
    def external_redis(self) -> bool:
        """True when the cluster uses a Redis it did not start (`redis_ip`)."""
        return self.redis_ip is not None

    # ------------------------------------------------------------------ state file

    @property
    def state_path(self) -> Path:
        return self.cluster_dir / "cluster.json"

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus's configuration (``prometheus.yml``) and its file_sd target files (``targets/``)."""
        return self.cluster_dir / "prometheus"

    @property
    def prometheus_data_dir(self) -> Path:
        """Prometheus's time series database (removed by `stop_all()` unless ``keep_state=True``)."""
        return self.cluster_dir / "prometheus-data"

    @property
    def redis_data_dir(self) -> Path:
        """Where the managed Redis keeps its append-only file (and `stop_all(keep_state=True)` its replica list)."""
        return self.cluster_dir / "redis-data"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cluster_dir / "cluster.lock", "a+") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ClipperException(f"Cannot read the cluster state file {self.state_path}: {e}") from e

    def _write_state(self, state: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.cluster_dir, prefix=".cluster.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, self.state_path)
        if state.get("prometheus"):
            self._write_targets(state)

    def _apply_state(self, state: dict[str, Any]) -> None:
        self.query_port = state["query_port"]
        self.management_port = state["management_port"]
        self.rpc_port = state["rpc_port"]
        self.redis_ip = state["redis"]["host"] if not state["redis"]["managed"] else None
        if state["redis"]["managed"]:
            self.redis_persistence = bool(state["redis"].get("persistence", False))
        self.redis_port = state["redis"]["port"]
        self.log_dir = Path(state["log_dir"])
        prom = state.get("prometheus")
        self._prometheus_running_port = prom["port"] if prom else None
        if prom:
            self.prometheus_port = prom["port"]

    def _connected_state(self) -> dict[str, Any]:
        state = self._read_state()
        if state is None:
            raise ClipperException(self._not_running_message())
        self._apply_state(state)
        return state

    def _not_running_message(self) -> str:
        return (f"No local Clipper cluster named '{self.cluster_name}' is running (no state file {self.state_path}). "
                "Start one with ClipperConnection.start_clipper() or `clipper start`.")

    # ------------------------------------------------------------------ processes

    def _alive(self, record: Mapping[str, Any]) -> bool:
        proc = self._children.get(record["pid"])
        if proc is not None:
            return proc.poll() is None
        return _pid_alive(record["pid"], record.get("start_time"))

    def _exit_code(self, record: Mapping[str, Any]) -> int | None:
        proc = self._children.get(record["pid"])
        return proc.poll() if proc is not None else None

    def _spawn(self, role: str, argv: list[str], log_path: Path,
               env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Starts a process in its own session, output to `log_path`, working directory ``<cluster_dir>/run``.

        (A fixed working directory: with ``python -m`` the caller's directory would come first on
        ``sys.path``, and a ``clipper`` directory there would shadow this package.)
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd = self.cluster_dir / "run"
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {role}: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env, **(env or {})},
                    cwd=str(cwd), start_new_session=True, close_fds=True,
                )
            except OSError as e:
                raise ClipperException(f"Cannot start {role} ({argv[0]}): {e}") from e
        self._children[proc.pid] = proc
        return {"role": role, "pid": proc.pid, "start_time": _start_time(proc.pid), "log": str(log_path),
                "argv": argv}

    def _signal(self, record: Mapping[str, Any], sig: int) -> None:
        if not self._alive(record):
            return
        pid = record["pid"]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:  # its own session: reach its children too
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def _terminate(self, records: Sequence[Mapping[str, Any]], graceful: bool = True) -> list[str]:
        """Stops the processes (SIGTERM, SIGKILL after `stop_timeout`); returns those that would not die."""
        records = list(records)
        if not records:
            return []
        for r in records:
            self._signal(r, signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + (self.stop_timeout if graceful else 5.0)
        while any(self._alive(r) for r in records) and time.monotonic() < deadline:
            time.sleep(0.02)
        for r in records:
            if self._alive(r):
                self.logger.warning(f"{r['role']} (pid {r['pid']}) ignored SIGTERM; killing it")
                self._signal(r, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while any(self._alive(r) for r in records) and time.monotonic() < deadline:
            time.sleep(0.02)
        for r in records:  # members of its process group that outlived it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r["pid"], signal.SIGKILL)
            self._children.pop(r["pid"], None)
        return [f"{r['role']} (pid {r['pid']})" for r in records if _pid_alive(r["pid"], r.get("start_time"))]

    def _failure(self, record: Mapping[str, Any], what: str) -> ClipperException:
        code = self._exit_code(record)
        status = f"exited with code {code}" if code is not None else "exited"
        if self._alive(record):
            status = "is still running"
        tail = log_tail(record["log"])
        return ClipperException(
            f"{what}: {record['role']} (pid {record['pid']}) {status}. Last lines of {record['log']}:\n{tail}"
        )

    def _wait_until(self, record: Mapping[str, Any], ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self._alive(record):
                raise self._failure(record, f"{what} failed to start")
            if time.monotonic() > deadline:
                raise self._failure(record, f"{what} did not become ready within {timeout:g} s")
            time.sleep(0.05)

    # ------------------------------------------------------------------ cluster lifecycle

    def start_clipper(
        self,
        query_frontend_image: str | None = None,
        mgmt_frontend_image: str | None = None,
        frontend_exporter_image: str | None = None,
        cache_size: int = DEFAULT_CACHE_BYTES,
        qf_http_thread_pool_size: int = 1,
        qf_http_timeout_request: int = 5,
        qf_http_timeout_content: int = 300,
        num_frontend_replicas: int = 1,
    ) -> None:
        """Starts Redis (unless `redis_ip`), the management and the query frontend; waits for each.

        The image arguments and HTTP thread/timeout settings are accepted for compatibility and
        ignored; `cache_size` is the query frontend's prediction cache in bytes. Only one query
        frontend is supported.
        """
        if num_frontend_replicas != 1:
            raise ClipperException("LocalContainerManager runs exactly one query frontend (num_frontend_replicas=1)")
        if cache_size is None or int(cache_size) < 0:
            raise ClipperException(f"Invalid cache_size {cache_size!r}: must be a number of bytes >= 0")
        with self._lock():
            state = self._read_state()
            ended: list[dict[str, Any]] = []
            if state is not None:
                alive = [r for r in state["processes"] + state["replicas"] + self._prometheus_records(state)
                         if self._alive(r)]
                if alive:
                    names = ", ".join(f"{r['role']} (pid {r['pid']})" for r in alive)
                    raise ClipperException(
                        f"A local Clipper cluster named '{self.cluster_name}' is already running ({names}). "
                        "Connect to it with ClipperConnection.connect(), or stop it with stop_all() first."
                    )
                self.logger.info(f"Removing the state of a cluster that is no longer running ({self.state_path})")
                ended = list(state["replicas"])
                self.state_path.unlink()
            self._check_prerequisites()
            prometheus_binary = self._prometheus_binary()
            restore = self._replicas_to_restore(ended)
            ports = self._choose_ports()
            self.query_port, self.management_port, self.rpc_port = ports["query"], ports["management"], ports["rpc"]
            if self.redis_ip is None:
                self.redis_port = ports["redis"]
            self._prometheus_running_port = None
            self.log_dir.mkdir(parents=True, exist_ok=True)
            state = {
                "cluster_name": self.cluster_name,
                "started": time.time(),
                "owner_pid": os.getpid(),
                "redis": {"host": self.redis_ip or _HOST, "port": self.redis_port, "managed": self.redis_ip is None},
                "query_port": self.query_port,
                "management_port": self.management_port,
                "rpc_port": self.rpc_port,
                "cache_size": int(cache_size),
                "log_dir": str(self.log_dir.resolve()),
                "processes": [],
                "replicas": [],
                "next_replica": 0,
                "prometheus": None,
            }
            try:
                if prometheus_binary is not None:
                    self._start_prometheus(state, prometheus_binary, self._choose_prometheus_port(ports.values()))
                self._start_processes(state)
                if state["prometheus"] is not None:
                    rec = state["prometheus"]
                    self._wait_until(rec, lambda: prometheus.ready(f"{_HOST}:{rec['port']}"), "Prometheus",
                                     self.start_timeout)
            except BaseException:
                self._terminate(list(reversed(state["processes"])) + self._prometheus_records(state), graceful=False)
                raise
            self._write_state(state)
            self._apply_state(state)
        metrics = f", Prometheus {self.get_metric_addr()}" if self._prometheus_running_port else ""
        self.logger.info(f"Clipper is running: query {self.get_query_addr()}, management {self.get_admin_addr()}"
                         f"{metrics}, logs in {self.log_dir}")
        self._restore_replicas(restore)

    # ------------------------------------------------------------------ kept state

    def _redis_managed_and_persistent(self) -> bool:
        return self.redis_ip is None and self.redis_persistence

    def _replicas_to_restore(self, ended: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The replicas a restarted cluster starts again: those `stop_all(keep_state=True)` listed, else those
        of a cluster that ended without `stop_all` (`ended`); none when Redis does not come back with its data."""
        kept = self.redis_data_dir / KEPT_REPLICAS_FILE
        if not self._redis_managed_and_persistent() or not redis_server.has_data(self.redis_data_dir):
            kept.unlink(missing_ok=True)
            return []
        self.logger.info(f"Redis comes back with the state kept in {self.redis_data_dir} "
                         "(stop_all() without keep_state=True removes it)")
        try:
            specs = json.loads(kept.read_text())
        except FileNotFoundError:
            specs = _replica_specs(ended)
        except (OSError, ValueError) as e:
            self.logger.warning(f"Cannot read {kept}: {e}; no model replica is started again")
            specs = []
        kept.unlink(missing_ok=True)
        return specs

    def _check_prerequisites(self) -> None:
        if self.redis_ip is None and shutil.which("redis-server") is None:
            raise ClipperException(
                "redis-server is not installed (it holds the cluster's state). Install it, e.g. "
                "`apt-get install redis-server`, or pass redis_ip=/redis_port= to use a running Redis."
            )
        if self.redis_ip is not None and not redis_ping(self.redis_ip, self.redis_port, timeout=2.0):
            raise ClipperException(f"No Redis answers at {self.redis_ip}:{self.redis_port} (redis_ip/redis_port)")

    def _choose_ports(self) -> dict[str, int]:
        wanted = {"query": self.query_port, "management": self.management_port, "rpc": self.rpc_port}
        if self.redis_ip is None:
            wanted["redis"] = self.redis_port
        fixed = [p for p in wanted.values() if p]
        if len(set(fixed)) != len(fixed):
            raise ClipperException(f"The cluster's ports must differ: {wanted}")
        chosen: dict[str, int] = {}
        for role, port in wanted.items():
            if not port:
                while (port := free_port(_HOST)) in fixed or port in chosen.values():
                    pass
            elif not port_free(port, _HOST):
                arg = {"query": "clipper_query_port", "management": "clipper_management_port",
                       "rpc": "clipper_rpc_port", "redis": "redis_port"}[role]
                raise ClipperException(
                    f"Port {port} on {_HOST} ({role}) is already in use, perhaps by another Clipper cluster. "
                    f"Stop it, or choose another port with LocalContainerManager({arg}=...)."
                )
            chosen[role] = port
        return chosen

    # ------------------------------------------------------------------ Prometheus

    @staticmethod
    def _prometheus_records(state: Mapping[str, Any]) -> list[dict[str, Any]]:
        prom = state.get("prometheus")
        return [prom] if prom and prom.get("pid") else []

    def _prometheus_binary(self) -> str | None:
        """The ``prometheus`` binary to run, or None (not wanted, or missing while not required: a warning)."""
        if self.use_prometheus is False:
            return None
        binary = shutil.which(prometheus.PROMETHEUS_PACKAGE)
        if binary is None:
            missing = (f"the Prometheus server is not installed (no `{prometheus.PROMETHEUS_PACKAGE}` on PATH; Debian "
                       f"package `{prometheus.PROMETHEUS_PACKAGE}`: apt-get install --no-install-recommends "
                       f"{prometheus.PROMETHEUS_PACKAGE})")
            if self.use_prometheus:
                raise ClipperException(f"use_prometheus=True, but {missing}")
            self.logger.warning(f"Starting without Prometheus: {missing}. LocalContainerManager(use_prometheus=False) "
                                "starts without it quietly.")
        return binary

    def _choose_prometheus_port(self, taken: Any) -> int:
        """`prometheus_port` when free, else (or for 0) a free port; a replaced port is warned about."""
        taken = set(taken)
        port = self.prometheus_port
        if port and port not in taken and port_free(port, _HOST):
            return port
        while (chosen := free_port(_HOST)) in taken:
            pass
        if port:
            self.logger.warning(f"Port {port} on {_HOST} is taken: Prometheus listens on {_HOST}:{chosen} "
                                "(ClipperConnection.get_metric_addr() names it)")
        return chosen

    def _start_prometheus(self, state: dict[str, Any], binary: str, port: int) -> None:
        """Writes Prometheus's configuration and target files, then starts it (not waited for here)."""
        conf_dir = self.prometheus_dir.resolve()
        targets = conf_dir / "targets"
        shutil.rmtree(targets, ignore_errors=True)
        targets.mkdir(parents=True)
        config_path = conf_dir / "prometheus.yml"
        prometheus.write_atomic(config_path, prometheus.config(targets, self.prometheus_scrape_interval).encode())
        data_dir = self.prometheus_data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        state["prometheus"] = {"port": port, "config": str(config_path), "targets_dir": str(targets),
                               "data_dir": str(data_dir), "scrape_interval": self.prometheus_scrape_interval}
        self._write_targets(state)
        argv = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address={_HOST}:{port}", "--log.level=warn", *self.prometheus_args]
        state["prometheus"].update(self._spawn("prometheus", argv, self.log_dir / "prometheus.log"))

    def _write_targets(self, state: Mapping[str, Any]) -> None:
        """Rewrites the file_sd files from `state`: the query frontend and every replica with a metrics port."""
        targets_dir = state["prometheus"]["targets_dir"]
        frontends = [prometheus.frontend_group(f"{_HOST}:{state['query_port']}", self.cluster_name)]
        replicas = [prometheus.replica_group(f"{_HOST}:{r['metrics_port']}", self.cluster_name, r["name"],
                                             r["version"], str(r["seq"]))
                    for r in state["replicas"] if r.get("metrics_port")]
        for job, groups in ((prometheus.QUERY_FRONTEND_JOB, frontends), (prometheus.MODEL_CONTAINER_JOB, replicas)):
            prometheus.write_atomic(prometheus.targets_file(targets_dir, job), prometheus.render_targets(groups))

    def _metrics_port(self, state: Mapping[str, Any]) -> int:
        """A free port for a new replica's metrics endpoint, not given to another replica."""
        used = {r.get("metrics_port") for r in state["replicas"]} | self._assigned_metrics_ports
        while (port := free_port(_HOST)) in used:
            pass
        self._assigned_metrics_ports.add(port)
        return port

    def _start_processes(self, state: dict[str, Any]) -> None:
        redis_host = state["redis"]["host"]
        redis_port = state["redis"]["port"]
        if state["redis"]["managed"]:
            binary = shutil.which("redis-server") or "redis-server"
            if self.redis_persistence:
                data_dir = self.redis_data_dir.resolve()
                data_dir.mkdir(parents=True, exist_ok=True)
                status_file = self.cluster_dir.resolve() / "run" / "redis-supervisor.json"
                status_file.unlink(missing_ok=True)
                argv = redis_server.supervisor_argv(
                    self.python, redis_server.redis_argv(redis_port, _HOST, data_dir=data_dir, binary=binary),
                    status_file, data_dir)
                state["redis"].update(persistence=True, data_dir=str(data_dir), supervisor_status=str(status_file))
            else:
                argv = redis_server.redis_argv(redis_port, _HOST, binary=binary)
                state["redis"]["persistence"] = False
            rec = self._spawn("redis", argv, self.log_dir / "redis.log")
            state["processes"].append(rec)
            status_path = state["redis"].get("supervisor_status")

            def redis_ready() -> bool:
                if redis_ping(_HOST, redis_port):
                    return True
                sup = redis_server.read_supervisor_status(status_path) if status_path else None
                if sup and sup.get("restarts"):  # it would retry forever: a start that fails is reported now
                    raise self._failure(rec, f"Redis failed to start (redis-server exited with {sup.get('last_exit')})")
                return False

            self._wait_until(rec, redis_ready, "Redis", self.start_timeout)
        common = ["--redis-host", redis_host, "--redis-port", str(redis_port), "--host", _HOST]
        argv = [self.python, "-m", "clipper.frontend.management", *common, "--port", str(self.management_port),
                *self.management_frontend_args]
        rec = self._spawn("management_frontend", argv, self.log_dir / "management_frontend.log")
        state["processes"].append(rec)
        self._wait_until(rec, lambda: http_ok(f"http://{self.get_admin_addr()}/admin/ping"),
                         "The management frontend", self.start_timeout)
        argv = [self.python, "-m", "clipper.frontend.query", *common, "--port", str(self.query_port),
                "--rpc-port", str(self.rpc_port), "--cache-size", str(state["cache_size"]), *self.query_frontend_args]
        rec = self._spawn("query_frontend", argv, self.log_dir / "query_frontend.log")
        state["processes"].append(rec)
        self._wait_until(rec, lambda: http_ok(f"http://{self.get_query_addr()}/metrics"),
                         "The query frontend", self.start_timeout)

    def connect(self) -> None:
        """Attaches to the running cluster recorded in the state file (started by any process)."""
        with self._lock():
            state = self._connected_state()
        dead = [r for r in state["processes"] if not self._alive(r)]
        if dead:
            names = ", ".join(f"{r['role']} (pid {r['pid']}, log {r['log']})" for r in dead)
            raise ClipperException(
                f"The local Clipper cluster '{self.cluster_name}' is not healthy: {names} no longer running. "
                "Call stop_all(keep_state=True) to clean up, then start_clipper() to come back with the state "
                "(plain stop_all() forgets it)."
            )
        for r in self._prometheus_records(state):
            if not self._alive(r):
                self.logger.warning(f"Prometheus (pid {r['pid']}) is no longer running; see {r['log']}")

    def status(self) -> dict[str, Any]:
        """What runs: ``{"running": bool, "processes": [...], "replicas": [...], addresses}``.

        Each process and replica record carries ``alive``; a cluster is running when its frontends
        (and managed Redis) are alive. With persistence, the ``redis`` process is Redis's supervisor, and
        ``status()["redis"]`` adds ``data_dir``, ``server_pid`` (the redis-server now), ``server_alive``,
        ``restarts`` and ``last_exit`` (how the last one ended).
        """
        with self._lock():
            state = self._read_state()
        if state is None:
            return {"running": False, "cluster_name": self.cluster_name, "state_path": str(self.state_path),
                    "processes": [], "replicas": []}
        self._apply_state(state)
        for r in state["processes"] + state["replicas"] + self._prometheus_records(state):
            r["alive"] = self._alive(r)
        redis = state["redis"]
        if redis.get("supervisor_status"):
            sup = redis_server.read_supervisor_status(redis["supervisor_status"]) or {}
            pid = sup.get("redis_pid")
            redis["server_pid"] = pid
            redis["server_alive"] = pid is not None and _pid_alive(pid, None) and redis_ping(_HOST, redis["port"])
            redis["restarts"] = sup.get("restarts", 0)
            redis["last_exit"] = sup.get("last_exit")
        return {
            **state,
            "running": all(r["alive"] for r in state["processes"]),
            "state_path": str(self.state_path),
            "query_addr": self.get_query_addr(),
            "admin_addr": self.get_admin_addr(),
            "metric_addr": f"{_HOST}:{self._prometheus_running_port}" if self._prometheus_running_port else None,
        }

    def stop_all(self, graceful: bool = True, keep_state: bool = False) -> None:
        """Stops every replica, the frontends and then the managed Redis; removes the state file.

        `graceful=False` kills at once (SIGKILL). The managed Redis's data (``<cluster_dir>/redis-data``)
        is removed too, so that the next `start_clipper()` starts empty, as Clipper's did, unless
        `keep_state`: then Redis, stopped last, writes its append-only file out, the running replicas are
        listed next to it, and the next `start_clipper()` comes back with apps, models, versions, links,
        selection state and those replicas. An external Redis (`redis_ip`) is left alone either way.
        """
        with self._lock():
            state = self._read_state()
            records: list[dict[str, Any]] = []
            redis_records: list[dict[str, Any]] = []
            if state is not None:
                self._apply_state(state)
                records = self._prometheus_records(state) + list(state["replicas"]) + \
                    [r for r in reversed(state["processes"]) if r["role"] != "redis"]
                redis_records = [r for r in state["processes"] if r["role"] == "redis"]
            known = {r["pid"] for r in records + redis_records}
            records += [{"role": "process", "pid": pid, "start_time": None, "log": ""}
                        for pid in self._children if pid not in known]
            if keep_state and state is not None:
                self._keep_replicas(state)
            # Redis last: the frontends withdraw their replica records and save what they hold first.
            survivors = self._terminate(records, graceful=graceful)
            redis_survivors = self._terminate(redis_records, graceful=graceful)
            if state is not None:
                self.state_path.unlink(missing_ok=True)
            if not keep_state and self.redis_ip is None and not redis_survivors:
                shutil.rmtree(self.redis_data_dir, ignore_errors=True)
            if state is not None and state.get("prometheus") and not survivors:
                shutil.rmtree(self.prometheus_dir, ignore_errors=True)
                if not keep_state:
                    shutil.rmtree(self.prometheus_data_dir, ignore_errors=True)
            self._prometheus_running_port = None
        survivors += redis_survivors
        if survivors:
            raise ClipperException(f"Could not stop {', '.join(survivors)}")
        self.logger.info("Stopped all Clipper processes" + (f"; the state is kept in {self.redis_data_dir}"
                                                            if keep_state and self.redis_data_dir.is_dir() else ""))

    def _keep_replicas(self, state: Mapping[str, Any]) -> None:
        """Lists the running replicas next to Redis's data, for the next `start_clipper`."""
        if not state["redis"]["managed"]:
            self.logger.info("keep_state=True: the external Redis keeps the state; no replica will be started again")
            return
        if not state["redis"].get("persistence"):
            self.logger.warning("keep_state=True has no effect: this cluster's Redis runs without persistence "
                                "(redis_persistence=False)")
            return
        specs = _replica_specs([r for r in state["replicas"] if self._alive(r)])
        self.redis_data_dir.mkdir(parents=True, exist_ok=True)
        path = self.redis_data_dir / KEPT_REPLICAS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(specs, indent=2))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ addresses

    def get_admin_addr(self) -> str:
        return f"{_HOST}:{self.management_port}"

    def get_query_addr(self) -> str:
        return f"{_HOST}:{self.query_port}"

    def get_metric_addr(self) -> str:
        """``host:port`` of the cluster's Prometheus server (its HTTP API: ``/api/v1/query``, ...).

        Raises a `ClipperException` when the cluster runs none (``use_prometheus=False``, or the binary was
        missing): the query frontend still serves its own metrics at ``GET http://<get_query_addr()>/metrics``.
        """
        if self._prometheus_running_port is None:
            with self._lock():
                state = self._read_state()
            if state is not None:
                self._apply_state(state)
        if self._prometheus_running_port is None:
            raise ClipperException(
                f"The local Clipper cluster '{self.cluster_name}' runs no Prometheus server (use_prometheus=False, "
                f"the `{prometheus.PROMETHEUS_PACKAGE}` binary missing, or the cluster not started); the query "
                f"frontend serves its metrics at http://{self.get_query_addr()}/metrics")
        return f"{_HOST}:{self._prometheus_running_port}"

    # ------------------------------------------------------------------ model images

    def build_model(self, name: str, version: str, model_data_path: str, base_image: str,
                    container_registry: str | None = None, pkgs_to_install: Sequence[str] | None = None) -> str:
        """Copies `model_data_path` to ``<cluster_dir>/images/<name>/<version>``; returns ``local:<dir>``."""
        src = Path(model_data_path)
        if not src.is_dir():
            raise ClipperException(f"Model data path {model_data_path} is not a directory")
        dest = (self.cluster_dir / "images" / name / str(version)).resolve()
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)
        if pkgs_to_install:
            argv = [self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
                    str(dest / "modules"), *pkgs_to_install]
            self.logger.info(f"Installing {' '.join(pkgs_to_install)} into {dest / 'modules'}")
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if done.returncode != 0:
                raise ClipperException(f"pip install {' '.join(pkgs_to_install)} failed "
                                       f"(exit code {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        (dest / "image.json").write_text(json.dumps({
            "name": name, "version": str(version), "source": str(src.resolve()), "base_image": base_image,
            "container_registry": container_registry, "pkgs_to_install": list(pkgs_to_install or []),
            "built": time.time(),
        }, indent=2))
        image = f"{LOCAL_IMAGE_PREFIX}{dest}"
        self.logger.info(f"Built model image {image}")
        return image

    # ------------------------------------------------------------------ model replicas

    def deploy_model(self, name: str, version: str, input_type: str, image: str, num_replicas: int = 1) -> None:
        """Runs `num_replicas` replicas of ``name:version`` (like Docker's: sets the replica count)."""
        self.set_num_replicas(name, version, input_type, image, num_replicas)

    def get_num_replicas(self, name: str, version: str) -> int:
        """Live replica processes of ``name:version``."""
        with self._lock():
            state = self._connected_state()
        return sum(1 for r in state["replicas"] if self._matches(r, name, version) and self._alive(r))

    @staticmethod
    def _matches(record: Mapping[str, Any], name: str, version: str) -> bool:
        return record["name"] == name and record["version"] == str(version)

    def set_num_replicas(self, name: str, version: str, input_type: str, image: str, num_replicas: int) -> None:
        """Starts or stops replica processes until `num_replicas` of ``name:version`` run.

        New replicas must register with the query frontend within `start_timeout` seconds;
        surplus ones (the newest first) are stopped with SIGTERM.
        """
        version = str(version)
        try:
            num_replicas = operator.index(num_replicas)
        except TypeError:
            num_replicas = -1
        if num_replicas < 0:
            raise ClipperException("Invalid number of replicas: must be an integer >= 0")
        try:
            canonical, _ = parse_input_type(input_type)
        except ValueError as e:
            raise ClipperException(str(e)) from e
        run = resolve_image(image) if num_replicas else {}
        with self._lock():
            state = self._connected_state()
            self._prune(state)
            current = [r for r in state["replicas"] if self._matches(r, name, version)]
            started: list[dict[str, Any]] = []
            surplus = current[num_replicas:]
            for _ in range(num_replicas - len(current)):
                started.append(self._spawn_replica(state, name, version, canonical, image, run))
            state["replicas"] = [r for r in state["replicas"] if r not in surplus] + started
            self._write_state(state)
        if surplus:
            self.logger.info(f"Stopping {len(surplus)} replica(s) of {name}:{version}")
            self._terminate(surplus)
        if started:
            try:
                self._wait_registered(name, version, started)
            except BaseException:
                self._terminate(started, graceful=False)
                with self._lock():
                    state = self._connected_state()
                    pids = {r["pid"] for r in started}
                    state["replicas"] = [r for r in state["replicas"] if r["pid"] not in pids]
                    self._write_state(state)
                raise
            self.logger.info(f"Started {len(started)} replica(s) of {name}:{version}")

    def _prune(self, state: dict[str, Any]) -> None:
        for r in state["replicas"]:
            if not self._alive(r):
                self.logger.warning(f"Replica {r['name']}:{r['version']} (pid {r['pid']}) is no longer running; "
                                    f"see {r['log']}")
        state["replicas"] = [r for r in state["replicas"] if self._alive(r)]

    def _spawn_replica(self, state: dict[str, Any], name: str, version: str, input_type: str, image: str,
                       run: Mapping[str, Any]) -> dict[str, Any]:
        seq = state["next_replica"]
        state["next_replica"] = seq + 1
        run_dir = self.cluster_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        ready_file = run_dir / f"replica-{seq}.ready"
        ready_file.unlink(missing_ok=True)
        env = {
            "CLIPPER_MODEL_NAME": name,
            "CLIPPER_MODEL_VERSION": version,
            "CLIPPER_IP": _HOST,
            "CLIPPER_PORT": str(state["rpc_port"]),
            "CLIPPER_INPUT_TYPE": input_type,
            "CLIPPER_READY_FILE": str(ready_file),
            "CLIPPER_MODEL_PATH": run.get("model_path", ""),
            "CLIPPER_PREDICT": run.get("predict", ""),
        }
        gpus = self.model_resources_for(name, version).get("gpus")
        if gpus is None:  # none asked in this process: as the version's running replicas
            gpus = next((r["gpus"] for r in state["replicas"] if self._matches(r, name, version) and "gpus" in r),
                        None)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus)) if isinstance(gpus, int) \
                else ",".join(gpus)
        metrics_port = self._metrics_port(state) if state.get("prometheus") else None
        if metrics_port is not None:
            env[prometheus.METRICS_HOST_ENV] = _HOST
            env[prometheus.METRICS_PORT_ENV] = str(metrics_port)
        log_path = Path(state["log_dir"]) / f"model-{name}-{version}-{seq}.log"
        argv = list(run["command"]) if "command" in run else [self.python, "-m", "clipper.model_runtime"]
        rec = self._spawn(f"model {name}:{version} replica {seq}", argv, log_path, env=env)
        rec.update({"name": name, "version": version, "input_type": input_type, "image": image, "seq": seq,
                    "ready_file": str(ready_file), "foreign": "command" in run, "metrics_port": metrics_port})
        if gpus is not None:
            rec["gpus"] = gpus
        return rec

    def _wait_registered(self, name: str, version: str, started: Sequence[Mapping[str, Any]]) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(started)
        state = self._read_state() or {"processes": []}
        frontend = [r for r in state["processes"] if r["role"] == "query_frontend"]
        while pending:
            pending = [r for r in pending if not Path(r["ready_file"]).exists()]
            for r in pending:
                if not self._alive(r):
                    raise self._failure(r, f"Model {name}:{version} replica failed to start")
            foreign = [r for r in pending if r.get("foreign")]
            if foreign:  # no ready file: registered once the frontend counts every live replica, these included
                want = self.get_num_replicas(name, version)
                counted = management_client.count_replicas(self.get_admin_addr(), name, version)
                if counted >= want and all(self._alive(r) for r in foreign):  # alive after the count: counted too
                    pending = [r for r in pending if not r.get("foreign")]
            for r in frontend:
                if pending and not self._alive(r):
                    raise self._failure(r, f"Model {name}:{version} cannot register: the query frontend is down")
            if pending and time.monotonic() > deadline:
                raise self._failure(pending[0], f"Model {name}:{version} replica did not register with the query "
                                                f"frontend at {_HOST}:{self.rpc_port} within {self.start_timeout:g} s")
            time.sleep(0.02)
        for r in started:
            Path(r["ready_file"]).unlink(missing_ok=True)
        # The replica has sent its registration; wait (briefly) until the frontend has published it.
        wait_frontend_replicas(self.get_admin_addr(), name, version, self.get_num_replicas(name, version),
                               self.logger)

    def stop_models(self, models: Mapping[str, Sequence[str]]) -> None:
        """Stops every replica of the given versions (`{name: [version, ...]}`)."""
        wanted = {(name, str(v)) for name, versions in models.items() for v in versions}
        self._stop_replicas(lambda r: (r["name"], r["version"]) in wanted)

    def stop_all_model_containers(self) -> None:
        """Stops every model replica."""
        self._stop_replicas(lambda r: True)

    def _stop_replicas(self, select: Any) -> None:
        with self._lock():
            state = self._connected_state()
            doomed = [r for r in state["replicas"] if select(r)]
            state["replicas"] = [r for r in state["replicas"] if not select(r)]
            self._write_state(state)
        survivors = self._terminate(doomed)
        if survivors:
            raise ClipperException(f"Could not stop {', '.join(survivors)}")

    # ------------------------------------------------------------------ logs

    def get_logs(self, logging_dir: str) -> list[str]:
        """Copies every log file of the cluster into `logging_dir` (created); returns their paths."""
        with self._lock():
            state = self._read_state()
        if state is not None:
            self._apply_state(state)
        out = Path(logging_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for src in sorted(self.log_dir.glob("*.log")) if self.log_dir.is_dir() else []:
            dest = out / src.name
            shutil.copyfile(src, dest)
            paths.append(str(dest))
        return paths
