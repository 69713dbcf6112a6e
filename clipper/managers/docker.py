"""`DockerContainerManager`: a cluster as Docker containers on one machine.

Same constructor, labels, container names and start order as `clipper_admin`'s manager, with the
images of this project (built locally by `clipper.images`: no registry is needed):

1. Redis ``clipper/redis`` named ``redis-<rand>``, ``redis-server --port 6379 --dir /data --appendonly yes
   --appendfsync everysec --save ''``, published on `redis_port`, its ``/data`` the named volume
   ``clipper-redis-<cluster_name>`` (`redis_volume`, labelled like the containers) and, once it answers,
   the restart policy ``unless-stopped``: Docker starts it again when it dies (a crash, the OOM killer,
   the Docker daemon restarting), not after ``docker stop`` or ``docker kill``, which Docker takes as
   an operator's stop. The frontends reconnect on their own. With ``redis_persistence=False``:
   ``redis-server --port 6379`` in memory, no volume, no restart policy, as before. (Skipped when
   `redis_ip` is given: that Redis is used and never stopped nor cleaned.)
2. the management frontend ``mgmt_frontend-<rand>``, ``--redis_ip=<redis container> --redis_port=6379``,
   ``1338/tcp`` published on `clipper_management_port`;
3. the query frontend ``query_frontend-<rand>``, ``1337/tcp`` on `clipper_query_port` and
   ``7000/tcp`` on `clipper_rpc_port`, with a short heartbeat timeout (`heartbeat_timeout`, 5 s), so
   that replicas that die are dropped quickly.

Each one is waited for (its Docker health status ``healthy``, or its endpoint answering from the
host: Redis ``PING``, ``GET /admin/ping``, ``GET /metrics``); a container that exits or does not
become ready within `start_timeout` fails with a `ClipperException` naming it and quoting the end
of its log (Clipper waited forever). Missing images are built first with `clipper.images.ensure_image`
(the first time this takes minutes; progress goes to `image_progress`, default `print`).

Every container is detached, joins the user-named network `docker_network` (created when missing,
with the label ``ai.clipper.network.created_by``), carries the label
``ai.clipper.container.label=<cluster_name>`` plus Clipper's role and port labels
(``ai.clipper.query_frontend.label``, ``ai.clipper.query_frontend.query.port``...), and publishes its
ports on 127.0.0.1 only (`host_ip`). A requested host port that is taken is replaced by a free one,
as Clipper's ``find_unbound_port`` does; `connect()` (from any Python process) reads the ports back
from the labels of the running containers.

Model replicas (`deploy_model` = `set_num_replicas`) are containers named ``<name>_<version>-<rand>``
with the labels ``ai.clipper.container.label`` and ``ai.clipper.model_container.label=<name>_<version>``
and Clipper's environment (``CLIPPER_MODEL_NAME``, ``CLIPPER_MODEL_VERSION``,
``CLIPPER_IP=<query frontend container>``, ``CLIPPER_PORT=7000``, ``CLIPPER_INPUT_TYPE``). New replicas
are waited for until they have registered with the query frontend (the image's ready file or health
status, then the replicas the frontend has published, as the management API's ``get_all_containers``
lists them). Surplus replicas are stopped (SIGTERM, newest first) and removed.

`build_model` builds a model image ``<cluster>-<name>:<version>`` from a directory
(``FROM <base image>``, ``COPY . /model/``); `pkgs_to_install` are turned into wheels on the host and
installed with ``pip --no-index`` into ``/model/modules`` (on the runtime's ``sys.path``), so builds need
no network. Nothing is pushed.

`stop_all()` stops (or kills) and removes every container of the cluster (model replicas, then the
frontends, then Redis), and removes the network when a Clipper manager created it and nothing is
attached to it any more. It removes the Redis volume too, so that the next `start_clipper()` starts
empty as Clipper's did, unless `stop_all(keep_state=True)`: then the volume stays, with the list of
the model replicas that ran (``/data/clipper-replicas.json``), and the next `start_clipper()` comes
back with apps, models, versions, links, selection state and those replicas. `get_logs()` writes one
``image_<image short id>:container_<short id>.log`` file per container.

Tokens: the frontends bind 0.0.0.0 inside their containers, so they run with bearer tokens unless the
manager says why none is needed. The management API always requires one (`admin_token`: given,
``$CLIPPER_ADMIN_TOKEN`` or drawn at `start_clipper`); `ClipperConnection` sends it, and `connect()` reads
it back from the management frontend's container. Predictions require one (`predict_token`, drawn when
not given) when `host_ip` publishes the query port beyond this machine; on 127.0.0.1 (the default, so
Clipper's quickstart posts without one) or with ``insecure=True`` the query frontend runs ``--insecure``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import io
import json
import logging
import operator
import os
import platform
import random
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import images, management_client
from ..exceptions import ClipperException
from ..frontend.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_QUERY_PORT,
    DEFAULT_REDIS_PORT,
    DEFAULT_RPC_PORT,
    PREDICT_TOKEN_ENV,
    is_loopback,
)
from ..image_names import STAGE_LABEL, default_base_image, image_ref, short_image_name
from ..input_types import parse_input_type
from ..ports import port_free
from ..state.redis_server import persistence_args
from ..state.redis_server import ping as redis_ping
from . import prometheus
from .base import (
    CLIPPER_DOCKER_LABEL,
    CLIPPER_DOCKER_PORT_LABELS,
    CLIPPER_INTERNAL_MANAGEMENT_PORT,
    CLIPPER_INTERNAL_METRIC_PORT,
    CLIPPER_INTERNAL_QUERY_PORT,
    CLIPPER_INTERNAL_REDIS_PORT,
    CLIPPER_INTERNAL_RPC_PORT,
    CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL,
    CLIPPER_MODEL_CONTAINER_LABEL,
    CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL,
    ClusterAdapter,
    ContainerManager,
    create_model_container_label,
    http_ok,
    parse_model_container_label,
    wait_frontend_replicas,
)

logger = logging.getLogger("clipper.managers.docker")

#: Label of the networks a Clipper manager created (value: the cluster that created it); only
#: those are removed by `stop_all`, and only once nothing is attached to them.
CLIPPER_NETWORK_LABEL = "ai.clipper.network.created_by"
_LOG_CONFIG = {"type": "json-file", "config": {"max-size": "20m", "max-file": "2"}}
_PORT_RANGE = (10000, 50000)
_LOG_LINES = 20
#: Where the managed Redis keeps its data in its container (the volume's mount point).
REDIS_DATA_DIR = "/data"
#: The replicas to start again, kept in the Redis volume by `stop_all(keep_state=True)`.
KEPT_REPLICAS_FILE = "clipper-replicas.json"
#: Docker's restart policy of the managed Redis.
REDIS_RESTART_POLICY = {"Name": "unless-stopped"}
#: Prometheus's folder in its container (the volume's mount point): ``data/`` (its database), ``targets/``.
PROMETHEUS_DIR = "/prometheus"
PROMETHEUS_TARGETS_DIR = f"{PROMETHEUS_DIR}/targets"
#: The port Prometheus listens on in its container.
PROMETHEUS_INTERNAL_PORT = 9090


def find_unbound_port(start: int | None = None, host: str = "127.0.0.1", taken: Iterable[int] = (),
                      port_range: tuple[int, int] = _PORT_RANGE) -> int:
    """`start` when nothing is bound to ``host:start``, else a random free port in `port_range` (Clipper's)."""
    taken = set(taken)
    port = start
    for _ in range(1000):
        if not port or port in taken:
            port = random.randint(*port_range)
            continue
        if not port_free(port, host):
            port = random.randint(*port_range)
            continue
        return port
    raise ClipperException(f"Cannot find a free port on {host}")


def _is_port_conflict(e: Exception) -> bool:
    text = str(e).lower()
    return "port is already allocated" in text or "address already in use" in text


def _is_name_conflict(e: Exception) -> bool:
    text = str(e).lower()
    return "conflict" in text and "already in use" in text and "name" in text


def _env_dict(container: Any) -> dict[str, str]:
    env = (container.attrs.get("Config") or {}).get("Env") or []
    return dict(item.split("=", 1) for item in env if "=" in item)


def _dist_key(name: str, version: str) -> tuple[str, str]:
    """A distribution's normalised (name, version), as in wheel file names and metadata."""
    return re.sub(r"[-_.]+", "-", name).lower(), version.replace("_", "-")


def _health(container: Any) -> str | None:
    return ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")


def _env(container: Any, name: str) -> str | None:
    """The value of environment variable `name` in a container's configuration (None: unset or empty)."""
    for entry in (container.attrs.get("Config") or {}).get("Env") or []:
        key, _, value = entry.partition("=")
        if key == name:
            return value or None
    return None


class DockerContainerManager(ContainerManager):
    """Runs Redis, both frontends and the model replicas as Docker containers on this machine.

    Model replicas get what `set_model_resources` (or ``deploy_model(..., gpus=...)``) asked for: ``gpus`` as a
    Docker device request (``--gpus``; the engine needs the NVIDIA Container Toolkit), ``cpu_limit`` (CPUs) and
    ``mem_limit`` (``"512m"``...).

    Arguments as `clipper_admin.DockerContainerManager` (same order): `use_centralized_log` and
    `fluentd_port` are accepted and ignored (there is no fluentd: container logs stay with Docker);
    `prometheus_port` is where the cluster's Prometheus container is published (see below).
    `extra_container_kwargs` are passed to every ``containers.run`` (its ``labels`` are added to Clipper's).

    Clipper's public attributes, with this manager's values: `cluster_name`, `cluster_identifier`,
    `public_hostname` (`docker_ip_address`), `clipper_query_port`, `clipper_management_port`,
    `clipper_rpc_port`, `redis_ip`, `redis_port` and `external_redis` (the ports are the host ports
    actually published once started or connected), `docker_network`, `docker_client`,
    `extra_container_kwargs` and `common_labels` (the ``labels`` taken out of them, plus the cluster label),
    `logger`, and `log_config` (the ``log_config`` of every container: Docker's json-file driver, rotated).
    `centralize_log` is False and `logging_system` / `logging_system_instance` are None whatever
    `use_centralized_log` says (no fluentd); `prometheus_port` is the Prometheus container's published port
    once started or connected. Clipper's `prom_config_path` and `connect_to_logging_system()` have no
    counterpart.

    Prometheus: `start_clipper` also runs ``clipper/prometheus`` (Debian's server; the image is built on first
    use; `prometheus_image` replaces it) named ``metric_frontend-<rand>`` (Clipper's name), published on
    127.0.0.1:`prometheus_port` (on `host_ip` when that is a loopback address; like Redis it has no
    authentication, so it never faces the network; a taken port is replaced by a free one), scraping the
    query frontend and every model replica every `prometheus_scrape_interval` seconds over the cluster's
    network. Replicas started while
    it runs get ``CLIPPER_METRICS_HOST=0.0.0.0`` and ``CLIPPER_METRICS_PORT=1390`` (not published). Targets
    are found with file_sd: the manager writes the target files into the container's ``/prometheus/targets``
    whenever replicas come or go (computed from the running containers, so any process that `connect()`-ed
    keeps them right). The Docker socket is not mounted: docker_sd_configs would need it, and whoever holds
    the socket is root on the host. Its database is in the named volume ``clipper-prometheus-<cluster_name>``
    (`prometheus_volume`): a volume rather than a tmpfs, so that the series take disk, not memory, and
    outlive the container; `stop_all()` removes it unless ``keep_state=True``, as for Redis.
    `use_prometheus=False` runs none (`get_metric_addr` then raises); None (default) and True run it.

    Keyword-only additions: `host_ip` is where ports are published (127.0.0.1); `heartbeat_timeout`
    (seconds, None: the frontend's default, `clipper.frontend.config.DEFAULT_HEARTBEAT_TIMEOUT_S`) is
    passed to the query frontend: a replica silent for longer is dropped and its batch requeued (our
    runtime heartbeats while a batch runs; Clipper's own `rpc.py` containers do not, so with them it must
    exceed the time a batch of the slowest model takes); `start_timeout` bounds the wait for each frontend
    and each new model replica, `stop_timeout` the grace period of ``docker stop``;
    `rebuild_images` rebuilds images that are out of date with the source checkout (default: only
    missing ones are built); `base_image` is the base of built images (`clipper.images`; default
    ``clipper/base``, or ``$CLIPPER_BASE_IMAGE``); `image_progress` gets one line per build step (None:
    silent); `redis_image` replaces ``clipper/redis``; `query_frontend_args` / `management_frontend_args`
    are appended to the frontends' command lines; `log_level` is the ``--log-level`` of the frontends and
    of model replicas run by this project's runtime (``python -m clipper.model_runtime``; None: their default).
    `redis_persistence` (default True): the managed Redis keeps an append-only file in the volume
    `redis_volume` and is restarted by Docker when it dies; False keeps it in memory, without volume or
    restart policy, as this manager used to. `admin_token` / `predict_token` are the bearer tokens of the
    management API and of predict/update (None: drawn at `start_clipper` where needed, see the module's
    docstring); `insecure` serves predictions without a token even when `host_ip` is not loopback.
    """

    supports_gpus = True

    def __init__(
        self,
        cluster_name: str = "default-cluster",
        docker_ip_address: str = "localhost",
        use_centralized_log: bool = False,
        fluentd_port: int = 24224,
        clipper_query_port: int = DEFAULT_QUERY_PORT,
        clipper_management_port: int = DEFAULT_MANAGEMENT_PORT,
        clipper_rpc_port: int = DEFAULT_RPC_PORT,
        redis_ip: str | None = None,
        redis_port: int = DEFAULT_REDIS_PORT,
        prometheus_port: int = 9090,
        docker_network: str = "clipper_network",
        extra_container_kwargs: Mapping[str, Any] | None = None,
        *,
        host_ip: str = "127.0.0.1",
        heartbeat_timeout: float | None = 5.0,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        rebuild_images: bool = False,
        base_image: str | None = None,
        image_progress: Callable[[str], Any] | None = print,
        redis_image: str | None = None,
        query_frontend_args: Sequence[str] = (),
        management_frontend_args: Sequence[str] = (),
        log_level: str | None = "INFO",
        redis_persistence: bool = True,
        admin_token: str | None = None,
        predict_token: str | None = None,
        insecure: bool = False,
        use_prometheus: bool | None = None,
        prometheus_scrape_interval: float = prometheus.DEFAULT_SCRAPE_INTERVAL_S,
        prometheus_image: str | None = None,
    ) -> None:
        if not cluster_name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cluster_name):
            raise ClipperException(f"Invalid cluster name {cluster_name!r}: use letters, digits, '_', '.' and '-'")
        if docker_network == "host":
            raise ClipperException(
                "DockerContainerManager does not support running Clipper on the "
                "\"host\" docker network. Please pick a different network name"
            )
        self.cluster_name = cluster_name
        self.cluster_identifier = cluster_name
        self.public_hostname = docker_ip_address
        self.clipper_query_port = int(clipper_query_port)
        self.clipper_management_port = int(clipper_management_port)
        self.clipper_rpc_port = int(clipper_rpc_port)
        self.redis_ip = redis_ip
        self.external_redis = redis_ip is not None
        self.redis_port = int(redis_port)
        self.docker_network = docker_network
        self.host_ip = host_ip
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.rebuild_images = rebuild_images
        self.base_image = base_image
        self.image_progress = image_progress
        self.redis_image = redis_image
        self.query_frontend_args = [str(a) for a in query_frontend_args]
        self.management_frontend_args = [str(a) for a in management_frontend_args]
        self.log_level = log_level
        self.redis_persistence = bool(redis_persistence)
        self.admin_token = admin_token or os.environ.get(management_client.ADMIN_TOKEN_ENV) or None
        self.predict_token = predict_token or None
        self.insecure = bool(insecure)
        self.prometheus_port = int(prometheus_port or 0)
        self.use_prometheus = use_prometheus
        if not prometheus_scrape_interval or prometheus_scrape_interval <= 0:
            raise ClipperException(f"Invalid prometheus_scrape_interval {prometheus_scrape_interval!r}: must be > 0 s")
        self.prometheus_scrape_interval = float(prometheus_scrape_interval)
        self.prometheus_image = prometheus_image
        #: Whether the cluster runs Prometheus (known once started or connected).
        self._prometheus_running = False
        self.logger = ClusterAdapter(logger, {"cluster_name": cluster_name})
        self.log_config: dict[str, Any] = copy.deepcopy(_LOG_CONFIG)

        self.extra_container_kwargs = dict(extra_container_kwargs or {})
        self.common_labels = {str(k): str(v) for k, v in dict(self.extra_container_kwargs.pop("labels", None)
                                                              or {}).items()}
        self.common_labels[CLIPPER_DOCKER_LABEL] = cluster_name
        self._client: Any = None

        ignored = []
        if use_centralized_log:
            ignored.append("use_centralized_log=True (container logs stay in Docker's json-file driver)")
        if fluentd_port != 24224:
            ignored.append(f"fluentd_port={fluentd_port}")
        if ignored:
            self.logger.info(f"Ignoring {', '.join(ignored)}: there is no fluentd container")

    # ------------------------------------------------------------------ docker

    @property
    def prometheus_volume(self) -> str:
        """The named volume of Prometheus's database and target files (``/prometheus`` in its container)."""
        return f"clipper-prometheus-{self.cluster_name}"

    @property
    def redis_volume(self) -> str:
        """The named volume of the managed Redis's data (``/data`` in its container)."""
        return f"clipper-redis-{self.cluster_name}"

    @property
    def docker_client(self) -> Any:
        """A ``docker.DockerClient`` (made on first use)."""
        if self._client is None:
            try:
                self._client = images.docker_client()
            except images.ImageBuildError as e:
                raise ClipperException(f"Unable to Connect to Docker. Please Check if Docker is running. ({e})") from e
        return self._client

    @staticmethod
    def _errors() -> Any:
        import docker.errors

        return docker.errors

    def _label_filter(self, *extra: str) -> dict[str, list[str]]:
        return {"label": [f"{CLIPPER_DOCKER_LABEL}={self.cluster_name}", *extra]}

    def _containers(self, *extra_labels: str, all: bool = False) -> list[Any]:
        """Containers of this cluster (running ones unless `all`), oldest first."""
        found = self.docker_client.containers.list(all=all, filters=self._label_filter(*extra_labels))
        return sorted(found, key=lambda c: c.attrs.get("Created", ""))

    def _log_tail(self, container: Any, lines: int = _LOG_LINES) -> str:
        try:
            return container.logs(tail=lines).decode("utf-8", errors="replace").rstrip()
        except Exception as e:  # noqa: BLE001 - a log we cannot read must not hide the real error
            return f"(cannot read the log: {e})"

    def _failure(self, container: Any, what: str) -> ClipperException:
        with contextlib.suppress(Exception):
            container.reload()
        state = container.attrs.get("State") or {}
        status = state.get("Status", "unknown")
        if status in ("exited", "dead"):
            status = f"exited with code {state.get('ExitCode')}"
            if state.get("OOMKilled"):
                status += " (out of memory)"
        elif _health(container):
            status = f"is {status}, health {_health(container)}"
        else:
            status = f"is {status}"
        image = (container.attrs.get("Config") or {}).get("Image", "?")
        return ClipperException(f"{what}: container {container.name} ({image}) {status}. "
                                f"Last lines of its log (docker logs {container.name}):\n{self._log_tail(container)}")

    def _wait_ready(self, container: Any, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Until `ready()` or the container's health is ``healthy``; a container that exits or a timeout fails."""
        deadline = time.monotonic() + timeout
        while True:
            container.reload()
            status = container.status
            if status in ("exited", "dead"):
                raise self._failure(container, f"{what} failed to start")
            if status == "running" and (_health(container) == "healthy" or ready()):
                return
            if time.monotonic() > deadline:
                raise self._failure(container, f"{what} did not become ready within {timeout:g} s")
            time.sleep(0.05)

    def _poll_host(self, published: str | None = None) -> str:
        """Where this machine reaches ports published on `published` (default: `host_ip`)."""
        published = published or self._published_host()
        return "127.0.0.1" if published == "0.0.0.0" else published

    # ------------------------------------------------------------------ images

    def _image_exists(self, ref: str) -> bool:
        try:
            self.docker_client.images.get(ref)
            return True
        except self._errors().ImageNotFound:
            return False

    @staticmethod
    def _ours(ref: str) -> bool:
        """True for an image `clipper.images` builds (``clipper/<name>[:tag]``)."""
        return short_image_name(ref, registry_required=True) in images.RECIPES

    def _resolve_image(self, ref: str, what: str) -> str:
        """A local image for `ref`: ours are built when missing (or stale, with `rebuild_images`); others
        must be on this machine or be pulled."""
        if self._ours(ref):
            if self._image_exists(ref) and not self.rebuild_images:
                return ref
            if not self._image_exists(ref) and self.image_progress is not None:
                self.image_progress(f"[clipper] {ref} is not on this machine: clipper.images builds it")
            try:
                built = images.ensure_image(ref, base_image=self.base_image, progress=self.image_progress,
                                            rebuild_stale=self.rebuild_images)
            except images.ImageBuildError as e:
                raise ClipperException(f"Cannot build the {what} image {ref}: {e}") from e
            return ref if self._image_exists(ref) else built
        if self._image_exists(ref):
            return ref
        self.logger.info(f"Pulling {ref}")
        try:
            self.docker_client.images.pull(ref)
        except Exception as e:
            raise ClipperException(
                f"The {what} image {ref} is not on this machine and cannot be pulled ({e}). Build it first "
                "(ClipperConnection.build_model, `python -m clipper.images build`, or docker build)."
            ) from e
        return ref

    # ------------------------------------------------------------------ network

    def _ensure_network(self, client: Any = None, **create: Any) -> None:
        """Creates `docker_network` on `client` (default: `docker_client`) when missing, labelled as ours;
        `create`: more ``networks.create`` arguments (default: a bridge)."""
        client = client or self.docker_client
        errors = self._errors()
        try:
            client.networks.get(self.docker_network)
            return
        except errors.NotFound:
            pass
        try:
            client.networks.create(self.docker_network, **({"driver": "bridge", "check_duplicate": True} | create),
                                   labels={CLIPPER_NETWORK_LABEL: self.cluster_name})
            self.logger.info(f"Created the Docker network {self.docker_network}")
        except errors.APIError as e:
            if "already exists" not in str(e):
                raise ClipperException(f"Cannot create the Docker network {self.docker_network}: {e}") from e

    def _remove_networks(self, names: Iterable[str]) -> None:
        """Removes the networks among `names` that a Clipper manager created and nothing uses any more."""
        errors = self._errors()
        for name in sorted(set(names)):
            try:
                network = self.docker_client.networks.get(name)
            except errors.NotFound:
                continue
            if CLIPPER_NETWORK_LABEL not in (network.attrs.get("Labels") or {}):
                continue
            if network.attrs.get("Containers") or self.docker_client.containers.list(
                    all=True, filters={"network": network.id}):
                self.logger.info(f"Keeping the Docker network {name}: other containers use it")
                continue
            try:
                network.remove()
                self.logger.info(f"Removed the Docker network {name}")
            except errors.NotFound:
                pass
            except errors.APIError as e:
                self.logger.warning(f"Could not remove the Docker network {name}: {e}")

    # ------------------------------------------------------------------ containers

    def _run(self, image: str, command: Sequence[str] | None, name_prefix: str, labels: Mapping[str, str],
             ports: Mapping[str, int] | None = None, environment: Mapping[str, str] | None = None,
             port_labels: Mapping[str, str] | None = None,
             run_kwargs: Mapping[str, Any] | None = None, publish_on: str | None = None) -> tuple[Any, dict[str, int]]:
        """Runs a detached container on the network; returns it and the host ports chosen.

        `ports` maps ``"<port>/tcp"`` to the wanted host port (a taken one is replaced by a free one, also
        when Docker finds it taken); `port_labels` maps the same keys to the label that records it;
        `run_kwargs` are more ``containers.run`` arguments (e.g. ``volumes``); `publish_on` replaces `host_ip`.
        """
        publish_on = publish_on or self._published_host()
        poll = self._poll_host(publish_on)
        errors = self._errors()
        wanted = dict(ports or {})
        chosen: dict[str, int] = {}
        for attempt in range(5):
            taken: set[int] = set()
            for key, port in wanted.items():
                chosen[key] = find_unbound_port(port if attempt == 0 else None, poll, taken)
                taken.add(chosen[key])
            all_labels = {**self.common_labels, **labels}
            for key, label in (port_labels or {}).items():
                all_labels[label] = str(chosen[key])
            name = f"{name_prefix}-{random.randint(0, 100000)}"
            kwargs = dict(self.extra_container_kwargs)
            kwargs.update(
                name=name, labels=all_labels, detach=True, network=self.docker_network,
                log_config=copy.deepcopy(self.log_config),
                ports={key: (publish_on, port) for key, port in chosen.items()} or None,
            )
            if environment:
                kwargs["environment"] = {**dict(kwargs.get("environment") or {}), **environment}
            kwargs.update(run_kwargs or {})
            try:
                container = self.docker_client.containers.run(image, list(command) if command else None, **kwargs)
            except errors.APIError as e:
                retry = _is_port_conflict(e) or _is_name_conflict(e)
                if _is_port_conflict(e):
                    with contextlib.suppress(errors.APIError):  # created, but could not start
                        self.docker_client.containers.get(name).remove(force=True)
                if retry and attempt < 4:
                    self.logger.info(f"Retrying {name}: {e}")
                    continue
                hint = (" (the model asks for GPUs: this Docker engine needs the NVIDIA Container Toolkit)"
                        if "capabilities: [[gpu]]" in str(e) else "")
                raise ClipperException(f"Cannot start a container from {image}: {e}{hint}") from e
            for key, port in chosen.items():
                if wanted[key] and port != wanted[key]:
                    self.logger.warning(f"Host port {wanted[key]} is taken: {container.name} publishes {key} on "
                                        f"{publish_on}:{port}")
            return container, chosen
        raise AssertionError("unreachable")

    def _remove(self, containers: Sequence[Any], graceful: bool = True) -> list[str]:
        """Stops (SIGTERM, SIGKILL after `stop_timeout`) or kills, then removes, in parallel; returns failures."""
        errors = self._errors()

        def one(c: Any) -> str | None:
            try:
                if graceful:
                    c.stop(timeout=max(1, int(self.stop_timeout)))
                else:
                    with contextlib.suppress(errors.APIError):  # not running: nothing to kill
                        c.kill()
                c.remove(force=True, v=True)
            except errors.NotFound:
                pass
            except Exception as e:  # noqa: BLE001 - reported together below
                return f"{c.name} ({e})"
            return None

        if not containers:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(containers))) as pool:
            return [r for r in pool.map(one, containers) if r]

    # ------------------------------------------------------------------ cluster lifecycle

    def start_clipper(
        self,
        query_frontend_image: str = image_ref("query_frontend"),
        mgmt_frontend_image: str = image_ref("management_frontend"),
        frontend_exporter_image: str | None = None,
        cache_size: int = DEFAULT_CACHE_BYTES,
        qf_http_thread_pool_size: int = 1,
        qf_http_timeout_request: int = 5,
        qf_http_timeout_content: int = 300,
        num_frontend_replicas: int = 1,
    ) -> None:
        """Starts Redis (unless `redis_ip`), the management and the query frontend; waits for each.

        `frontend_exporter_image` and the HTTP thread-pool/timeout settings are accepted and ignored
        (the query frontend serves ``GET /metrics`` itself); `cache_size` is the prediction cache in bytes.
        """
        if num_frontend_replicas != 1:
            raise ClipperException(
                "Docker container manager's query frontend scale-out hasn't been implemented. "
                "Please set num_frontend_replicas=1 or use Kubernetes."
            )
        if cache_size is None or int(cache_size) < 0:
            raise ClipperException(f"Invalid cache_size {cache_size!r}: must be a number of bytes >= 0")
        running = self._containers()
        if running:
            names = ", ".join(c.name for c in running)
            raise ClipperException(
                f"Cluster {self.cluster_name} cannot be started because it already exists ({names}). "
                "Please use ClipperConnection.connect() to connect to it, or stop it with stop_all() first."
            )
        leftovers = self._containers(all=True)
        if leftovers:
            self.logger.info(f"Removing the stopped containers of an earlier {self.cluster_name} cluster: "
                             f"{', '.join(c.name for c in leftovers)}")
            self._remove(leftovers, graceful=False)

        redis_image = self._resolve_image(self.redis_image or image_ref("redis"), "Redis")
        mgmt_image = self._resolve_image(mgmt_frontend_image, "management frontend")
        query_image = self._resolve_image(query_frontend_image, "query frontend")
        prometheus_image = None
        if self.use_prometheus is not False:
            prometheus_image = self._resolve_image(self.prometheus_image or image_ref("prometheus"), "Prometheus")
        self._ensure_network()
        self._draw_tokens()
        started: list[Any] = []
        try:
            self._start_containers(started, redis_image, mgmt_image, query_image, int(cache_size))
            if prometheus_image is not None:
                self._start_prometheus(started, prometheus_image)
        except BaseException:
            # every container of the cluster: those started, and one created that could not start
            failures = self._remove(started + [c for c in self._containers(all=True) if c not in started],
                                    graceful=False)
            if failures:
                self.logger.warning(f"Could not remove {', '.join(failures)}")
            self._remove_networks([self.docker_network])
            raise
        self.connect()
        metrics = f", Prometheus {self.get_metric_addr()}" if self._prometheus_running else ""
        self.logger.info(f"Clipper is running: query {self.get_query_addr()}, management {self.get_admin_addr()}"
                         f"{metrics}")
        if not self.external_redis and self.redis_persistence:
            self._restore_kept_replicas(started[0])

    def _draw_tokens(self) -> None:
        """The management API's token always; the predict token when the query port is published beyond
        this machine (unless `insecure`)."""
        if not self.admin_token:
            self.admin_token = secrets.token_urlsafe(32)
        if not self.predict_token and not self.insecure and not is_loopback(self._published_host()):
            self.predict_token = secrets.token_urlsafe(32)
            self.logger.warning(f"The query port is published on {self.host_ip}: predict and update require "
                                "'Authorization: Bearer <token>' with the token ClipperConnection.predict_token "
                                "(or pass predict_token=..., or insecure=True)")

    def _published_host(self) -> str:
        """Where the ports are published ("" and 0.0.0.0: every interface)."""
        return self.host_ip or "0.0.0.0"

    def _start_containers(self, started: list[Any], redis_image: str, mgmt_image: str, query_image: str,
                          cache_size: int) -> None:
        poll = self._poll_host()
        if not self.external_redis:
            # Redis has no password: its port is published on loopback, whatever `host_ip` says
            redis_host_ip = self.host_ip if is_loopback(self._published_host()) else "127.0.0.1"
            self.logger.info("Starting managed Redis instance in Docker")
            key = f"{CLIPPER_INTERNAL_REDIS_PORT}/tcp"
            command = ["redis-server", "--port", str(CLIPPER_INTERNAL_REDIS_PORT)]
            run_kwargs: dict[str, Any] = {}
            if self.redis_persistence:
                self._ensure_redis_volume()
                command += persistence_args(REDIS_DATA_DIR)
                run_kwargs["volumes"] = {self.redis_volume: {"bind": REDIS_DATA_DIR, "mode": "rw"}}
            redis, ports = self._run(redis_image, command, "redis", {}, ports={key: self.redis_port},
                                     port_labels={key: CLIPPER_DOCKER_PORT_LABELS["redis"]}, run_kwargs=run_kwargs,
                                     publish_on=redis_host_ip)
            started.append(redis)
            self.redis_port = ports[key]
            self.redis_ip = redis.name
            self._wait_ready(redis, "Redis", lambda: redis_ping(redis_host_ip, self.redis_port), self.start_timeout)
            if self.redis_persistence:
                # only now: a Redis that cannot start fails at once instead of restarting in a loop
                try:
                    redis.update(restart_policy=REDIS_RESTART_POLICY)
                except self._errors().APIError as e:
                    raise ClipperException(f"Cannot set the restart policy of {redis.name}: {e}") from e
            redis_host, redis_port = redis.name, CLIPPER_INTERNAL_REDIS_PORT
        else:
            assert self.redis_ip is not None
            redis_host, redis_port = self.redis_ip, self.redis_port
            if redis_host in ("localhost", "127.0.0.1", "::1"):
                self.logger.warning(f"redis_ip={redis_host} is the container itself inside Docker: give an address "
                                    "the containers can reach (a container name on the network or a host IP)")

        common_args = [f"--redis_ip={redis_host}", f"--redis_port={redis_port}"]
        if self.log_level:
            common_args += ["--log-level", self.log_level]
        key = f"{CLIPPER_INTERNAL_MANAGEMENT_PORT}/tcp"
        mgmt, ports = self._run(mgmt_image, [*common_args, *self.management_frontend_args], "mgmt_frontend",
                                {CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL: ""}, ports={key: self.clipper_management_port},
                                port_labels={key: CLIPPER_DOCKER_PORT_LABELS["management"]},
                                environment={management_client.ADMIN_TOKEN_ENV: self.admin_token or ""})
        started.append(mgmt)
        self.clipper_management_port = ports[key]

        query_cmd = [*common_args, f"--prediction_cache_size={cache_size}"]
        if self.heartbeat_timeout is not None:
            query_cmd += ["--heartbeat-timeout", f"{self.heartbeat_timeout:g}"]
        query_env = {}
        if self.predict_token:
            query_env[PREDICT_TOKEN_ENV] = self.predict_token
        else:  # bound to 0.0.0.0 in its container, published on loopback only (or insecure=True)
            query_cmd.append("--insecure")
        rest, rpc = f"{CLIPPER_INTERNAL_QUERY_PORT}/tcp", f"{CLIPPER_INTERNAL_RPC_PORT}/tcp"
        query, ports = self._run(query_image, [*query_cmd, *self.query_frontend_args], "query_frontend",
                                 {CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL: ""},
                                 ports={rest: self.clipper_query_port, rpc: self.clipper_rpc_port},
                                 port_labels={rest: CLIPPER_DOCKER_PORT_LABELS["query_rest"],
                                              rpc: CLIPPER_DOCKER_PORT_LABELS["query_rpc"]},
                                 environment=query_env)
        started.append(query)
        self.clipper_query_port, self.clipper_rpc_port = ports[rest], ports[rpc]

        self._wait_ready(mgmt, "The management frontend",
                         lambda: http_ok(f"http://{poll}:{self.clipper_management_port}/admin/ping"),
                         self.start_timeout)
        self._wait_ready(query, "The query frontend",
                         lambda: http_ok(f"http://{poll}:{self.clipper_query_port}/metrics"), self.start_timeout)

    # ------------------------------------------------------------------ Prometheus

    def _prometheus_containers(self) -> list[Any]:
        """The cluster's running Prometheus container (the one carrying the metric port label), if any."""
        return self._containers(CLIPPER_DOCKER_PORT_LABELS["metric"])

    def _start_prometheus(self, started: list[Any], image: str) -> None:
        """Runs Prometheus (its volume created when missing), waits until it is ready, writes its targets.

        Published on loopback unless `host_ip` is loopback itself: like Redis, it has no authentication."""
        published = self._published_host()
        publish_on = self.host_ip if is_loopback(published) else "127.0.0.1"
        errors = self._errors()
        try:
            self.docker_client.volumes.get(self.prometheus_volume)
        except errors.NotFound:
            try:
                self.docker_client.volumes.create(self.prometheus_volume, labels=dict(self.common_labels))
            except errors.APIError as e:
                raise ClipperException(f"Cannot create the Docker volume {self.prometheus_volume}: {e}") from e
        key = f"{PROMETHEUS_INTERNAL_PORT}/tcp"
        config = prometheus.config(PROMETHEUS_TARGETS_DIR, self.prometheus_scrape_interval)
        prom, ports = self._run(image, None, "metric_frontend", {}, ports={key: self.prometheus_port},
                                port_labels={key: CLIPPER_DOCKER_PORT_LABELS["metric"]},
                                environment={"CLIPPER_PROMETHEUS_CONFIG": config},
                                run_kwargs={"volumes": {self.prometheus_volume: {"bind": PROMETHEUS_DIR,
                                                                                 "mode": "rw"}}},
                                publish_on=publish_on)
        started.append(prom)
        self.prometheus_port = ports[key]
        poll = self._poll_host(publish_on)
        self._wait_ready(prom, "Prometheus", lambda: prometheus.ready(f"{poll}:{self.prometheus_port}"),
                         self.start_timeout)
        self._prometheus_running = True
        self._sync_prometheus_targets()

    def _sync_prometheus_targets(self) -> None:
        """Writes Prometheus's file_sd files from the running containers: every query frontend, and every model
        replica that serves metrics (``CLIPPER_METRICS_PORT`` set). Renamed into place, so that Prometheus never
        reads half a file. A failure is logged, not raised: monitoring must not break a deployment."""
        proms = self._prometheus_containers()
        self._prometheus_running = bool(proms)
        if not proms:
            return
        frontends, replicas = [], []
        for c in self._containers():
            if CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL in c.labels:
                frontends.append(prometheus.frontend_group(f"{c.name}:{CLIPPER_INTERNAL_QUERY_PORT}",
                                                           self.cluster_name))
            elif CLIPPER_MODEL_CONTAINER_LABEL in c.labels and _env(c, prometheus.METRICS_PORT_ENV):
                name, version = parse_model_container_label(c.labels[CLIPPER_MODEL_CONTAINER_LABEL])
                replicas.append(prometheus.replica_group(f"{c.name}:{_env(c, prometheus.METRICS_PORT_ENV)}",
                                                         self.cluster_name, name, version, c.name))
        buf = io.BytesIO()
        moves = []
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for job, groups in ((prometheus.QUERY_FRONTEND_JOB, frontends),
                                (prometheus.MODEL_CONTAINER_JOB, replicas)):
                data = prometheus.render_targets(groups)
                info = tarfile.TarInfo(f".{job}.json.new")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
                moves.append(f"mv -f .{job}.json.new {job}.json")
        try:
            proms[0].put_archive(PROMETHEUS_TARGETS_DIR, buf.getvalue())
            done = proms[0].exec_run(["sh", "-c", " && ".join(moves)], workdir=PROMETHEUS_TARGETS_DIR)
            if done.exit_code != 0:
                raise RuntimeError(done.output.decode(errors="replace").strip())
        except Exception as e:  # noqa: BLE001 - see the docstring
            self.logger.warning(f"Cannot update Prometheus's targets in {proms[0].name}: {e}")

    def _remove_prometheus_volume(self) -> list[str]:
        errors = self._errors()
        try:
            self.docker_client.volumes.get(self.prometheus_volume).remove(force=True)
        except errors.NotFound:
            pass
        except errors.APIError as e:
            return [f"the volume {self.prometheus_volume} ({e})"]
        return []

    def connect(self) -> None:
        """Finds the running cluster and reads its ports from the containers' labels (any process)."""
        containers = self._containers()
        query = [c for c in containers if CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL in c.labels]
        mgmt = [c for c in containers if CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL in c.labels]
        if not query or not mgmt:
            missing = " and ".join(what for what, found in (("query frontend", query), ("management frontend", mgmt))
                                   if not found)
            stopped = [c.name for c in self._containers(all=True) if c.status != "running"]
            hint = (f" (stopped containers: {', '.join(stopped)}; call stop_all(keep_state=True) to clean up and keep "
                    "the state, or stop_all() to forget it)") if stopped else ""
            raise ClipperException(
                f"No running Docker Clipper cluster named '{self.cluster_name}': no {missing} container labelled "
                f"{CLIPPER_DOCKER_LABEL}={self.cluster_name}{hint}. Start one with ClipperConnection.start_clipper()."
            )
        labels: dict[str, str] = {}
        for c in containers:
            labels.update(c.labels)
        self.clipper_query_port = int(labels[CLIPPER_DOCKER_PORT_LABELS["query_rest"]])
        self.clipper_rpc_port = int(labels[CLIPPER_DOCKER_PORT_LABELS["query_rpc"]])
        self.clipper_management_port = int(labels[CLIPPER_DOCKER_PORT_LABELS["management"]])
        metric_port = labels.get(CLIPPER_DOCKER_PORT_LABELS["metric"])
        self._prometheus_running = metric_port is not None
        if metric_port is not None:
            self.prometheus_port = int(metric_port)
        redis_port = labels.get(CLIPPER_DOCKER_PORT_LABELS["redis"])
        if redis_port is not None:
            self.redis_port = int(redis_port)
            redis = [c for c in containers if CLIPPER_DOCKER_PORT_LABELS["redis"] in c.labels]
            self.redis_ip, self.external_redis = redis[0].name, False
        self.admin_token = _env(mgmt[0], management_client.ADMIN_TOKEN_ENV) or self.admin_token
        self.predict_token = _env(query[0], PREDICT_TOKEN_ENV)
        networks = list((query[0].attrs.get("NetworkSettings") or {}).get("Networks") or {})
        if networks and self.docker_network not in networks:
            self.docker_network = networks[0]

    def stop_all(self, graceful: bool = True, keep_state: bool = False) -> None:
        """Stops (``docker stop``, or ``kill`` when not `graceful`) and removes every container of the cluster:
        the model replicas, the frontends, then Redis; then the network if a Clipper manager created it and
        nothing else is attached to it, and the Redis volume unless `keep_state` (see the module doc). An
        external Redis (`redis_ip`) is left alone."""
        containers = self._containers(all=True)
        networks = {self.docker_network}
        for c in containers:
            networks.update((c.attrs.get("NetworkSettings") or {}).get("Networks") or {})
        models = [c for c in containers if CLIPPER_MODEL_CONTAINER_LABEL in c.labels]
        redis = [c for c in containers if CLIPPER_DOCKER_PORT_LABELS["redis"] in c.labels]
        others = [c for c in containers if c not in models and c not in redis]
        if redis:
            self.external_redis = False
        if keep_state:
            self._keep_replicas(redis, models)
        # Redis last: the frontends withdraw their replica records first, and Redis writes its file out.
        failures = self._remove(models, graceful) + self._remove(others, graceful)
        failures += self._remove(redis, graceful)
        self._remove_networks(networks)
        if not keep_state and not self.external_redis and not failures:
            failures += self._remove_redis_volume()
        if not keep_state and not failures:
            failures += self._remove_prometheus_volume()
        self._prometheus_running = False
        if failures:
            raise ClipperException(f"Could not stop {', '.join(failures)}")
        kept = f"; the state is kept in the volume {self.redis_volume}" if keep_state and redis else ""
        self.logger.info(f"Stopped and removed {len(containers)} container(s){kept}")

    # ------------------------------------------------------------------ Redis's data

    def _ensure_redis_volume(self) -> None:
        errors = self._errors()
        try:
            self.docker_client.volumes.get(self.redis_volume)
            self.logger.info(f"Redis comes back with the state kept in the volume {self.redis_volume} "
                             "(stop_all() without keep_state=True removes it)")
            return
        except errors.NotFound:
            pass
        try:
            self.docker_client.volumes.create(self.redis_volume, labels=dict(self.common_labels))
        except errors.APIError as e:
            raise ClipperException(f"Cannot create the Docker volume {self.redis_volume}: {e}") from e

    def _remove_redis_volume(self) -> list[str]:
        errors = self._errors()
        try:
            self.docker_client.volumes.get(self.redis_volume).remove(force=True)
            self.logger.info(f"Removed the Redis volume {self.redis_volume}")
        except errors.NotFound:
            pass
        except errors.APIError as e:
            return [f"the volume {self.redis_volume} ({e})"]
        return []

    def _keep_replicas(self, redis: Sequence[Any], models: Sequence[Any]) -> None:
        """Writes the running replicas into the Redis volume, for the next `start_clipper`."""
        if not redis:
            self.logger.info("keep_state=True: no managed Redis (an external one keeps the state); no replica "
                             "will be started again")
            return
        container = redis[0]
        mounts = {m.get("Name") for m in container.attrs.get("Mounts") or []}
        if self.redis_volume not in mounts:
            self.logger.warning(f"keep_state=True has no effect: {container.name} runs without persistence "
                                "(redis_persistence=False)")
            return
        specs: dict[tuple[str, str], dict[str, Any]] = {}
        for c in models:
            if c.status != "running":
                continue
            name, version = parse_model_container_label(c.labels[CLIPPER_MODEL_CONTAINER_LABEL])
            spec = specs.setdefault((name, version), {
                "name": name, "version": version, "input_type": _env_dict(c).get("CLIPPER_INPUT_TYPE", "doubles"),
                "image": (c.attrs.get("Config") or {}).get("Image"), "count": 0})
            spec["count"] += 1
        data = json.dumps(list(specs.values()), indent=2).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(KEPT_REPLICAS_FILE)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        try:
            container.put_archive(REDIS_DATA_DIR, buf.getvalue())
        except Exception as e:  # noqa: BLE001 - the state itself is kept; only the replicas are not
            self.logger.warning(f"Cannot write the replica list into {container.name}: {e}; the next start_clipper "
                                "starts no model replica")

    def _restore_kept_replicas(self, redis: Any) -> None:
        """Starts the replicas listed in the Redis volume by `stop_all(keep_state=True)` (then removes the list);
        a failure is logged, not raised."""
        path = f"{REDIS_DATA_DIR}/{KEPT_REPLICAS_FILE}"
        try:
            stream, _stat = redis.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.extractfile(KEPT_REPLICAS_FILE)
                specs = json.loads(member.read()) if member is not None else []
        except self._errors().NotFound:
            return
        except Exception as e:  # noqa: BLE001 - a list that cannot be read: say so, start nothing
            self.logger.warning(f"Cannot read {path} in {redis.name}: {e}; no model replica is started again")
            specs = []
        with contextlib.suppress(Exception):
            redis.exec_run(["rm", "-f", path])
        self._restore_replicas(specs)

    # ------------------------------------------------------------------ addresses

    def get_admin_addr(self) -> str:
        return f"{self.public_hostname}:{self.clipper_management_port}"

    def get_query_addr(self) -> str:
        return f"{self.public_hostname}:{self.clipper_query_port}"

    def get_metric_addr(self) -> str:
        """``host:port`` of the cluster's Prometheus container (its HTTP API: ``/api/v1/query``, ...).

        Raises a `ClipperException` when the cluster runs none (``use_prometheus=False``, or not started nor
        connected): the query frontend still serves its own metrics at ``GET http://<get_query_addr()>/metrics``.
        """
        if not self._prometheus_running:
            raise ClipperException(
                f"The Docker Clipper cluster '{self.cluster_name}' runs no Prometheus container (use_prometheus=False, "
                f"or not started nor connected); the query frontend serves its metrics at "
                f"http://{self.get_query_addr()}/metrics")
        return f"{self.public_hostname}:{self.prometheus_port}"

    # ------------------------------------------------------------------ model images

    def build_model(self, name: str, version: str, model_data_path: str, base_image: str,
                    container_registry: str | None = None, pkgs_to_install: Sequence[str] | None = None) -> str:
        """Builds the Docker image ``[<registry>/]<cluster>-<name>:<version>`` from `model_data_path`.

        Dockerfile: ``FROM <base_image>`` (``"default"``: the closure container for this Python; our
        images are built when missing), ``COPY . /model/``. `pkgs_to_install` are made into wheels on
        this machine (``pip wheel``, or ``pip download`` for the image's Python when it differs) and
        installed with ``pip install --no-index --target /model/modules``. The image is not pushed.
        """
        src = Path(model_data_path)
        if not src.is_dir():
            raise ClipperException(f"Model data path {model_data_path} is not a directory")
        version = str(version)
        repo = f"{self.cluster_name}-{name}".lower()  # Docker repository names are lower case
        if container_registry:
            repo = f"{container_registry.rstrip('/')}/{repo}"
        tag = f"{repo}:{version}"
        if base_image in (None, "", "default"):
            base_image = default_base_image()
        base = self._resolve_image(base_image, "model base")
        pkgs = [str(p) for p in pkgs_to_install or []]
        with tempfile.TemporaryDirectory(prefix="clipper-model-") as tmp:
            ctx = Path(tmp)
            shutil.copytree(src, ctx / "model", symlinks=True)
            lines = [f"FROM {base} AS model"]
            if pkgs and self._package_wheels(base, pkgs, ctx / "wheels"):
                lines = [
                    f"FROM {base} AS packages",
                    f"LABEL {STAGE_LABEL}=build",
                    "COPY wheels/ /tmp/wheels/",
                    "RUN python3 -m pip install --no-cache-dir --no-index --no-deps --disable-pip-version-check "
                    "--target /model/modules /tmp/wheels/*.whl",
                    f"FROM {base} AS model",
                    "COPY --from=packages /model/modules /model/modules",
                ]
            lines.append("COPY model/ /model/")
            (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
            (ctx / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
            self.logger.info(f"Building model Docker image {tag} with model data from {src} (FROM {base})")
            self._docker_build(ctx, tag)
        if pkgs:
            with contextlib.suppress(Exception):
                self.docker_client.images.prune(filters={"dangling": True, "label": STAGE_LABEL})
        if container_registry:
            self.logger.info(f"Not pushing {tag}: this manager runs images from the local Docker engine")
        self.logger.info(f"Built model image {tag}")
        return tag

    def _docker_build(self, ctx: Path, tag: str) -> None:
        """``docker build`` (no labels: with the classic builder each one costs an intermediate container)."""
        tail: list[str] = []
        try:
            stream = self.docker_client.api.build(path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False,
                                                  decode=True)
            for chunk in stream:
                if "error" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    raise ClipperException(f"docker build of {tag} failed: {detail.strip()}\n" + "\n".join(tail[-30:]))
                for line in str(chunk.get("stream", "")).splitlines():
                    if line.strip():
                        tail.append(line.rstrip())
                        self.logger.info(line.rstrip())
        except self._errors().APIError as e:
            raise ClipperException(f"docker build of {tag} failed: {e}") from e

    def _package_wheels(self, base: str, pkgs: Sequence[str], dest: Path) -> int:
        """Wheels of `pkgs` and their dependencies for `base`'s Python, into `dest` (no network in the build),
        less those of distributions `base` already has (same name and version); returns how many are left."""
        dest.mkdir(parents=True)
        code = ("import importlib.metadata as m, json, sys; "
                "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
                "'dists': [(d.metadata['Name'] or '') + '==' + d.version for d in m.distributions()]}))")
        try:
            out = self.docker_client.containers.run(base, ["python3", "-c", code], entrypoint=[], remove=True,
                                                    network_mode="none")
            found = json.loads(out.decode().strip().splitlines()[-1])
        except Exception as e:
            raise ClipperException(f"Cannot run python3 in the model base image {base}: {e}") from e
        python = found["python"]
        installed = {_dist_key(*d.split("==", 1)) for d in found["dists"]}
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        if python == host:
            cmd = [*pip, "wheel", "--quiet", "--wheel-dir", str(dest), *pkgs]
        else:
            machine = platform.machine()
            cmd = [*pip, "download", "--quiet", "--only-binary=:all:", "--implementation", "cp", "--python-version",
                   python, "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}",
                   "--platform", f"linux_{machine}", "--platform", "any", "-d", str(dest), *pkgs]
        self.logger.info(f"Making wheels of {' '.join(pkgs)} for Python {python}")
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise ClipperException(f"Cannot make wheels of {' '.join(pkgs)} (exit code {done.returncode}):\n"
                                   f"{(done.stdout + done.stderr)[-3000:]}")
        wheels = sorted(dest.glob("*.whl"))
        for whl in wheels:
            name, version = whl.name.split("-")[:2]
            if _dist_key(name, version) in installed:
                whl.unlink()
        left = sorted(w.name for w in dest.glob("*.whl"))
        self.logger.info(f"Installing into /model/modules: {', '.join(left) or 'nothing (all in the base image)'}")
        return len(left)

    # ------------------------------------------------------------------ model replicas

    def deploy_model(self, name: str, version: str, input_type: str, image: str, num_replicas: int = 1) -> None:
        """Runs `num_replicas` replicas of ``name:version`` from the Docker image `image` (sets the replica count)."""
        self.set_num_replicas(name, version, input_type, image, num_replicas)

    def _replicas(self, name: str, version: str, all: bool = False) -> list[Any]:
        label = f"{CLIPPER_MODEL_CONTAINER_LABEL}={create_model_container_label(name, str(version))}"
        return self._containers(label, all=all)

    def get_num_replicas(self, name: str, version: str) -> int:
        """Running containers of ``name:version``."""
        return len(self._replicas(name, version))

    def _query_frontend(self) -> Any:
        containers = self._containers(CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL)
        if not containers:
            self.logger.warning("No Clipper query frontend found.")
            raise ClipperException("No Clipper query frontend to attach model container to")
        return containers[0]

    def set_num_replicas(self, name: str, version: str, input_type: str, image: str, num_replicas: int) -> None:
        """Starts or stops containers until `num_replicas` of ``name:version`` run.

        New replicas must register with the query frontend within `start_timeout` seconds (else they are
        removed and a `ClipperException` quotes the log of one that failed); surplus ones (the newest first)
        are stopped and removed.
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
        current = self._replicas(name, version)
        if len(current) > num_replicas:
            surplus = current[num_replicas:]
            self.logger.info(f"Found {len(current)} replicas for {name}:{version}. Removing {len(surplus)}")
            failures = self._remove(surplus)
            self._sync_prometheus_targets()
            if failures:
                raise ClipperException(f"Could not stop {', '.join(failures)}")
            return
        missing = num_replicas - len(current)
        if missing == 0:
            return
        self.logger.info(f"Found {len(current)} replicas for {name}:{version}. Adding {missing}")
        image = self._resolve_image(image, "model")
        frontend = self._query_frontend()
        networks = list((frontend.attrs.get("NetworkSettings") or {}).get("Networks") or {})
        if networks and self.docker_network not in networks:
            self.docker_network = networks[0]
        label = create_model_container_label(name, version)
        env = {
            "CLIPPER_MODEL_NAME": name,
            "CLIPPER_MODEL_VERSION": version,
            "CLIPPER_IP": frontend.name,
            "CLIPPER_PORT": str(CLIPPER_INTERNAL_RPC_PORT),
            "CLIPPER_INPUT_TYPE": canonical,
        }
        if self._prometheus_containers():
            env[prometheus.METRICS_HOST_ENV] = "0.0.0.0"
            env[prometheus.METRICS_PORT_ENV] = str(CLIPPER_INTERNAL_METRIC_PORT)
        command = None
        config = self.docker_client.images.get(image).attrs.get("Config") or {}
        if self.log_level and list(config.get("Entrypoint") or [])[-2:] == ["-m", "clipper.model_runtime"] \
                and not config.get("Cmd"):
            command = ["--log-level", self.log_level]
        run_kwargs = self._resource_kwargs(name, version, current)
        if self.model_resources_for(name, version).get("gpus") == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""  # asked for none: a framework must not find one
        started: list[Any] = []
        try:
            for _ in range(missing):
                container, _ports = self._run(image, command, label, {CLIPPER_MODEL_CONTAINER_LABEL: label},
                                              environment=env, run_kwargs=run_kwargs)
                started.append(container)
            self._sync_prometheus_targets()
            self._wait_registered(name, version, started, frontend)
        except BaseException:
            self._remove(started, graceful=False)
            self._sync_prometheus_targets()
            raise
        self.logger.info(f"Started {len(started)} replica(s) of {name}:{version}: "
                         f"{', '.join(c.name for c in started)}")

    def _resource_kwargs(self, name: str, version: str, running: Sequence[Any]) -> dict[str, Any]:
        """``containers.run`` arguments for the resources asked for ``name:version`` (`set_model_resources`:
        ``gpus``, ``cpu_limit`` in CPUs, ``mem_limit``); with none recorded in this process, those of a running
        replica (so that a manager that `connect()`-ed scales a GPU model with GPUs)."""
        asked = self.model_resources_for(name, version)
        if not asked and running:
            host = running[0].attrs.get("HostConfig") or {}
            copied = {key: host[key] for key in ("DeviceRequests", "NanoCpus", "Memory") if host.get(key)}
            if copied.get("DeviceRequests"):
                import docker.types

                copied["DeviceRequests"] = [docker.types.DeviceRequest(**{k[0].lower() + k[1:]: v for k, v in
                                                                          r.items() if v is not None})
                                            for r in copied["DeviceRequests"]]
            return {{"DeviceRequests": "device_requests", "NanoCpus": "nano_cpus", "Memory": "mem_limit"}[k]: v
                    for k, v in copied.items()}
        unknown = set(asked) - {"gpus", "cpu_limit", "mem_limit"}
        if unknown:
            raise ClipperException(f"Unknown resource(s) {', '.join(sorted(unknown))} for {name}:{version}: "
                                   "DockerContainerManager takes gpus, cpu_limit, mem_limit")
        kwargs: dict[str, Any] = {}
        gpus = asked.get("gpus")
        if gpus:
            import docker.types

            request = ({"count": gpus} if isinstance(gpus, int) else {"device_ids": list(gpus)})
            kwargs["device_requests"] = [docker.types.DeviceRequest(capabilities=[["gpu"]], **request)]
        if "cpu_limit" in asked:
            kwargs["nano_cpus"] = int(float(asked["cpu_limit"]) * 1e9)
        if "mem_limit" in asked:
            kwargs["mem_limit"] = asked["mem_limit"]
        return kwargs

    def _replica_ready(self, container: Any) -> bool | None:
        """True once the replica has registered (its ready file or health); None when it cannot tell."""
        if _health(container) == "healthy":
            return True
        ready_file = _env_dict(container).get("CLIPPER_READY_FILE")
        if not ready_file:
            return None if not _health(container) else False
        try:
            return container.exec_run(["test", "-f", ready_file]).exit_code == 0
        except Exception:  # noqa: BLE001 - exited meanwhile, or no `test` in the image: ask again
            return False

    def _wait_registered(self, name: str, version: str, started: Sequence[Any], frontend: Any) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(started)
        while pending:
            still = []
            for c in pending:
                c.reload()
                if c.status in ("exited", "dead"):
                    raise self._failure(c, f"Model {name}:{version} replica failed to start")
                ready = self._replica_ready(c) if c.status == "running" else False
                if ready is None:  # no ready file, no health check: the frontend's count must cover it
                    ready = management_client.count_replicas(self._admin_poll_addr(), name, version,
                                                             token=self.admin_token) >= \
                        self.get_num_replicas(name, version)
                if not ready:
                    still.append(c)
            pending = still
            if pending:
                frontend.reload()
                if frontend.status != "running":
                    raise self._failure(frontend, f"Model {name}:{version} cannot register: the query frontend "
                                                  "is down")
                if time.monotonic() > deadline:
                    raise self._failure(pending[0], f"Model {name}:{version} replica did not register with the "
                                                    f"query frontend {frontend.name} within {self.start_timeout:g} s")
                time.sleep(0.1)
        wait_frontend_replicas(self._admin_poll_addr(), name, version, self.get_num_replicas(name, version),
                               self.logger, token=self.admin_token)

    def _admin_poll_addr(self) -> str:
        """The management frontend, as this machine reaches it (the replica counts come from there)."""
        return f"{self._poll_host()}:{self.clipper_management_port}"

    def stop_models(self, models: Mapping[str, Sequence[str]]) -> None:
        """Stops and removes every replica of the given versions (`{name: [version, ...]}`)."""
        wanted = {(name, str(v)) for name, versions in models.items() for v in versions}
        doomed = [c for c in self._containers(CLIPPER_MODEL_CONTAINER_LABEL)
                  if parse_model_container_label(c.labels[CLIPPER_MODEL_CONTAINER_LABEL]) in wanted]
        failures = self._remove(doomed)
        self._sync_prometheus_targets()
        if failures:
            raise ClipperException(f"Could not stop {', '.join(failures)}")

    def stop_all_model_containers(self) -> None:
        """Stops and removes every model replica of the cluster."""
        failures = self._remove(self._containers(CLIPPER_MODEL_CONTAINER_LABEL, all=True))
        self._sync_prometheus_targets()
        if failures:
            raise ClipperException(f"Could not stop {', '.join(failures)}")

    # ------------------------------------------------------------------ logs

    def get_logs(self, logging_dir: str) -> list[str]:
        """Writes the log of every container of the cluster (stopped ones too) to
        ``<logging_dir>/image_<image short id>:container_<short id>.log``; returns the paths."""
        out = Path(os.path.abspath(os.path.expanduser(logging_dir)))
        if not out.exists():
            out.mkdir(parents=True)
            self.logger.info(f"Created logging directory: {out}")
        paths = []
        for c in self._containers(all=True):
            image_id = str(c.attrs.get("Image", ""))
            image_short = image_id[:19] if image_id.startswith("sha256:") else image_id[:12]
            path = out / f"image_{image_short}:container_{c.short_id}.log"
            try:
                data = c.logs(stdout=True, stderr=True)
            except self._errors().NotFound:
                continue
            path.write_bytes(data)
            paths.append(str(path))
        return paths
