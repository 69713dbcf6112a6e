"""The Kubernetes objects of a Clipper cluster, as plain dicts: what ``kubectl apply`` and the client take.

Pure functions from a `ClusterSpec` (and a `ModelSpec`) to manifests. `KubernetesContainerManager` creates
exactly these through the ``kubernetes`` client, and ``clipper k8s manifests`` prints them as YAML, so what a
GitOps user applies and what the manager creates are the same objects. The topology is the one of
the coordinator's cluster design; one cluster ``<c>`` in a namespace is:

- Secret ``clipper-tokens-at-<c>``: ``admin-token``, ``predict-token``, the frontends' bearer tokens;
- PersistentVolumeClaim ``redis-data-at-<c>``: Redis's append-only file;
- Deployment and Service ``redis-at-<c>``: Redis, 1 replica, strategy Recreate (none with an external `redis_ip`);
- Deployment and Service ``mgmt-frontend-at-<c>``: the management frontend, port 1338;
- Deployment and Service ``query-frontend-at-<c>``: `num_frontend_replicas` query frontends, port 1337 for clients;
- headless Service ``query-frontend-rpc-at-<c>``: port 7000, ``clusterIP: None``, so that its DNS name resolves
  to every ready query frontend pod;
- one Deployment ``<model>-<version>-deployment-at-<c>`` per model version (`model_deployment`).

Model replicas get ``CLIPPER_IP=query-frontend-rpc-at-<c>.<namespace>.svc.<cluster domain>``: the model runtime
connects to every address that name resolves to and resolves it again every 2 s, so every replica serves every
query frontend pod, new ones included. Query frontends announce themselves (status page, replica records)
with ``--advertise-address=<pod IP>`` from the downward API: a pod's IP is unique while it runs and reachable
from the management frontend's pod, which a pod's hostname is not (pods get no DNS name of their own).

Labels are Clipper's: ``ai.clipper.container.label=<c>`` on everything, ``ai.clipper.name=<role>`` (``redis``,
``mgmt-frontend``, ``query-frontend``, ``model``), ``ai.clipper.model_container.label=<name>_<version>`` on
model Deployments and pods; plus the recommended ``app.kubernetes.io/*`` ones (never in selectors).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..frontend.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_QUERY_PORT,
    DEFAULT_REDIS_PORT,
    DEFAULT_RPC_PORT,
    PREDICT_TOKEN_ENV,
)
from ..image_names import DEFAULT_IMAGE_VERSION, DEFAULT_REGISTRY
from ..images import RECIPES, VERSION
from ..input_types import parse_input_type

# Clipper's labels (clipper_admin's container_manager.py). `clipper.managers.base.CLIPPER_NAME_LABEL` and
# `CLIPPER_MODEL_CONTAINER_LABEL` have the same values; Clipper's cluster label is ai.clipper.container.label.
CLUSTER_LABEL = "ai.clipper.container.label"
NAME_LABEL = "ai.clipper.name"
MODEL_LABEL = "ai.clipper.model_container.label"
#: The model's exact name and version (label values are shortened when too long).
MODEL_NAME_ANNOTATION = "ai.clipper.model.name"
MODEL_VERSION_ANNOTATION = "ai.clipper.model.version"
#: Hash of the model Deployment's pod template as built here: a different one means a rolling update.
SPEC_HASH_ANNOTATION = "ai.clipper.spec-hash"

#: `NAME_LABEL` values (Clipper's).
REDIS, MGMT_FRONTEND, QUERY_FRONTEND, MODEL = "redis", "mgmt-frontend", "query-frontend", "model"

#: Clipper's `service_types` keys and this project's defaults. Clipper made all five NodePort; Redis has no
#: password, so here it stays inside the cluster unless asked. ``query-rpc`` is the headless Service, which
#: is always ClusterIP (the replicas run in the cluster); ``metric`` is accepted and unused (no Prometheus is
#: deployed: the pods carry ``prometheus.io/*`` annotations for the cluster's own).
CLUSTER_IP, NODE_PORT, LOAD_BALANCER, EXTERNAL_NAME = "ClusterIP", "NodePort", "LoadBalancer", "ExternalName"
SERVICE_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER)
DEFAULT_SERVICE_TYPES: dict[str, str] = {
    "redis": CLUSTER_IP, "management": NODE_PORT, "query": NODE_PORT, "query-rpc": CLUSTER_IP, "metric": NODE_PORT,
}

#: Keys of the tokens Secret.
ADMIN_TOKEN_KEY, PREDICT_TOKEN_KEY = "admin-token", "predict-token"
#: The management frontend reads its token from this variable (`clipper.management_client.ADMIN_TOKEN_ENV`).
ADMIN_TOKEN_ENV = "CLIPPER_ADMIN_TOKEN"
#: The query frontend's pod IP (downward API), its ``--advertise-address``.
POD_IP_ENV = "CLIPPER_POD_IP"

#: Where model containers touch their ready file (our images' ``CLIPPER_READY_FILE``, Clipper's probe path).
READY_FILE = "/model_is_ready.check"
#: The model runtimes' metrics endpoint in a pod (`clipper.managers.prometheus.METRICS_*_ENV`; Clipper's 1390).
METRICS_PORT = 1390
METRICS_PORT_ENV, METRICS_HOST_ENV = "CLIPPER_METRICS_PORT", "CLIPPER_METRICS_HOST"
#: The key of the kept replicas' JSON list in their ConfigMap (`kept_replicas_configmap`).
KEPT_REPLICAS_KEY = "replicas.json"
#: Redis's data directory in its pod (the volume's mount point).
REDIS_DATA_DIR = "/data"

#: Cluster names are DNS-1123 labels short enough for the longest object name, ``query-frontend-rpc-at-<c>``.
MAX_CLUSTER_NAME = 63 - len("query-frontend-rpc-at-")
GPU_RESOURCE = "nvidia.com/gpu"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# resource.Quantity's syntax (k8s.io/apimachinery): a number and an optional suffix (m, Mi, G, e3...).
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


# ---------------------------------------------------------------------------------------------- names


def is_dns_label(text: str, limit: int = 63) -> bool:
    """A DNS-1123 label: lower-case letters, digits and '-', alphanumeric at both ends, at most `limit` long."""
    return 0 < len(text) <= limit and _DNS_LABEL.fullmatch(text) is not None


def is_label_value(text: str) -> bool:
    """A valid label value: at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends (or empty)."""
    return len(text) <= 63 and _LABEL_VALUE.fullmatch(text) is not None


def _digest(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def fit_dns_label(base: str, limit: int = 63) -> str:
    """`base` when it is a DNS-1123 label of at most `limit` characters; else its first characters (made valid)
    and ``-`` and 10 hex digits of its SHA-256, so that distinct bases stay distinct."""
    if is_dns_label(base, limit):
        return base
    head = re.sub(r"[^a-z0-9-]+", "-", base.lower())[: limit - 11].strip("-")
    return f"{head}-{_digest(base)}" if head else _digest(base)


def check_cluster_name(name: str) -> str:
    """`name`, or ValueError when it cannot name the cluster's objects."""
    if not is_dns_label(name, MAX_CLUSTER_NAME):
        raise ValueError(f"Invalid cluster name {name!r}: on Kubernetes it names objects and must be a DNS-1123 "
                         f"label of at most {MAX_CLUSTER_NAME} characters (lower-case letters, digits and '-', "
                         "starting and ending with a letter or digit)")
    return name


