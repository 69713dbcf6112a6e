"""`SwarmContainerManager`: a cluster as Docker Swarm services, spread over the swarm's nodes.

What runs (cluster ``<c>``, every service labelled ``ai.clipper.container.label=<c>``, on the attachable
overlay network `docker_network`, each in Swarm's DNS round-robin endpoint mode: this project needs no
routing mesh and no virtual IPs):

- ``<c>-redis``: one task, ``redis-server`` with an append-only file in the named volume
  ``clipper-redis-<c>``, placed on the swarm manager this client talks to (a local volume lives on one node:
  the task must come back where its data is). Not published: only the frontends reach it.
- ``<c>-mgmt``: the management frontend, one task, ``1338`` published in host mode on the node that runs it
  (`clipper_management_port`); always behind the management token.
- ``<c>-query``: `num_frontend_replicas` query frontends, at most one per node, ``1337`` published in host
  mode on each node that runs one (`clipper_query_port`); ``7000`` (RPC) stays on the overlay network.
- ``<c>-m-<name>-<version>``: one service per model version, `num_replicas` tasks, with Clipper's
  environment and ``CLIPPER_IP=tasks.<c>-query``.

Membership: ``tasks.<c>-query`` resolves to the overlay address of every query frontend task. The model runtime
connects to each address a name resolves to and resolves it again every ``CLIPPER_RESOLVE_INTERVAL`` seconds, so
every replica serves every frontend: those started after it, and those Swarm starts again after a failure.
Each frontend publishes the replicas connected to it in Redis under its own id; a manager waits until every
frontend counts the replicas it started.

Images: they are built where `clipper.images` and `build_model` build (the engine ``DOCKER_HOST`` names, or the
local one) and must then reach every node that may run a task. With `container_registry` (Clipper's argument)
they are tagged ``<registry>/<name>:<tag>``, pushed, and the nodes pull them, as on any real cluster. Without
one, `node_engines` names the Docker engine of each node (``{node hostname: base_url or DockerClient}``) and
each image is copied onto every node that lacks it (``docker save | docker load``); a swarm of one node needs
neither.

Placement: `constraints` (Swarm's syntax, e.g. ``["node.labels.gpu==true"]``) apply to every model service;
`model_constraints` / `model_resources` set them per model (``{"name:version" or "name": ...}``; also
`set_model_resources`); resources are Swarm's (``{"cpu_limit": 1.5, "mem_limit": "2g", "cpu_reservation": ...,
"mem_reservation": ...}``) and ``gpus``, a number of the generic resource `gpu_resource` (``NVIDIA-GPU``) that
the GPU nodes advertise (``node-generic-resources`` in their engines' ``daemon.json``).

What survives (see docs/swarm.md): a task that dies is started again by Swarm (a frontend on any node; Redis on its
node, with its append-only file); a lost worker node's tasks are started on the other nodes; a lost manager node
takes Redis's data with it (its volume is local to that node) unless `redis_volume_driver` names a driver whose
volumes outlive a node (NFS, a cloud disk). While Redis is away, the query frontends keep answering with the
configuration they have.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import management_client
from ..exceptions import ClipperException
from ..frontend.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_QUERY_PORT,
    DEFAULT_REDIS_PORT,
    PREDICT_TOKEN_ENV,
)
from ..image_names import image_ref
from ..input_types import parse_input_type
from ..state.redis_server import persistence_args
from .base import (
    CLIPPER_DOCKER_LABEL,
    CLIPPER_INTERNAL_MANAGEMENT_PORT,
    CLIPPER_INTERNAL_QUERY_PORT,
    CLIPPER_INTERNAL_REDIS_PORT,
    CLIPPER_INTERNAL_RPC_PORT,
    CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL,
    CLIPPER_MODEL_CONTAINER_LABEL,
    CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL,
    create_model_container_label,
    parse_model_container_label,
    wait_frontend_replicas,
)
from .docker import CLIPPER_NETWORK_LABEL, REDIS_DATA_DIR, DockerContainerManager

#: Label of the Redis service (its value: unused).
CLIPPER_REDIS_LABEL = "ai.clipper.redis.label"
#: Labels recording the host ports the frontends publish on their nodes.
QUERY_PORT_LABEL = "ai.clipper.query_frontend.query.port"
MANAGEMENT_PORT_LABEL = "ai.clipper.management.port"
#: How often the model runtime resolves ``tasks.<query service>`` again (seconds).
RESOLVE_INTERVAL_S = 2.0


def _nano_cpus(value: Any) -> int:
    return int(float(value) * 1e9)


def _bytes(value: Any) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(value).lower())
    if m is None:
        raise ClipperException(f"Invalid memory size {value!r}: use bytes or e.g. '512m', '2g'")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def service_name_part(text: str) -> str:
    """`text` made fit for a service name (DNS label characters only)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"