def check_namespace(namespace: str) -> str:
    if not is_dns_label(namespace):
        raise ValueError(f"Invalid namespace {namespace!r}: a DNS-1123 label (lower-case letters, digits, '-', "
                         "at most 63 characters)")
    return namespace


def redis_name(cluster: str) -> str:
    return f"redis-at-{cluster}"


def redis_pvc_name(cluster: str) -> str:
    return f"redis-data-at-{cluster}"


def mgmt_name(cluster: str) -> str:
    return f"mgmt-frontend-at-{cluster}"


def query_name(cluster: str) -> str:
    return f"query-frontend-at-{cluster}"


def query_rpc_name(cluster: str) -> str:
    return f"query-frontend-rpc-at-{cluster}"


def secret_name(cluster: str) -> str:
    return f"clipper-tokens-at-{cluster}"


def kept_replicas_name(cluster: str) -> str:
    """The ConfigMap where `stop_all(keep_state=True)` lists the model replicas to start again."""
    return f"clipper-replicas-at-{cluster}"


def model_deployment_name(cluster: str, name: str, version: str) -> str:
    """Clipper's ``<name>-<version>-deployment-at-<cluster>`` (without its per-frontend index: one Deployment
    serves every frontend), shortened with a hash when longer than a DNS-1123 label."""
    return fit_dns_label(f"{name}-{version}-deployment-at-{cluster}")


def model_label_value(name: str, version: str) -> str:
    """Clipper's ``<name>_<version>`` (`create_model_container_label`), shortened with a hash past 63 characters."""
    value = f"{name}_{version}"
    if is_label_value(value):
        return value
    head = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:52].strip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def selector(labels: Mapping[str, str]) -> str:
    """A label selector string, ``k=v,k2=v2``."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def role_labels(cluster: str, role: str) -> dict[str, str]:
    """What the Deployments and Services of `role` select pods by."""
    return {CLUSTER_LABEL: cluster, NAME_LABEL: role}


def model_labels(cluster: str, name: str, version: str) -> dict[str, str]:
    return {**role_labels(cluster, MODEL), MODEL_LABEL: model_label_value(name, version)}


def _labels(selecting: Mapping[str, str], cluster: str, role: str) -> dict[str, str]:
    return {**selecting, "app.kubernetes.io/name": "clipper", "app.kubernetes.io/instance": cluster,
            "app.kubernetes.io/component": role, "app.kubernetes.io/part-of": "clipper"}


def rpc_host(cluster: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """The headless Service's DNS name: every ready query frontend pod's address (``CLIPPER_IP`` of replicas)."""
    return f"{query_rpc_name(cluster)}.{namespace}.svc.{cluster_domain}"


def redis_host(cluster: str) -> str:
    """How the frontends reach the managed Redis: its Service's name (same namespace)."""
    return redis_name(cluster)


# ---------------------------------------------------------------------------------------------- images