class SwarmContainerManager(DockerContainerManager):
    """Runs Redis, the management frontend, N query frontends and the model replicas as Swarm services.

    Arguments as `DockerContainerManager` (Clipper's names), plus: `docker_client` (the swarm manager's engine;
    default: the one ``DOCKER_HOST`` names, or the local one), `container_registry` (push images there; the
    nodes pull), `node_engines` (``{node hostname: base_url or DockerClient}``: where images are copied when
    there is no registry), `constraints` / `model_constraints` / `model_resources` (placement of the model
    services), `redis_volume_driver` (a volume driver whose volumes outlive a node), `resolve_interval`
    (``CLIPPER_RESOLVE_INTERVAL`` of the replicas). `host_ip` does not apply: Swarm publishes a host-mode port
    on every address of the node, so predictions need the predict token (drawn at `start_clipper`) unless
    ``insecure=True``.
    """

    supports_gpus = True

    def __init__(self, cluster_name: str = "default-cluster", docker_ip_address: str | None = None,
                 use_centralized_log: bool = False, fluentd_port: int = 24224,
                 clipper_query_port: int = DEFAULT_QUERY_PORT, clipper_management_port: int = DEFAULT_MANAGEMENT_PORT,
                 clipper_rpc_port: int = CLIPPER_INTERNAL_RPC_PORT, redis_ip: str | None = None,
                 redis_port: int = DEFAULT_REDIS_PORT, prometheus_port: int = 9090,
                 docker_network: str = "clipper_network", extra_container_kwargs: Mapping[str, Any] | None = None,
                 *, docker_client: Any = None, container_registry: str | None = None,
                 node_engines: Mapping[str, Any] | None = None, constraints: Sequence[str] = (),
                 model_constraints: Mapping[str, Sequence[str]] | None = None,
                 model_resources: Mapping[str, Mapping[str, Any]] | None = None,
                 redis_volume_driver: str | None = None, resolve_interval: float = RESOLVE_INTERVAL_S,
                 gpu_resource: str = "NVIDIA-GPU", **kwargs: Any) -> None:
        kwargs.setdefault("use_prometheus", False)
        if kwargs["use_prometheus"]:
            raise ClipperException("SwarmContainerManager does not run Prometheus yet: point a Prometheus at each "
                                   "query frontend's GET /metrics")
        kwargs.setdefault("host_ip", "0.0.0.0")
        super().__init__(cluster_name, docker_ip_address or "localhost", use_centralized_log, fluentd_port,
                         clipper_query_port, clipper_management_port, clipper_rpc_port, redis_ip, redis_port,
                         prometheus_port, docker_network, extra_container_kwargs, **kwargs)
        self._fixed_hostname = docker_ip_address
        self._swarm_client = docker_client
        self.container_registry = container_registry.rstrip("/") if container_registry else None
        self._node_engines = dict(node_engines or {})
        self.constraints = [str(c) for c in constraints]
        self.model_constraints = {k: [str(c) for c in v] for k, v in (model_constraints or {}).items()}
        for key, resources in (model_resources or {}).items():
            name, _, version = key.partition(":")
            self.set_model_resources(name, version or None, **resources)
        self.redis_volume_driver = redis_volume_driver
        self.resolve_interval = float(resolve_interval)
        self.gpu_resource = gpu_resource
        self._copied: set[tuple[int, str]] = set()  # (engine client, image id) known to be there
        self._copy_lock = threading.Lock()

    # ------------------------------------------------------------------ engines

    @property
    def swarm_client(self) -> Any:
        """The ``docker.DockerClient`` of the swarm manager that services are created through."""
        if self._swarm_client is None:
            self._swarm_client = self.docker_client
        return self._swarm_client

    def _service_name(self, role: str) -> str:
        return f"{service_name_part(self.cluster_name)}-{role}"

    @property
    def query_service(self) -> str:
        """Name of the query frontends' service (its tasks resolve as ``tasks.<name>`` on the network)."""
        return self._service_name("query")

    def _model_service_name(self, name: str, version: str) -> str:
        return self._service_name(f"m-{service_name_part(name)}-{service_name_part(version)}")[:63].rstrip("-")

    def _services(self, *extra_labels: str) -> list[Any]:
        found = self.swarm_client.services.list(filters={"label": [f"{CLIPPER_DOCKER_LABEL}={self.cluster_name}",
                                                                    *extra_labels]})
        return sorted(found, key=lambda s: s.attrs.get("CreatedAt", ""))

    def _nodes(self) -> dict[str, dict[str, Any]]:
        """Node id -> ``{"hostname", "addr", "state", "availability", "role"}`` of every node of the swarm."""
        nodes = {}
        for node in self.swarm_client.nodes.list():
            a = node.attrs
            nodes[node.id] = {"hostname": a["Description"]["Hostname"], "addr": a["Status"].get("Addr", ""),
                              "state": a["Status"]["State"], "availability": a["Spec"].get("Availability"),
                              "role": a["Spec"].get("Role")}
            manager = a.get("ManagerStatus") or {}
            if nodes[node.id]["addr"] in ("", "0.0.0.0") and manager.get("Addr"):
                nodes[node.id]["addr"] = manager["Addr"].rsplit(":", 1)[0]
        return nodes

    def _check_swarm(self) -> str:
        """The id of the swarm node behind `swarm_client`; a clear error when it is no swarm manager."""
        try:
            info = self.swarm_client.info()
        except Exception as e:
            raise ClipperException(f"Unable to reach the Docker engine of the swarm manager: {e}") from e
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            raise ClipperException("This Docker engine is not part of a swarm: run `docker swarm init` (and "
                                   "`docker swarm join` on the other machines) first, or use DockerContainerManager")
        if not swarm.get("ControlAvailable"):
            raise ClipperException("This Docker engine is a swarm worker: point DOCKER_HOST (or docker_client) at a "
                                   "swarm manager")
        return str(swarm["NodeID"])

    # ------------------------------------------------------------------ images onto the nodes

    def _engine(self, spec: Any) -> Any:
        if isinstance(spec, str):
            import docker

            return docker.DockerClient(base_url=spec, timeout=600)
        return spec

    def _targets(self) -> list[tuple[str, Any]]:
        """(name, client) of each engine that must hold the images, the swarm manager's first."""
        targets = [("swarm manager", self.swarm_client)]
        for name, spec in self._node_engines.items():
            client = self._engine(spec)
            self._node_engines[name] = client
            targets.append((name, client))
        return targets

    def _place_image(self, ref: str) -> str:
        """Makes image `ref` (on the build engine) runnable by every node; returns the reference services use."""
        build = self.docker_client
        image = build.images.get(ref)
        if self.container_registry:
            remote = ref if ref.startswith(self.container_registry + "/") else f"{self.container_registry}/{ref}"
            repo, _, tag = remote.rpartition(":")
            image.tag(repo, tag)
            self._progress(f"[clipper] pushing {remote}")
            for chunk in build.images.push(repo, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise ClipperException(f"Cannot push {remote}: {chunk['error']}")
            return remote
        targets = self._targets()
        nodes = self._nodes()
        if len(nodes) > 1 and len(targets) < len(nodes):
            known = {v["hostname"] for v in nodes.values()} - set(self._node_engines)
            self.logger.warning(f"No container_registry and no engine for node(s) {', '.join(sorted(known))}: "
                                f"tasks placed there cannot start unless {ref} is already on them")
        for name, client in targets:
            self._copy_image(build, image, ref, client, name)
        return ref

    def _copy_image(self, src: Any, image: Any, ref: str, dst: Any, dst_name: str) -> None:
        """``docker save <ref> | docker -H <dst> load``, unless `dst` has the same image already."""
        key = (id(dst), image.id)  # unix-socket clients all have the same base_url
        with self._copy_lock:
            if key in self._copied:
                return
            try:
                if dst.images.get(ref).id == image.id:
                    self._copied.add(key)
                    return
            except Exception:  # noqa: BLE001 - missing (or another image under that name): copy
                pass
            started = time.monotonic()
            size = int(image.attrs.get("Size") or 0)
            self._progress(f"[clipper] copying {ref} ({size / 1e6:.0f} MB) to {dst_name}")
            dst.images.load(image.save(named=True))
            self._copied.add(key)
            self._progress(f"[clipper] {ref} is on {dst_name} ({time.monotonic() - started:.1f} s)")

    def _progress(self, line: str) -> None:
        if self.image_progress is not None:
            self.image_progress(line)
        else:
            self.logger.info(line)

    def _image(self, ref: str, what: str) -> str:
        return self._place_image(self._resolve_image(ref, what))

    # ------------------------------------------------------------------ services

    def _create_service(self, image: str, name: str, labels: Mapping[str, str], *, args: Sequence[str] = (),
                        env: Mapping[str, str] | None = None, replicas: int = 1,
                        ports: Mapping[int, int] | None = None, constraints: Sequence[str] = (),
                        max_per_node: int | None = None, mounts: Sequence[Any] = (),
                        resources: Mapping[str, Any] | None = None) -> Any:
        from docker import types

        all_labels = {**self.common_labels, **labels}
        endpoint = types.EndpointSpec(mode="dnsrr", ports={published: (target, "tcp", "host")
                                                           for target, published in (ports or {}).items()})
        res = None
        resources = dict(resources or {})
        gpus = resources.pop("gpus", None)
        if isinstance(gpus, list):
            raise ClipperException("On a swarm, ask for a number of GPUs (Swarm picks the devices)")
        if resources or gpus:
            unknown = set(resources) - {"cpu_limit", "mem_limit", "cpu_reservation", "mem_reservation"}
            if unknown:
                raise ClipperException(f"Unknown resource setting(s) {', '.join(sorted(unknown))}: use gpus, "
                                       "cpu_limit, mem_limit, cpu_reservation, mem_reservation")
            res = types.Resources(
                generic_resources={self.gpu_resource: gpus} if gpus else None,
                cpu_limit=_nano_cpus(resources["cpu_limit"]) if "cpu_limit" in resources else None,
                mem_limit=_bytes(resources["mem_limit"]) if "mem_limit" in resources else None,
                cpu_reservation=_nano_cpus(resources["cpu_reservation"]) if "cpu_reservation" in resources else None,
                mem_reservation=_bytes(resources["mem_reservation"]) if "mem_reservation" in resources else None)
        try:
            return self.swarm_client.services.create(
                image, args=list(args) or None, name=name, labels=all_labels, container_labels=all_labels,
                env=[f"{k}={v}" for k, v in (env or {}).items()], networks=[self.docker_network],
                endpoint_spec=endpoint, mode=types.ServiceMode("replicated", replicas=replicas),
                constraints=list(constraints) or None, maxreplicas=max_per_node, mounts=list(mounts) or None,
                resources=res, log_driver=self.log_config["type"], log_driver_options=self.log_config["config"],
                restart_policy=types.RestartPolicy(condition="any", delay=1_000_000_000),
                update_config=types.UpdateConfig(parallelism=1, order="start-first", failure_action="rollback",
                                                 monitor=5_000_000_000),
                stop_grace_period=int(self.stop_timeout * 1e9),
            )
        except self._errors().APIError as e:
            raise ClipperException(f"Cannot create the service {name} from {image}: {e}") from e

    def _running_tasks(self, service: Any) -> list[dict[str, Any]]:
        return [t for t in service.tasks(filters={"desired-state": "running"})
                if (t.get("Status") or {}).get("State") == "running"]

    def _wait_service(self, service: Any, what: str, want: int, ready: Callable[[], bool] | None = None) -> None:
        """Until `want` tasks of `service` run (and `ready()`); a timeout quotes the tasks' errors and logs."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            tasks = self._running_tasks(service)
            if len(tasks) >= want and (ready is None or ready()):
                return
            if time.monotonic() > deadline:
                raise self._service_failure(service, f"{what} did not become ready within {self.start_timeout:g} s "
                                                     f"({len(tasks)} of {want} task(s) running)")
            time.sleep(0.2)

    def _service_failure(self, service: Any, message: str) -> ClipperException:
        errors = []
        for t in service.tasks()[:5]:
            status = t.get("Status") or {}
            if status.get("Err") or status.get("State") in ("failed", "rejected"):
                errors.append(f"{status.get('State')}: {status.get('Err') or status.get('Message')}")
        try:
            tail = b"".join(service.logs(stdout=True, stderr=True, tail=20)).decode(errors="replace").rstrip()
        except Exception as e:  # noqa: BLE001 - a log we cannot read must not hide the real error
            tail = f"(cannot read the log: {e})"
        detail = "; ".join(dict.fromkeys(errors)) or "no task error reported"
        return ClipperException(f"{message}: service {service.name}: {detail}. "
                                f"Last lines of its log (docker service logs {service.name}):\n{tail}")

    # ------------------------------------------------------------------ cluster lifecycle

    def start_clipper(self, query_frontend_image: str = image_ref("query_frontend"),
                      mgmt_frontend_image: str = image_ref("management_frontend"),
                      frontend_exporter_image: str | None = None, cache_size: int = DEFAULT_CACHE_BYTES,
                      qf_http_thread_pool_size: int = 1, qf_http_timeout_request: int = 5,
                      qf_http_timeout_content: int = 300, num_frontend_replicas: int = 1) -> None:
        """Creates the services (Redis unless `redis_ip`, the management frontend, `num_frontend_replicas`
        query frontends) and waits until each answers from this machine."""
        if not isinstance(num_frontend_replicas, int) or num_frontend_replicas < 1:
            raise ClipperException(f"Invalid num_frontend_replicas {num_frontend_replicas!r}: must be an integer >= 1")
        if cache_size is None or int(cache_size) < 0:
            raise ClipperException(f"Invalid cache_size {cache_size!r}: must be a number of bytes >= 0")
        manager_node = self._check_swarm()
        if self._services():
            raise ClipperException(f"Cluster {self.cluster_name} cannot be started because it already exists "
                                   f"({', '.join(s.name for s in self._services())}). Use "
                                   "ClipperConnection.connect(), or stop it with stop_all() first.")
        schedulable = [n for n in self._nodes().values() if n["state"] == "ready" and n["availability"] == "active"]
        if num_frontend_replicas > len(schedulable):
            raise ClipperException(f"num_frontend_replicas={num_frontend_replicas} but the swarm has "
                                   f"{len(schedulable)} active node(s): each node runs at most one query frontend "
                                   "(its port is published on the node)")
        redis_image = self._image(self.redis_image or image_ref("redis"), "Redis")
        mgmt_image = self._image(mgmt_frontend_image, "management frontend")
        query_image = self._image(query_frontend_image, "query frontend")
        self._ensure_network(self.swarm_client, driver="overlay", attachable=True)
        self._draw_tokens()
        try:
            self._start_services(manager_node, redis_image, mgmt_image, query_image, int(cache_size),
                                 num_frontend_replicas)
        except BaseException:
            self._remove_services(self._services())
            raise
        self.connect()
        self.logger.info(f"Clipper is running on the swarm: query {', '.join(self.get_query_addrs())}, "
                         f"management {self.get_admin_addr()}")

    def _draw_tokens(self) -> None:
        if not self.admin_token:
            self.admin_token = secrets.token_urlsafe(32)
        if not self.predict_token and not self.insecure:
            self.predict_token = secrets.token_urlsafe(32)
            self.logger.warning("The query frontends publish their port on every address of their nodes: predict "
                                "and update require 'Authorization: Bearer <token>' with the token "
                                "ClipperConnection.predict_token (or pass predict_token=..., or insecure=True)")

    def _start_services(self, manager_node: str, redis_image: str, mgmt_image: str, query_image: str,
                        cache_size: int, frontends: int) -> None:
        from docker import types

        if not self.external_redis:
            command = ["redis-server", "--port", str(CLIPPER_INTERNAL_REDIS_PORT)]
            mounts = []
            if self.redis_persistence:
                command += persistence_args(REDIS_DATA_DIR)
                mounts.append(types.Mount(REDIS_DATA_DIR, self.redis_volume, type="volume",
                                          driver_config=types.DriverConfig(self.redis_volume_driver)
                                          if self.redis_volume_driver else None,
                                          labels=dict(self.common_labels)))
            # a local volume lives on one node: Redis stays on the manager this client talks to
            placement = [] if self.redis_volume_driver else [f"node.id=={manager_node}"]
            redis = self._create_service(redis_image, self._service_name("redis"), {CLIPPER_REDIS_LABEL: ""},
                                         args=command, constraints=placement, mounts=mounts)
            self._wait_service(redis, "Redis", 1)
            redis_host, redis_port = redis.name, CLIPPER_INTERNAL_REDIS_PORT
            self.redis_ip, self.redis_port = redis.name, CLIPPER_INTERNAL_REDIS_PORT
        else:
            assert self.redis_ip is not None
            redis_host, redis_port = self.redis_ip, self.redis_port
        common = [f"--redis_ip={redis_host}", f"--redis_port={redis_port}"]
        if self.log_level:
            common += ["--log-level", self.log_level]
        mgmt = self._create_service(
            mgmt_image, self._service_name("mgmt"),
            {CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL: "", MANAGEMENT_PORT_LABEL: str(self.clipper_management_port)},
            args=[*common, *self.management_frontend_args],
            env={management_client.ADMIN_TOKEN_ENV: self.admin_token or ""},
            ports={CLIPPER_INTERNAL_MANAGEMENT_PORT: self.clipper_management_port})
        query_args = [*common, f"--prediction_cache_size={cache_size}"]
        if self.heartbeat_timeout is not None:
            query_args += ["--heartbeat-timeout", f"{self.heartbeat_timeout:g}"]
        env = {}
        if self.predict_token:
            env[PREDICT_TOKEN_ENV] = self.predict_token
        else:
            query_args.append("--insecure")
        query = self._create_service(
            query_image, self.query_service,
            {CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL: "", QUERY_PORT_LABEL: str(self.clipper_query_port)},
            args=[*query_args, *self.query_frontend_args], env=env, replicas=frontends, max_per_node=1,
            ports={CLIPPER_INTERNAL_QUERY_PORT: self.clipper_query_port})
        self.connect(quiet=True)
        self._wait_service(mgmt, "The management frontend", 1,
                           lambda: self._http_ok(self.get_admin_addr(), "/admin/ping"))
        self._wait_service(query, "The query frontends", frontends,
                           lambda: all(self._http_ok(a, "/metrics") for a in self.get_query_addrs(refresh=True)))

    @staticmethod
    def _http_ok(addr: str, path: str) -> bool:
        from .base import http_ok

        return http_ok(f"http://{addr}{path}")

    def connect(self, quiet: bool = False) -> None:
        """Finds the cluster's services on the swarm and reads their ports, nodes and tokens (any process)."""
        services = self._services()
        query = [s for s in services if CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL in s.attrs["Spec"].get("Labels", {})]
        mgmt = [s for s in services if CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL in s.attrs["Spec"].get("Labels", {})]
        if not query or not mgmt:
            if quiet:
                return
            raise ClipperException(f"No Clipper cluster named '{self.cluster_name}' on this swarm: no service "
                                   f"labelled {CLIPPER_DOCKER_LABEL}={self.cluster_name}. Start one with "
                                   "ClipperConnection.start_clipper().")
        self.clipper_query_port = int(query[0].attrs["Spec"]["Labels"][QUERY_PORT_LABEL])
        self.clipper_management_port = int(mgmt[0].attrs["Spec"]["Labels"][MANAGEMENT_PORT_LABEL])
        self.admin_token = self._service_env(mgmt[0]).get(management_client.ADMIN_TOKEN_ENV) or self.admin_token
        self.predict_token = self._service_env(query[0]).get(PREDICT_TOKEN_ENV) or None
        redis = [s for s in services if CLIPPER_REDIS_LABEL in s.attrs["Spec"].get("Labels", {})]
        if redis:
            self.redis_ip, self.redis_port, self.external_redis = redis[0].name, CLIPPER_INTERNAL_REDIS_PORT, False
        self._query_service, self._mgmt_service = query[0], mgmt[0]
        self._query_addrs: list[str] = []

    @staticmethod
    def _service_env(service: Any) -> dict[str, str]:
        env = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
        return dict(e.split("=", 1) for e in env if "=" in e)

    def _task_hosts(self, service: Any) -> list[str]:
        """The addresses of the nodes running a task of `service` (its running tasks' nodes)."""
        nodes = self._nodes()
        addrs = []
        for t in self._running_tasks(service):
            node = nodes.get(t.get("NodeID", ""))
            if node and node["addr"] not in addrs:
                addrs.append(node["addr"])
        return addrs

    def get_query_addrs(self, refresh: bool = False) -> list[str]:
        """``host:port`` of every running query frontend (the address of each node that runs one)."""
        if getattr(self, "_query_service", None) is None:
            self.connect()
        if refresh or not getattr(self, "_query_addrs", None):
            self._query_service.reload()
            self._query_addrs = [f"{h}:{self.clipper_query_port}" for h in self._task_hosts(self._query_service)]
        return list(self._query_addrs)

    def get_query_addr(self) -> str:
        """``host:port`` of a query frontend (`docker_ip_address` if given, else the first node running one)."""
        if self._fixed_hostname:
            return f"{self._fixed_hostname}:{self.clipper_query_port}"
        addrs = self.get_query_addrs() or self.get_query_addrs(refresh=True)
        if not addrs:
            raise ClipperException(f"No query frontend of cluster {self.cluster_name} is running")
        return addrs[0]

    def get_admin_addr(self) -> str:
        """``host:port`` of the management frontend (the node that runs it)."""
        if getattr(self, "_mgmt_service", None) is None:
            self.connect()
        if self._fixed_hostname:
            return f"{self._fixed_hostname}:{self.clipper_management_port}"
        hosts = self._task_hosts(self._mgmt_service)
        if not hosts:
            raise ClipperException(f"The management frontend of cluster {self.cluster_name} is not running")
        return f"{hosts[0]}:{self.clipper_management_port}"

    def _admin_poll_addr(self) -> str:
        return self.get_admin_addr()

    def get_metric_addr(self) -> str:
        raise ClipperException("SwarmContainerManager runs no Prometheus: each query frontend serves its metrics at "
                               "GET /metrics (get_query_addrs())")

    def _remove_services(self, services: Iterable[Any]) -> list[str]:
        failures = []
        for s in services:
            try:
                s.remove()
            except self._errors().NotFound:
                pass
            except Exception as e:  # noqa: BLE001 - reported together
                failures.append(f"{s.name} ({e})")
        return failures

    def _wait_gone(self, services: Sequence[Any], timeout: float = 60.0) -> None:
        """Until no container of `services` runs any more (their tasks are shut down)."""
        names = {s.name for s in services}
        if not names:
            return
        label = {"label": f"{CLIPPER_DOCKER_LABEL}={self.cluster_name}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = []
            for _, client in self._targets():
                with contextlib.suppress(Exception):  # an engine that does not answer has nothing to wait for
                    left += client.containers.list(all=True, filters=label)
            if not any(c.labels.get("com.docker.swarm.service.name") in names for c in left):
                return
            time.sleep(0.2)

    def stop_all(self, graceful: bool = True, keep_state: bool = False) -> None:
        """Removes every service of the cluster (models, frontends, then Redis), the overlay network if a Clipper
        manager created it, and the Redis volume unless `keep_state`."""
        services = self._services()
        models = [s for s in services if CLIPPER_MODEL_CONTAINER_LABEL in s.attrs["Spec"].get("Labels", {})]
        redis = [s for s in services if CLIPPER_REDIS_LABEL in s.attrs["Spec"].get("Labels", {})]
        others = [s for s in services if s not in models and s not in redis]
        failures = self._remove_services(models) + self._remove_services(others)
        self._wait_gone(models + others)
        failures += self._remove_services(redis)
        self._wait_gone(redis)
        self._remove_overlay()
        if not keep_state and not failures:
            failures += self._remove_volume_everywhere()
        if failures:
            raise ClipperException(f"Could not remove {', '.join(failures)}")
        self.logger.info(f"Removed {len(services)} service(s)")

    def _remove_overlay(self) -> None:
        errors = self._errors()
        for _ in range(50):  # the network stays in use until the tasks' endpoints are gone
            try:
                network = self.swarm_client.networks.get(self.docker_network)
            except errors.NotFound:
                return
            if CLIPPER_NETWORK_LABEL not in (network.attrs.get("Labels") or {}):
                return
            try:
                network.remove()
                return
            except errors.APIError:
                time.sleep(0.2)
        self.logger.warning(f"Could not remove the overlay network {self.docker_network}: still in use")

    def _remove_volume_everywhere(self) -> list[str]:
        errors = self._errors()
        for _ in range(50):
            try:
                self.swarm_client.volumes.get(self.redis_volume).remove(force=True)
                self.logger.info(f"Removed the Redis volume {self.redis_volume}")
                return []
            except errors.NotFound:
                return []
            except errors.APIError as e:
                if "in use" not in str(e):
                    return [f"the volume {self.redis_volume} ({e})"]
                time.sleep(0.2)
        return [f"the volume {self.redis_volume} (still in use)"]

    # ------------------------------------------------------------------ model replicas

    def _model_services(self, name: str | None = None, version: str | None = None) -> list[Any]:
        if name is None:
            return self._services(CLIPPER_MODEL_CONTAINER_LABEL)
        label = create_model_container_label(name, str(version))
        return self._services(f"{CLIPPER_MODEL_CONTAINER_LABEL}={label}")

    def get_num_replicas(self, name: str, version: str) -> int:
        """The replica count of the model's service (what Swarm keeps running)."""
        services = self._model_services(name, version)
        if not services:
            return 0
        return int(services[0].attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 0))

    def _placement(self, name: str, version: str) -> tuple[list[str], dict[str, Any]]:
        key = f"{name}:{version}"
        constraints = [*self.constraints, *self.model_constraints.get(key, self.model_constraints.get(name, []))]
        return constraints, self.model_resources_for(name, version)

    def set_num_replicas(self, name: str, version: str, input_type: str, image: str, num_replicas: int) -> None:
        """Creates, scales or updates the model's service so that `num_replicas` tasks of `image` run; waits until
        every query frontend counts them. A new `image` for a running version is a rolling update (start first)."""
        version = str(version)
        if not isinstance(num_replicas, int) or num_replicas < 0:
            raise ClipperException("Invalid number of replicas: must be an integer >= 0")
        try:
            canonical, _ = parse_input_type(input_type)
        except ValueError as e:
            raise ClipperException(str(e)) from e
        if getattr(self, "_query_service", None) is None:
            self.connect()
        services = self._model_services(name, version)
        label = create_model_container_label(name, version)
        if services:
            service = services[0]
            spec_image = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@", 1)[0]
            wanted = self._image(image, "model") if image else spec_image
            if spec_image != wanted:
                from docker import types

                self.logger.info(f"Rolling update of {name}:{version} to {wanted}")
                service.update(image=wanted, mode=types.ServiceMode("replicated", replicas=num_replicas))
            elif self.get_num_replicas(name, version) != num_replicas:
                self.logger.info(f"Scaling {name}:{version} to {num_replicas} replica(s)")
                self._scale(service, num_replicas)
            service.reload()
        else:
            if num_replicas == 0:
                return
            ref = self._image(image, "model")
            constraints, resources = self._placement(name, version)
            env = {"CLIPPER_MODEL_NAME": name, "CLIPPER_MODEL_VERSION": version,
                   "CLIPPER_IP": f"tasks.{self.query_service}", "CLIPPER_PORT": str(CLIPPER_INTERNAL_RPC_PORT),
                   "CLIPPER_INPUT_TYPE": canonical, "CLIPPER_RESOLVE_INTERVAL": f"{self.resolve_interval:g}"}
            args = ["--log-level", self.log_level] if self.log_level and self._runs_our_runtime(image) else ()
            self.logger.info(f"Creating the service of {name}:{version} with {num_replicas} replica(s)")
            service = self._create_service(ref, self._model_service_name(name, version),
                                           {CLIPPER_MODEL_CONTAINER_LABEL: label}, args=args, env=env,
                                           replicas=num_replicas, constraints=constraints, resources=resources)
        self._wait_service(service, f"Model {name}:{version}", num_replicas)
        wait_frontend_replicas(self.get_admin_addr(), name, version, num_replicas, self.logger,
                               timeout=self.start_timeout, token=self.admin_token)

    def _scale(self, service: Any, replicas: int) -> None:
        """Sets the service's replica count and nothing else. docker-py's `Service.scale` sends back the spec read
        with Swarm's defaults inserted; a task template that differs from the stored one is a new one to Swarm,
        which then replaces every running task (seen: the one replica of a model restarted during 1 -> 6, and the
        frontends had none for a second and a half)."""
        spec = service.attrs["Spec"]
        service.client.api.update_service(
            service.id, service.version, name=spec["Name"], labels=spec.get("Labels"),
            task_template=spec["TaskTemplate"], mode={"Replicated": {"Replicas": replicas}},
            update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False)

    def _runs_our_runtime(self, image: str) -> bool:
        try:
            config = self.docker_client.images.get(image).attrs.get("Config") or {}
        except Exception:  # noqa: BLE001 - not on the build engine: pass no arguments
            return False
        return list(config.get("Entrypoint") or [])[-2:] == ["-m", "clipper.model_runtime"] and not config.get("Cmd")

    def stop_models(self, models: Mapping[str, Sequence[str]]) -> None:
        """Removes the services of the given versions (`{name: [version, ...]}`)."""
        wanted = {(name, str(v)) for name, versions in models.items() for v in versions}
        doomed = [s for s in self._model_services()
                  if parse_model_container_label(s.attrs["Spec"]["Labels"][CLIPPER_MODEL_CONTAINER_LABEL]) in wanted]
        failures = self._remove_services(doomed)
        self._wait_gone(doomed)
        if failures:
            raise ClipperException(f"Could not remove {', '.join(failures)}")

    def stop_all_model_containers(self) -> None:
        """Removes every model service of the cluster."""
        doomed = self._model_services()
        failures = self._remove_services(doomed)
        self._wait_gone(doomed)
        if failures:
            raise ClipperException(f"Could not remove {', '.join(failures)}")

    # ------------------------------------------------------------------ logs

    def get_logs(self, logging_dir: str) -> list[str]:
        """Writes each service's log (``docker service logs``: every task, on every node) to
        ``<logging_dir>/service_<name>.log``; returns the paths."""
        out = Path(os.path.abspath(os.path.expanduser(logging_dir)))
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for s in self._services():
            path = out / f"service_{s.name}.log"
            with contextlib.suppress(self._errors().NotFound):
                data = b"".join(s.logs(stdout=True, stderr=True, timestamps=True))
                path.write_bytes(data)
                paths.append(str(path))
        return paths