def cluster_image(ref: str, registry: str | None = None) -> str:
    """How the manifests name an image. This project's images (``clipper/<recipe>[:tag]``, which
    ``python -m clipper.images build`` tags with the package version and with Clipper's 0.4.1) are named by the
    package version's tag, under ``<registry>/`` when given (where ``clipper k8s push-images`` pushes them);
    any other image is left as it is."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = ref, ""
    owner, slash, short = repo.partition("/")
    canonical = re.sub(r"python\d+-closure-container", "python-closure-container", short)
    if owner != DEFAULT_REGISTRY or not slash or canonical not in RECIPES:
        return ref
    tag = VERSION if tag in ("", DEFAULT_IMAGE_VERSION) else tag
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    return f"{prefix}{repo}:{tag}"


def default_image(name: str) -> str:
    """``clipper/<name>:<package version>``."""
    return f"{DEFAULT_REGISTRY}/{name}:{VERSION}"


#: The images a cluster runs (model images come on top).
CLUSTER_IMAGES = ("query_frontend", "management_frontend", "redis")


# ---------------------------------------------------------------------------------------------- specs


def check_quantity(text: str, what: str) -> str:
    """`text` when it is a Kubernetes quantity (``500m``, ``1.5``, ``256Mi``, ``2G``); else ValueError."""
    if not _QUANTITY.fullmatch(str(text)):
        raise ValueError(f"{what} {text!r} is not a Kubernetes quantity (e.g. 500m, 2, 256Mi, 1Gi)")
    return str(text)


@dataclass(frozen=True)
class Resources:
    """A container's resource requests and limits. `cpu`/`memory` are requests, `cpu_limit`/`memory_limit`
    limits (Kubernetes quantities: ``500m``, ``2``, ``256Mi``); `gpus` whole GPUs of `gpu_resource`
    (an extended resource: requested and limited alike, and the pod tolerates that resource's taint)."""

    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpus: int = 0
    gpu_resource: str = GPU_RESOURCE

    def __post_init__(self) -> None:
        for what in ("cpu", "memory", "cpu_limit", "memory_limit"):
            value = getattr(self, what)
            if value is not None:
                check_quantity(value, what)
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise ValueError(f"gpus {self.gpus!r} must be a whole number >= 0")

    def to_k8s(self) -> dict[str, dict[str, str]]:
        """``{"requests": {...}, "limits": {...}}`` without empty parts."""
        requests = {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v is not None}
        if self.gpus:
            requests[self.gpu_resource] = limits[self.gpu_resource] = str(self.gpus)
        return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def check_service_types(given: Mapping[str, str] | None) -> dict[str, str]:
    """Clipper's `service_types` (any of its keys ``redis``, ``management``, ``query``, ``query-rpc``,
    ``metric``; values ClusterIP, NodePort or LoadBalancer, in any case) over the defaults; ValueError otherwise."""
    types = dict(DEFAULT_SERVICE_TYPES)
    if given is None:
        return types
    if not isinstance(given, Mapping):
        raise ValueError(f"service_types must be a dict, got {given!r}")
    unknown = sorted(set(given) - set(types))
    if unknown:
        raise ValueError(f"service_types has unknown keys: {', '.join(map(str, unknown))} "
                         f"(known: {', '.join(types)})")
    for key, value in given.items():
        canonical = {t.lower(): t for t in (*SERVICE_TYPES, EXTERNAL_NAME)}.get(str(value).lower())
        if canonical == EXTERNAL_NAME:
            raise ValueError(f"service_types[{key!r}]: Clipper does not support '{EXTERNAL_NAME}' services")
        if canonical is None:
            raise ValueError(f"service_types[{key!r}] has an unknown value {value!r} "
                             f"(allowed: {', '.join(SERVICE_TYPES)})")
        types[key] = canonical
    return types


@dataclass(frozen=True)
class ClusterSpec:
    """Everything the cluster's objects depend on (the manager's and the CLI's options).

    `redis_ip`: an external Redis (no Redis Deployment, Service or volume); `insecure`: predictions need no
    token (the query frontends run ``--insecure``; the management API always needs one); `container_registry`:
    where this project's images were pushed (`cluster_image`); `redis_storage`/`storage_class`: the Redis
    volume claim (`storage_class` None: the cluster's default class); `redis_persistence` False: Redis in
    memory, no volume. `heartbeat_timeout` and `log_level` are the frontends' flags (None: their default).
    """

    cluster_name: str = "default-cluster"
    namespace: str = "default"
    num_frontend_replicas: int = 1
    query_frontend_image: str = default_image("query_frontend")
    mgmt_frontend_image: str = default_image("management_frontend")
    redis_image: str = default_image("redis")
    container_registry: str | None = None
    redis_ip: str | None = None
    redis_port: int = DEFAULT_REDIS_PORT
    service_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVICE_TYPES))
    cache_size: int = DEFAULT_CACHE_BYTES
    heartbeat_timeout: float | None = 5.0
    log_level: str | None = "INFO"
    insecure: bool = False
    redis_persistence: bool = True
    redis_storage: str = "1Gi"
    storage_class: str | None = None
    query_frontend_resources: Resources = Resources(cpu="250m", memory="256Mi")
    mgmt_frontend_resources: Resources = Resources(cpu="100m", memory="128Mi")
    redis_resources: Resources = Resources(cpu="100m", memory="128Mi")
    image_pull_policy: str = "IfNotPresent"
    query_frontend_args: Sequence[str] = ()
    management_frontend_args: Sequence[str] = ()
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster_name)
        check_namespace(self.namespace)
        if not isinstance(self.num_frontend_replicas, int) or self.num_frontend_replicas < 1:
            raise ValueError(f"num_frontend_replicas {self.num_frontend_replicas!r} must be at least 1")
        if not 0 < int(self.redis_port) < 65536:
            raise ValueError(f"redis_port {self.redis_port!r} is not a port number")
        if int(self.cache_size) < 0:
            raise ValueError(f"cache_size {self.cache_size!r} must be a number of bytes >= 0")
        if self.image_pull_policy not in _PULL_POLICIES:
            raise ValueError(f"image_pull_policy {self.image_pull_policy!r}: one of {', '.join(_PULL_POLICIES)}")
        check_quantity(self.redis_storage, "redis_storage")
        object.__setattr__(self, "service_types", check_service_types(self.service_types))

    @property
    def managed_redis(self) -> bool:
        return self.redis_ip is None

    def image(self, ref: str) -> str:
        return cluster_image(ref, self.container_registry)


@dataclass(frozen=True)
class ModelSpec:
    """A model version's Deployment. `input_type` takes Clipper's aliases; `metrics` False: the image serves no
    ``GET /metrics`` on ``$CLIPPER_METRICS_PORT`` (Clipper's own containers), so no liveness probe on it."""

    name: str
    version: str
    input_type: str
    image: str
    num_replicas: int = 1
    resources: Resources = Resources()
    metrics: bool = True

    def __post_init__(self) -> None:
        for what, value in (("model name", self.name), ("model version", str(self.version))):
            if not _DNS_LABEL.fullmatch(value):
                raise ValueError(f"Invalid {what} {value!r}: a DNS-1123 label (lower-case letters, digits, '-')")
        object.__setattr__(self, "version", str(self.version))
        object.__setattr__(self, "input_type", parse_input_type(self.input_type)[0])
        if not isinstance(self.num_replicas, int) or self.num_replicas < 0:
            raise ValueError(f"num_replicas {self.num_replicas!r} must be a whole number >= 0")
        if not self.image:
            raise ValueError("a model needs an image")


# ---------------------------------------------------------------------------------------------- pieces


def _meta(name: str, spec: ClusterSpec, labels: Mapping[str, str],
          annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": spec.namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _env(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _http_probe(path: str, port: str, period: int, failures: int = 3) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def _exec_probe(command: Sequence[str], period: int, failures: int = 3) -> dict[str, Any]:
    return {"exec": {"command": list(command)}, "periodSeconds": period, "timeoutSeconds": 3,
            "failureThreshold": failures}


def _container(name: str, image: str, spec: ClusterSpec, *, args: Sequence[str] = (),
               ports: Sequence[tuple[str, int]] = (), env: Sequence[Mapping[str, Any]] = (),
               resources: Resources | None = None, **probes: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": spec.image_pull_policy}
    if args:
        c["args"] = list(args)
    if ports:
        c["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]
    if env:
        c["env"] = [dict(e) for e in env]
    if resources is not None and (k8s := resources.to_k8s()):
        c["resources"] = k8s
    for key, probe in probes.items():
        if probe is not None:
            c[key] = probe
    c["securityContext"] = {"allowPrivilegeEscalation": False}
    return c


def _deployment(name: str, spec: ClusterSpec, role: str, selecting: Mapping[str, str], replicas: int,
                pod: Mapping[str, Any], strategy: Mapping[str, Any], *,
                annotations: Mapping[str, str] | None = None,
                pod_annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": _labels(selecting, spec.cluster_name, role)}
    if pod_annotations:
        template_meta["annotations"] = dict(pod_annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, spec, _labels(selecting, spec.cluster_name, role), annotations),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(selecting)},
            "strategy": dict(strategy),
            "template": {"metadata": template_meta, "spec": {"enableServiceLinks": False, **pod}},
        },
    }


_ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _service(name: str, spec: ClusterSpec, role: str, service_type: str, ports: Sequence[tuple[str, int]],
             *, headless: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": CLUSTER_IP if headless else service_type,
        "selector": role_labels(spec.cluster_name, role),
        "ports": [{"name": n, "port": port, "targetPort": n, "protocol": "TCP"} for n, port in ports],
    }
    if headless:
        body["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, spec, _labels(role_labels(spec.cluster_name, role), spec.cluster_name, role)),
            "spec": body}


# ---------------------------------------------------------------------------------------------- cluster


def tokens_secret(spec: ClusterSpec, admin_token: str, predict_token: str | None) -> dict[str, Any]:
    """The Secret the frontends read their bearer tokens from (`stringData`: the API server encodes it)."""
    data = {ADMIN_TOKEN_KEY: admin_token}
    if predict_token:
        data[PREDICT_TOKEN_KEY] = predict_token
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(secret_name(spec.cluster_name), spec,
                              _labels({CLUSTER_LABEL: spec.cluster_name}, spec.cluster_name, "tokens")),
            "stringData": data}


def redis_args(persistence: bool = True) -> list[str]:
    """``redis-server`` and its flags, as the Docker manager runs it (`clipper.state.redis_server.persistence_args`
    of ``/data``: an append-only file fsynced every second, no RDB snapshots)."""
    durability = (["--dir", REDIS_DATA_DIR, "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
                  if persistence else ["--save", "", "--appendonly", "no"])
    return ["redis-server", "--port", str(DEFAULT_REDIS_PORT), *durability]


def redis_pvc(spec: ClusterSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": spec.redis_storage}}}
    if spec.storage_class:
        body["storageClassName"] = spec.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(redis_pvc_name(spec.cluster_name), spec,
                              _labels(role_labels(spec.cluster_name, REDIS), spec.cluster_name, REDIS)),
            "spec": body}


def redis_deployment(spec: ClusterSpec) -> dict[str, Any]:
    """One Redis pod; Recreate, so that the old pod lets go of the ReadWriteOnce volume before the new one starts."""
    ping = f'[ "$(redis-cli -p {DEFAULT_REDIS_PORT} ping)" = PONG ]'
    container = _container(
        "redis", spec.image(spec.redis_image), spec, args=redis_args(spec.redis_persistence),
        ports=[("redis", DEFAULT_REDIS_PORT)], resources=spec.redis_resources,
        readinessProbe=_exec_probe(["sh", "-c", ping], period=5),
        livenessProbe={"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "timeoutSeconds": 3,
                       "failureThreshold": 3})
    pod: dict[str, Any] = {"containers": [container]}
    if spec.redis_persistence:
        container["volumeMounts"] = [{"name": "data", "mountPath": REDIS_DATA_DIR}]
        pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": redis_pvc_name(spec.cluster_name)}}]
    return _deployment(redis_name(spec.cluster_name), spec, REDIS, role_labels(spec.cluster_name, REDIS), 1, pod,
                       {"type": "Recreate"})


def redis_service(spec: ClusterSpec) -> dict[str, Any]:
    return _service(redis_name(spec.cluster_name), spec, REDIS, spec.service_types["redis"],
                    [("redis", int(spec.redis_port))])


def _redis_flags(spec: ClusterSpec) -> list[str]:
    host = redis_host(spec.cluster_name) if spec.managed_redis else spec.redis_ip
    return [f"--redis_ip={host}", f"--redis_port={int(spec.redis_port)}"]


def _log_flags(spec: ClusterSpec) -> list[str]:
    return ["--log-level", spec.log_level] if spec.log_level else []


def mgmt_deployment(spec: ClusterSpec) -> dict[str, Any]:
    container = _container(
        "mgmt-frontend", spec.image(spec.mgmt_frontend_image), spec,
        args=[*_redis_flags(spec), *_log_flags(spec), *spec.management_frontend_args],
        ports=[("http", DEFAULT_MANAGEMENT_PORT)],
        env=[_secret_env(ADMIN_TOKEN_ENV, secret_name(spec.cluster_name), ADMIN_TOKEN_KEY)],
        resources=spec.mgmt_frontend_resources,
        readinessProbe=_http_probe("/admin/ping", "http", period=5),
        livenessProbe=_http_probe("/admin/ping", "http", period=10))
    return _deployment(mgmt_name(spec.cluster_name), spec, MGMT_FRONTEND, role_labels(spec.cluster_name, MGMT_FRONTEND),
                       1, {"containers": [container]}, _ROLLING)


def mgmt_service(spec: ClusterSpec) -> dict[str, Any]:
    return _service(mgmt_name(spec.cluster_name), spec, MGMT_FRONTEND, spec.service_types["management"],
                    [("http", DEFAULT_MANAGEMENT_PORT)])


def query_args(spec: ClusterSpec) -> list[str]:
    """The query frontends' flags (the image's entrypoint binds 0.0.0.0 for HTTP and RPC)."""
    args = [*_redis_flags(spec), f"--prediction_cache_size={int(spec.cache_size)}",
            f"--advertise-address=$({POD_IP_ENV})"]
    if spec.heartbeat_timeout is not None:
        args += ["--heartbeat-timeout", f"{spec.heartbeat_timeout:g}"]
    args += _log_flags(spec)
    if spec.insecure:
        args.append("--insecure")
    return [*args, *spec.query_frontend_args]


def query_deployment(spec: ClusterSpec) -> dict[str, Any]:
    env = [{"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    if not spec.insecure:
        env.append(_secret_env(PREDICT_TOKEN_ENV, secret_name(spec.cluster_name), PREDICT_TOKEN_KEY))
    container = _container(
        "query-frontend", spec.image(spec.query_frontend_image), spec, args=query_args(spec),
        ports=[("http", DEFAULT_QUERY_PORT), ("rpc", DEFAULT_RPC_PORT)], env=env,
        resources=spec.query_frontend_resources,
        readinessProbe=_http_probe("/readyz", "http", period=5),
        livenessProbe=_http_probe("/healthz", "http", period=10))
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(DEFAULT_QUERY_PORT),
              "prometheus.io/path": "/metrics"}
    return _deployment(query_name(spec.cluster_name), spec, QUERY_FRONTEND,
                       role_labels(spec.cluster_name, QUERY_FRONTEND), spec.num_frontend_replicas,
                       {"containers": [container]}, _ROLLING, pod_annotations=scrape)


def query_service(spec: ClusterSpec) -> dict[str, Any]:
    return _service(query_name(spec.cluster_name), spec, QUERY_FRONTEND, spec.service_types["query"],
                    [("http", DEFAULT_QUERY_PORT)])


def query_rpc_service(spec: ClusterSpec) -> dict[str, Any]:
    """Headless: no virtual IP; its DNS name resolves to the IP of every ready query frontend pod."""
    return _service(query_rpc_name(spec.cluster_name), spec, QUERY_FRONTEND, CLUSTER_IP,
                    [("rpc", DEFAULT_RPC_PORT)], headless=True)


def cluster_objects(spec: ClusterSpec, admin_token: str | None = None,
                    predict_token: str | None = None) -> list[dict[str, Any]]:
    """Every object of the cluster, in the order to create them: the tokens Secret (when `admin_token` is
    given), Redis's volume claim, Deployment and Service (managed Redis only), the management frontend's, the
    query frontends' Deployment and Service, and the headless Service."""
    objs: list[dict[str, Any]] = []
    if admin_token is not None:
        objs.append(tokens_secret(spec, admin_token, None if spec.insecure else predict_token))
    if spec.managed_redis:
        if spec.redis_persistence:
            objs.append(redis_pvc(spec))
        objs += [redis_deployment(spec), redis_service(spec)]
    objs += [mgmt_deployment(spec), mgmt_service(spec), query_deployment(spec), query_service(spec),
             query_rpc_service(spec)]
    return objs


# ---------------------------------------------------------------------------------------------- models


def spec_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (the pod template a Deployment was made from)."""
    return _digest(json.dumps(obj, sort_keys=True, separators=(",", ":")), 16)


def model_deployment(spec: ClusterSpec, model: ModelSpec) -> dict[str, Any]:
    """A model version's Deployment: `num_replicas` pods of its image with Clipper's environment, connecting to
    every query frontend through the headless Service. Probes: ready once the runtime has registered with a
    frontend (its ready file: startup and readiness); alive while it answers ``GET /metrics`` (when
    `model.metrics`). Rolling updates start a new pod before an old one stops."""
    env = [
        _env("CLIPPER_MODEL_NAME", model.name),
        _env("CLIPPER_MODEL_VERSION", model.version),
        _env("CLIPPER_INPUT_TYPE", model.input_type),
        _env("CLIPPER_IP", rpc_host(spec.cluster_name, spec.namespace, spec.cluster_domain)),
        _env("CLIPPER_PORT", DEFAULT_RPC_PORT),
        _env("CLIPPER_READY_FILE", READY_FILE),
    ]
    ports: list[tuple[str, int]] = []
    liveness = None
    pod_annotations = None
    if model.metrics:
        env += [_env(METRICS_HOST_ENV, "0.0.0.0"), _env(METRICS_PORT_ENV, METRICS_PORT)]
        ports.append(("metrics", METRICS_PORT))
        liveness = {**_http_probe("/metrics", "metrics", period=10), "timeoutSeconds": 5}
        pod_annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                           "prometheus.io/path": "/metrics"}
    ready = ["test", "-f", READY_FILE]
    container = _container(
        "model", spec.image(model.image), spec, ports=ports, env=env, resources=model.resources,
        startupProbe=_exec_probe(ready, period=3, failures=100),
        readinessProbe=_exec_probe(ready, period=5),
        livenessProbe=liveness)
    pod: dict[str, Any] = {"containers": [container]}
    if model.resources.gpus:
        pod["tolerations"] = [{"key": model.resources.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    selecting = model_labels(spec.cluster_name, model.name, model.version)
    dep = _deployment(model_deployment_name(spec.cluster_name, model.name, model.version), spec, MODEL, selecting,
                      model.num_replicas, pod, _ROLLING, pod_annotations=pod_annotations)
    dep["metadata"]["annotations"] = {MODEL_NAME_ANNOTATION: model.name, MODEL_VERSION_ANNOTATION: model.version,
                                      SPEC_HASH_ANNOTATION: spec_hash(dep["spec"]["template"])}
    return dep


def model_objects(spec: ClusterSpec, models: Sequence[ModelSpec]) -> list[dict[str, Any]]:
    return [model_deployment(spec, m) for m in models]


def kept_replicas_configmap(spec: ClusterSpec, replicas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ConfigMap in which ``stop_all(keep_state=True)`` lists the model replicas that ran (``{"name",
    "version", "input_type", "image", "count"}`` each) for the next ``start_clipper``."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(kept_replicas_name(spec.cluster_name), spec,
                              _labels({CLUSTER_LABEL: spec.cluster_name}, spec.cluster_name, "kept-state")),
            "data": {KEPT_REPLICAS_KEY: json.dumps(list(replicas), sort_keys=True)}}


# ---------------------------------------------------------------------------------------------- YAML


def to_yaml(objs: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """A multi-document YAML stream of `objs` (``---`` between documents), after `header` comment lines."""
    try:
        import yaml
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError("PyYAML is not installed: the Kubernetes manifests need clipper-serving's "
                                  "kubernetes extra (pip install 'clipper-serving[kubernetes]')", name=e.name) from e
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comments + yaml.safe_dump_all([dict(o) for o in objs], sort_keys=False, default_flow_style=False,
                                         explicit_start=True)
