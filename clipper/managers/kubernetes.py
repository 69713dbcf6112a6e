"""`KubernetesContainerManager`: a Clipper cluster on Kubernetes, through the official ``kubernetes`` client.

Clipper's constructor arguments and attributes (``clipper_admin.KubernetesContainerManager``), with the topology
of `clipper.k8s.objects`: Redis (Deployment, PersistentVolumeClaim, Service; none with `redis_ip`), the
management frontend, `num_frontend_replicas` query frontends behind one Service and one headless Service that
every model replica connects through, a Secret with the bearer tokens, and one Deployment per model version.
The manager creates exactly the dicts `clipper.k8s.objects` builds (``create_namespaced_deployment(body=dict)``),
the same that ``clipper k8s manifests`` prints.

Addresses are resolved as Clipper did: a LoadBalancer Service's ingress address; else, with
`kubernetes_proxy_addr`, the ``kubectl proxy`` form ``<proxy>/api/v1/namespaces/<ns>/services/<svc>:<port>/proxy``;
else a node's address and the Service's node port (nodes' ``ExternalDNS`` addresses, then ``ExternalIP`` ones,
then, with `useInternalIP`, ``InternalIP`` ones). A ClusterIP Service (without the proxy) is named by its DNS
name, reachable from inside the cluster only.

Tokens: the frontends listen on every address of their pods, so the management API always requires a bearer
token and predictions require one unless ``insecure=True``; both live in the Secret ``clipper-tokens-at-<c>``
(given, ``$CLIPPER_ADMIN_TOKEN``, kept by ``stop_all(keep_state=True)``, or drawn at `start_clipper`), which
`connect()` reads back. Through ``kubectl proxy`` no token reaches a frontend (the API server drops the
``Authorization`` header once it has authenticated the request): use NodePort or LoadBalancer addresses, or
``kubectl port-forward``, with tokens.

Models: `set_num_replicas` creates the version's Deployment, scales it through the ``scale`` subresource, or,
when what it would create differs (another image, resources, environment), replaces it, which Kubernetes rolls
out one new pod before each old one goes (maxSurge 1, maxUnavailable 0). Each call waits until the pods are
ready (their ready file: registered with a query frontend) and fails early, with the pods' reasons and log
lines, on image pull errors, crash loops and missing Secrets. `set_model_version` needs nothing here: versions
are separate Deployments and the switch happens in Redis at once, both versions' pods keep running (as in
Clipper) until `stop_inactive_model_versions`. `build_model` builds with the local Docker engine
(`DockerContainerManager.build_model`) and pushes to `container_registry`.

Validated against the Kubernetes OpenAPI schemas and with a recording fake of the client's APIs; not run
against a live cluster on the machine it was written on (docs/kubernetes.md).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..exceptions import ClipperException
from ..frontend.config import DEFAULT_CACHE_BYTES, DEFAULT_MANAGEMENT_PORT, DEFAULT_QUERY_PORT, DEFAULT_REDIS_PORT
from ..image_names import image_ref
from ..input_types import parse_input_type
from ..k8s import objects as k8s
from ..k8s.objects import ClusterSpec, ModelSpec, Resources
from ..k8s.registry import PushError, push
from .base import ClusterAdapter, ContainerManager, gpu_request

logger = logging.getLogger("clipper.managers.kubernetes")

INSTALL_HINT = "pip install 'clipper-serving[kubernetes]'"
#: Waiting reasons of a container that will not get better by waiting.
FATAL_REASONS = ("ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff")
_IMAGE_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")


# ---------------------------------------------------------------------------------------------- pure helpers


def node_hosts(nodes: Sequence[Mapping[str, Any]], use_internal_ip: bool) -> list[str]:
    """The nodes' addresses a client reaches NodePorts at: ``ExternalDNS`` (Clipper), else ``ExternalIP``, else
    (with `use_internal_ip`) ``InternalIP``. `nodes` are Node objects as dicts; ClipperException when none."""
    def of(kind: str) -> list[str]:
        return [a["address"] for n in nodes for a in ((n.get("status") or {}).get("addresses") or [])
                if a.get("type") == kind and a.get("address")]

    hosts = of("ExternalDNS") or of("ExternalIP")
    if not hosts and use_internal_ip:
        hosts = of("InternalIP")
    if not hosts:
        raise ClipperException(
            "Error connecting to Kubernetes cluster. No external node addresses found. You may pass in "
            "KubernetesContainerManager(useInternalIP=True) to connect to local Kubernetes cluster")
    return hosts


class KubernetesApiError(ClipperException):
    """The Kubernetes API answered an error (`status`: its HTTP status)."""

    def __init__(self, msg: str, status: int) -> None:
        super().__init__(msg)
        self.status = status


class AddressPending(ClipperException):
    """A LoadBalancer Service has no ingress address yet."""


def proxy_addr(proxy: str, namespace: str, service: str, port: int) -> str:
    """Clipper's ``kubectl proxy`` address of a Service's port (no scheme: the clients prepend ``http://``)."""
    base = proxy.split("://", 1)[-1].rstrip("/")
    return f"{base}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


def service_addr(service: Mapping[str, Any], port: int, *, hosts: Sequence[str] = (), proxy: str | None = None,
                 cluster_domain: str = "cluster.local") -> str:
    """``host:port`` (or the proxy form) where a client reaches `port` of `service` (a Service as a dict):
    a LoadBalancer's ingress IP or hostname and the port; else the proxy form; else a NodePort on ``hosts[0]``;
    else (ClusterIP) the Service's DNS name, which resolves inside the cluster only."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    name, namespace = meta["name"], meta.get("namespace") or "default"
    entry = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    if entry is None:
        raise ClipperException(f"Service {name} has no port {port}")
    kind = spec.get("type") or k8s.CLUSTER_IP
    if kind == k8s.LOAD_BALANCER:
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        host = next((i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")), None)
        if host is None:
            raise AddressPending(f"The LoadBalancer Service {name} has no external address yet")
        return f"{host}:{port}"
    if proxy:
        return proxy_addr(proxy, namespace, name, port)
    if kind == k8s.NODE_PORT:
        if not hosts:
            raise ClipperException(f"No node address to reach the NodePort Service {name} at")
        return f"{hosts[0]}:{entry['nodePort']}"
    return f"{name}.{namespace}.svc.{cluster_domain}:{port}"


def plan_model_update(existing: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> str:
    """What `set_num_replicas` does to reach `wanted` (a model Deployment) from `existing` (the live one, or
    None): ``"create"``, ``"rollout"`` (its pod template changed: replace it, Kubernetes rolls the pods),
    ``"scale"`` (only the replica count changed: the scale subresource), or ``"none"``."""
    replicas = wanted["spec"]["replicas"]
    if existing is None:
        return "create" if replicas > 0 else "none"
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if annotations.get(k8s.SPEC_HASH_ANNOTATION) != wanted["metadata"]["annotations"][k8s.SPEC_HASH_ANNOTATION]:
        return "rollout"
    if (existing.get("spec") or {}).get("replicas") != replicas:
        return "scale"
    return "none"


def deployment_ready(dep: Mapping[str, Any]) -> bool:
    """The Deployment's controller has seen its latest spec, and exactly `spec.replicas` pods run, all updated
    and ready."""
    meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    return ((status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
            and (status.get("updatedReplicas") or 0) >= want and (status.get("readyReplicas") or 0) >= want
            and (status.get("replicas") or 0) == want)


def pod_problems(pods: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """``(pod, reason, message)`` for each container that waits for a reason other than starting, has
    terminated, or each pod that cannot be scheduled."""
    found = []
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                found.append((name, cond.get("reason") or "Unschedulable", cond.get("message") or ""))
        for c in status.get("containerStatuses") or []:
            state = c.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                found.append((name, waiting["reason"], waiting.get("message") or ""))
            elif terminated:
                found.append((name, terminated.get("reason") or "Terminated",
                              f"exit code {terminated.get('exitCode')}"))
    return found


def describe_problems(problems: Sequence[tuple[str, str, str]]) -> str:
    lines = [f"  {pod}: {reason}{': ' + message if message else ''}" for pod, reason, message in problems]
    if any(reason in _IMAGE_REASONS for _, reason, _ in problems):
        lines.append("  The nodes cannot pull the image: push it to a registry they pull from (container_registry=..., "
                     "`clipper k8s push-images --registry ...`), or load it into the cluster (kind: `kind load "
                     "docker-image IMAGE`; k3s: `docker save IMAGE | sudo k3s ctr images import -`)")
    return "\n".join(lines)


def _resources(value: Resources | Mapping[str, Any] | None, default: Resources) -> Resources:
    if value is None:
        return default
    if isinstance(value, Resources):
        return value
    try:
        return Resources(**dict(value))
    except (TypeError, ValueError) as e:
        raise ClipperException(f"Invalid resources {value!r}: {e}") from e


class KubernetesContainerManager(ContainerManager):
    """Runs Redis, both frontends and the model replicas as Kubernetes Deployments in `namespace`.

    Clipper's arguments (same order): `cluster_name` (a DNS-1123 label of at most 41 characters: it names the
    objects), `kubernetes_proxy_addr` (``kubectl proxy``'s ``host:port``: addresses go through it),
    `redis_ip`/`redis_port` (an external Redis; without one a Redis Deployment with a volume claim, its Service
    on `redis_port`), `useInternalIP` (reach NodePorts at the nodes' internal IPs when they have no external
    address: kind, k3s, minikube), `namespace`, `service_types` (Clipper's keys ``redis``, ``management``,
    ``query``, ``query-rpc``, ``metric``; ClusterIP, NodePort or LoadBalancer; default NodePort for the
    frontends, ClusterIP for Redis, which has no password), `create_namespace_if_not_exists`.

    Keyword-only: `container_registry` (where this project's images and built models are pushed; the manifests
    name ``<registry>/clipper/<image>:<version>``), `api_client` (a ``kubernetes.client.ApiClient``; default:
    the kubeconfig's `context`, or the in-cluster configuration), `insecure`, `admin_token`, `predict_token`
    (module docstring), `heartbeat_timeout` and `log_level` (the frontends' flags), `start_timeout` (seconds to
    wait for Deployments to become ready), `poll_interval`, `redis_image`, `redis_persistence` (False: Redis in
    memory, no volume), `redis_storage` and `storage_class` (the volume claim), `query_frontend_resources`,
    `mgmt_frontend_resources`, `redis_resources` (`clipper.k8s.objects.Resources` or a dict of its fields),
    `model_resources` (``{"name:version" or "name" or "*": Resources}``, the most specific wins; `gpus` asks
    for ``nvidia.com/gpu``), `model_metrics` (False for images without ``GET /metrics`` on
    ``$CLIPPER_METRICS_PORT``, such as Clipper's own: no liveness probe then), `image_pull_policy`,
    `query_frontend_args`/`management_frontend_args`, `cluster_domain`, `image_progress` (build output).

    Clipper's attributes: `cluster_name`, `cluster_identifier`, `k8s_namespace`, `kubernetes_proxy_addr`,
    `use_k8s_proxy`, `redis_ip`, `redis_port`, `useInternalIP`, `service_types`, `num_frontend_replicas`,
    `external_node_hosts`, `clipper_management_port`, `clipper_query_port`, `clipper_management_ip`,
    `clipper_query_ip` (LoadBalancer), once started or connected. No Prometheus is deployed: the frontends'
    and replicas' pods carry ``prometheus.io/*`` annotations for the cluster's own, and `get_metric_addr`
    raises.
    """

    supports_gpus = True

    def __init__(
        self,
        cluster_name: str = "default-cluster",
        kubernetes_proxy_addr: str | None = None,
        redis_ip: str | None = None,
        redis_port: int = DEFAULT_REDIS_PORT,
        useInternalIP: bool = False,  # noqa: N803 - Clipper's argument name
        namespace: str = "default",
        service_types: Mapping[str, str] | None = None,
        create_namespace_if_not_exists: bool = False,
        *,
        container_registry: str | None = None,
        api_client: Any = None,
        context: str | None = None,
        insecure: bool = False,
        admin_token: str | None = None,
        predict_token: str | None = None,
        heartbeat_timeout: float | None = 5.0,
        log_level: str | None = "INFO",
        start_timeout: float = 300.0,
        poll_interval: float = 1.0,
        redis_image: str | None = None,
        redis_persistence: bool = True,
        redis_storage: str = "1Gi",
        storage_class: str | None = None,
        query_frontend_resources: Resources | Mapping[str, Any] | None = None,
        mgmt_frontend_resources: Resources | Mapping[str, Any] | None = None,
        redis_resources: Resources | Mapping[str, Any] | None = None,
        model_resources: Mapping[str, Resources | Mapping[str, Any]] | None = None,
        model_metrics: bool = True,
        image_pull_policy: str = "IfNotPresent",
        query_frontend_args: Sequence[str] = (),
        management_frontend_args: Sequence[str] = (),
        cluster_domain: str = "cluster.local",
        image_progress: Callable[[str], Any] | None = print,
    ) -> None:
        defaults = ClusterSpec()
        try:
            self._base = ClusterSpec(
                cluster_name=cluster_name, namespace=namespace, container_registry=container_registry,
                redis_ip=redis_ip, redis_port=int(redis_port), service_types=service_types or {},
                heartbeat_timeout=heartbeat_timeout, log_level=log_level, insecure=bool(insecure),
                redis_image=redis_image or defaults.redis_image, redis_persistence=bool(redis_persistence),
                redis_storage=redis_storage, storage_class=storage_class,
                query_frontend_resources=_resources(query_frontend_resources, defaults.query_frontend_resources),
                mgmt_frontend_resources=_resources(mgmt_frontend_resources, defaults.mgmt_frontend_resources),
                redis_resources=_resources(redis_resources, defaults.redis_resources),
                image_pull_policy=image_pull_policy, query_frontend_args=tuple(map(str, query_frontend_args)),
                management_frontend_args=tuple(map(str, management_frontend_args)), cluster_domain=cluster_domain)
        except ValueError as e:
            raise ClipperException(str(e)) from e
        self.cluster_name = cluster_name
        self.k8s_namespace = namespace
        self.kubernetes_proxy_addr = kubernetes_proxy_addr
        self.use_k8s_proxy = kubernetes_proxy_addr is not None
        self.redis_ip = redis_ip
        self.redis_port = int(redis_port)
        self.external_redis = redis_ip is not None
        self.useInternalIP = bool(useInternalIP)
        self.create_namespace_if_not_exists = bool(create_namespace_if_not_exists)
        self.service_types = dict(self._base.service_types)
        self.container_registry = container_registry
        self.insecure = bool(insecure)
        self.admin_token = admin_token or os.environ.get(k8s.ADMIN_TOKEN_ENV) or None
        self.predict_token = predict_token or None
        self.start_timeout = float(start_timeout)
        self.poll_interval = float(poll_interval)
        self.model_resources: dict[str, Resources] = {
            str(k): _resources(v, Resources()) for k, v in (model_resources or {}).items()}
        self.model_metrics = bool(model_metrics)
        self.image_progress = image_progress
        self.num_frontend_replicas = 1
        self.external_node_hosts: list[str] = []
        self.clipper_management_port: int | None = None
        self.clipper_query_port: int | None = None
        self.clipper_management_ip: str | None = None
        self.clipper_query_ip: str | None = None
        self._admin_addr: str | None = None
        self._query_addr: str | None = None
        # Clipper made this "<namespace>-<cluster>" for namespaces other than default (its test was inverted)
        self.cluster_identifier = cluster_name if namespace == "default" else f"{namespace}-{cluster_name}"
        self.logger = ClusterAdapter(logger, {"cluster_name": self.cluster_identifier})
        self._api_client = api_client
        self._context = context
        self._apis: tuple[Any, Any, Callable[[Any], Any]] | None = None
        if self.service_types["query-rpc"] != k8s.CLUSTER_IP:
            self.logger.info(f"service_types['query-rpc']={self.service_types['query-rpc']} is not used: the replicas "
                             "reach the query frontends through a headless Service inside the cluster")

    # ------------------------------------------------------------------ the client

    def _make_apis(self) -> tuple[Any, Any, Callable[[Any], Any]]:
        """``(CoreV1Api, AppsV1Api, to_dict)``: `to_dict` turns what the client returns into plain dicts with
        the API's (camelCase) field names, as `clipper.k8s.objects` builds them."""
        try:
            from kubernetes import client, config
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"{e.name} is not installed: KubernetesContainerManager needs clipper-serving's "
                                      f"kubernetes extra ({INSTALL_HINT})", name=e.name) from e
        api_client = self._api_client
        if api_client is None:
            try:
                api_client = config.new_client_from_config(context=self._context)
            except (config.ConfigException, OSError) as kube_error:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    raise ClipperException(f"No Kubernetes configuration: {kube_error} (kubeconfig: $KUBECONFIG or "
                                           "~/.kube/config; nor does this run in a pod)") from kube_error
                api_client = client.ApiClient()
        return client.CoreV1Api(api_client), client.AppsV1Api(api_client), api_client.sanitize_for_serialization

    def _call(self, api: str, method: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """``<api>.<method>(namespace=..., **kwargs)`` as plain data; a 404 gives None with `missing_ok`; other
        API errors raise ClipperException."""
        if self._apis is None:
            self._apis = self._make_apis()
        core, apps, to_dict = self._apis
        target = core if api == "core" else apps
        if "namespace" not in kwargs and "namespaced" in method:
            kwargs["namespace"] = self.k8s_namespace
        try:
            result = getattr(target, method)(**kwargs)
        except Exception as e:
            status = getattr(e, "status", None)
            if status is None:
                if isinstance(e, OSError) or type(e).__module__.partition(".")[0] == "urllib3":
                    raise ClipperException(f"Cannot reach the Kubernetes API server ({method}): {e}") from e
                raise
            if status == 404 and missing_ok:
                return None
            raise KubernetesApiError(f"Kubernetes {method} failed: {status} {getattr(e, 'reason', '')}: "
                                     f"{_api_message(e)}", int(status)) from e
        return result if isinstance(result, str) else to_dict(result)

    def _check_namespace(self, create: bool) -> None:
        """The namespace exists (created when `create` and `create_namespace_if_not_exists`); a user who may not
        read Namespace objects is taken at their word."""
        try:
            found = self._call("core", "read_namespace", name=self.k8s_namespace, missing_ok=True)
        except KubernetesApiError as e:
            if e.status == 403:
                self.logger.info(f"Cannot read the namespace {self.k8s_namespace} (forbidden): assuming it exists")
                return
            raise
        if found is not None:
            return
        if not (create and self.create_namespace_if_not_exists):
            raise ClipperException(
                f"Error connecting to Kubernetes cluster. Namespace {self.k8s_namespace} does not exist. You can pass "
                "in KubernetesContainerManager(create_namespace_if_not_exists=True) to create this namespace")
        self._call("core", "create_namespace", body={"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": self.k8s_namespace}})
        self.logger.info(f"Created the namespace {self.k8s_namespace}")

    # ------------------------------------------------------------------ specs

    def _spec(self, query_frontend_image: str | None = None, mgmt_frontend_image: str | None = None,
              cache_size: int | None = None, num_frontend_replicas: int | None = None) -> ClusterSpec:
        changes: dict[str, Any] = {}
        if query_frontend_image:
            changes["query_frontend_image"] = query_frontend_image
        if mgmt_frontend_image:
            changes["mgmt_frontend_image"] = mgmt_frontend_image
        if cache_size is not None:
            changes["cache_size"] = cache_size
        if num_frontend_replicas is not None:
            changes["num_frontend_replicas"] = num_frontend_replicas
        try:
            return replace(self._base, **changes)
        except (ValueError, TypeError) as e:
            raise ClipperException(str(e)) from e

    def set_model_resources(self, name: str, version: str | None = None, **resources: Any) -> None:
        """Sets fields of the `Resources` of model `name` (every version) or ``name:version`` (``gpus``: a
        number; ``deploy_model(..., gpus=n)`` lands here); applied to Deployments created or rolled from now on."""
        if "gpus" in resources:
            gpus = gpu_request(resources["gpus"])
            if isinstance(gpus, list):
                raise ClipperException("On Kubernetes, ask for a number of GPUs (the scheduler picks the devices)")
            resources["gpus"] = gpus or 0
        key = name if version is None else f"{name}:{version}"
        try:
            self.model_resources[key] = replace(self.model_resources.get(key, Resources()), **resources)
        except (TypeError, ValueError) as e:
            raise ClipperException(f"Invalid resources for {key}: {e}") from e

    def resources_for(self, name: str, version: str) -> Resources:
        """`model_resources` of ``name:version``, else of ``name``, else of ``*``, else none."""
        for key in (f"{name}:{version}", name, "*"):
            if key in self.model_resources:
                return self.model_resources[key]
        return Resources()

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
        """Creates the cluster's objects, waits until Redis and the frontends are ready, connects.

        `frontend_exporter_image` and the HTTP thread-pool/timeout settings are accepted and ignored (the query
        frontend serves ``GET /metrics`` itself). A cluster of this name in the namespace must not exist. Objects
        created before a failure are deleted again; the error names the pods' problems and quotes their logs.
        """
        spec = self._spec(query_frontend_image, mgmt_frontend_image, cache_size, num_frontend_replicas)
        self._check_namespace(create=True)
        running = self._call("apps", "list_namespaced_deployment",
                             label_selector=k8s.selector({k8s.CLUSTER_LABEL: self.cluster_name}))["items"]
        if running:
            names = ", ".join(d["metadata"]["name"] for d in running)
            raise ClipperException(f"Cluster {self.cluster_name} cannot be started because it already exists in the "
                                   f"namespace {self.k8s_namespace} ({names}). Please use ClipperConnection.connect() "
                                   "to connect to it, or stop it with stop_all() first.")
        self._draw_tokens()
        objs = k8s.cluster_objects(spec, self.admin_token, self.predict_token)
        created: list[dict[str, Any]] = []
        try:
            for obj in objs:
                if self._create(obj):
                    created.append(obj)
            waits = [k8s.mgmt_name(self.cluster_name), k8s.query_name(self.cluster_name)]
            if spec.managed_redis:
                waits.insert(0, k8s.redis_name(self.cluster_name))
            for name in waits:
                self._wait_deployment(name, f"The Deployment {name}")
            self._connect_waiting()
        except BaseException:
            self._delete_objects(created)
            raise
        self.logger.info(f"Clipper is running: query {self.get_query_addr()}, management {self.get_admin_addr()}")
        self._restore_kept_replicas()

    def _draw_tokens(self) -> None:
        """Tokens: given, else those a kept Secret holds, else drawn (the predict token unless `insecure`)."""
        kept = self._read_tokens()
        self.admin_token = self.admin_token or kept.get(k8s.ADMIN_TOKEN_KEY) or secrets.token_urlsafe(32)
        if self.insecure:
            self.predict_token = None
        else:
            self.predict_token = self.predict_token or kept.get(k8s.PREDICT_TOKEN_KEY) or secrets.token_urlsafe(32)

    def _read_tokens(self) -> dict[str, str]:
        secret = self._call("core", "read_namespaced_secret", name=k8s.secret_name(self.cluster_name), missing_ok=True)
        data = (secret or {}).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items() if v}

    _KINDS = {"Secret": ("core", "secret"), "PersistentVolumeClaim": ("core", "persistent_volume_claim"),
              "Service": ("core", "service"), "ConfigMap": ("core", "config_map"),
              "Deployment": ("apps", "deployment")}

    def _create(self, obj: Mapping[str, Any]) -> bool:
        """Creates `obj`; True when created. A kept Secret is replaced (new tokens), a kept volume claim kept."""
        api, kind = self._KINDS[obj["kind"]]
        name = obj["metadata"]["name"]
        existing = None
        if obj["kind"] in ("Secret", "PersistentVolumeClaim"):
            existing = self._call(api, f"read_namespaced_{kind}", name=name, missing_ok=True)
        if existing is None:
            self._call(api, f"create_namespaced_{kind}", body=obj)
            return True
        if obj["kind"] == "Secret":
            self._call(api, f"replace_namespaced_{kind}", name=name, body=obj)
        else:
            self.logger.info(f"Redis comes back with the state kept in the volume claim {name} (stop_all() without "
                             "keep_state=True removes it)")
        return False

    def _delete_objects(self, objs: Sequence[Mapping[str, Any]]) -> None:
        for obj in reversed(objs):
            api, kind = self._KINDS[obj["kind"]]
            try:
                self._call(api, f"delete_namespaced_{kind}", name=obj["metadata"]["name"], missing_ok=True)
            except ClipperException as e:
                self.logger.warning(f"Could not delete {obj['kind']} {obj['metadata']['name']}: {e.msg}")

    def _wait_deployment(self, name: str, what: str) -> dict[str, Any]:
        """Until the Deployment is ready (`deployment_ready`); a fatal pod problem or `start_timeout` raises."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            dep = self._call("apps", "read_namespaced_deployment", name=name, missing_ok=True)
            if dep is None:
                raise ClipperException(f"{what} does not exist")
            if deployment_ready(dep):
                return dep
            pods = self._pods((dep.get("spec") or {}).get("selector", {}).get("matchLabels") or {})
            problems = pod_problems(pods)
            fatal = [p for p in problems if p[1] in FATAL_REASONS]
            if fatal or time.monotonic() > deadline:
                state = "cannot start" if fatal else f"is not ready within {self.start_timeout:g} s"
                raise ClipperException(f"{what} {state}:\n{describe_problems(problems) or '  (no pod problems seen)'}"
                                       f"{self._log_tails(pods)}")
            time.sleep(self.poll_interval)

    def _pods(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._call("core", "list_namespaced_pod", label_selector=k8s.selector(labels))["items"]

    def _log_tails(self, pods: Sequence[Mapping[str, Any]], lines: int = 20) -> str:
        """The last log lines of up to two pods' containers that have run (kubectl logs --tail)."""
        out = []
        for pod in list(pods)[:2]:
            name = pod["metadata"]["name"]
            for c in (pod.get("status") or {}).get("containerStatuses") or []:
                if not (c.get("restartCount") or (c.get("state") or {}).get("terminated")
                        or (c.get("state") or {}).get("running")):
                    continue
                try:
                    text = self._call("core", "read_namespaced_pod_log", name=name, container=c["name"],
                                      tail_lines=lines, previous=bool(c.get("restartCount")))
                except ClipperException:
                    continue
                if text:
                    out.append(f"\nLast lines of kubectl logs {name} -c {c['name']}:\n{str(text).rstrip()}")
        return "".join(out)

    def _connect_waiting(self) -> None:
        """`connect()`, waiting (up to `start_timeout`) for LoadBalancers to get their addresses."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self.connect()
                return
            except AddressPending:
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_interval)

    def connect(self) -> None:
        """Finds the running cluster: its Services' addresses, the number of query frontends, the tokens."""
        self._check_namespace(create=False)
        c = self.cluster_name
        mgmt = self._call("core", "read_namespaced_service", name=k8s.mgmt_name(c), missing_ok=True)
        query = self._call("core", "read_namespaced_service", name=k8s.query_name(c), missing_ok=True)
        if mgmt is None or query is None:
            raise ClipperException(f"No Clipper cluster named '{c}' in the namespace {self.k8s_namespace} (no Service "
                                   f"{k8s.mgmt_name(c) if mgmt is None else k8s.query_name(c)}). Start one with "
                                   "ClipperConnection.start_clipper().")
        types = {(s.get("spec") or {}).get("type") or k8s.CLUSTER_IP for s in (mgmt, query)}
        if not self.use_k8s_proxy and k8s.NODE_PORT in types:
            nodes = self._call("core", "list_node")["items"]
            self.external_node_hosts = node_hosts(nodes, self.useInternalIP)
            self.logger.info(f"Found {len(self.external_node_hosts)} nodes: {', '.join(self.external_node_hosts)}")
        domain = self._base.cluster_domain
        hosts, proxy = self.external_node_hosts, self.kubernetes_proxy_addr
        self._admin_addr = service_addr(mgmt, DEFAULT_MANAGEMENT_PORT, hosts=hosts, proxy=proxy, cluster_domain=domain)
        self._query_addr = service_addr(query, DEFAULT_QUERY_PORT, hosts=hosts, proxy=proxy, cluster_domain=domain)
        for svc, port, attr in ((mgmt, DEFAULT_MANAGEMENT_PORT, "management"), (query, DEFAULT_QUERY_PORT, "query")):
            spec = svc.get("spec") or {}
            self.service_types[attr] = spec.get("type") or k8s.CLUSTER_IP
            entry = next(p for p in spec.get("ports") or [] if p.get("port") == port)
            addr = self._admin_addr if attr == "management" else self._query_addr
            host, _, published = addr.rpartition(":")
            setattr(self, f"clipper_{attr}_port", entry.get("nodePort") or port)
            if self.service_types[attr] == k8s.LOAD_BALANCER:
                setattr(self, f"clipper_{attr}_ip", host)
                setattr(self, f"clipper_{attr}_port", int(published))
            if self.service_types[attr] == k8s.CLUSTER_IP and not self.use_k8s_proxy:
                self.logger.warning(f"The {attr} Service is ClusterIP: {addr} resolves inside the cluster only (use "
                                    "kubernetes_proxy_addr, `kubectl port-forward`, or a NodePort/LoadBalancer type)")
        dep = self._call("apps", "read_namespaced_deployment", name=k8s.query_name(c), missing_ok=True)
        self.num_frontend_replicas = int(((dep or {}).get("spec") or {}).get("replicas") or 0)
        redis = self._call("core", "read_namespaced_service", name=k8s.redis_name(c), missing_ok=True)
        if redis is not None:
            self.redis_ip, self.external_redis = k8s.redis_host(c), False
            self.redis_port = int(((redis.get("spec") or {}).get("ports") or [{}])[0].get("port") or self.redis_port)
        tokens = self._read_tokens()
        self.admin_token = tokens.get(k8s.ADMIN_TOKEN_KEY) or self.admin_token
        self.predict_token = tokens.get(k8s.PREDICT_TOKEN_KEY)
        if self.use_k8s_proxy and self.admin_token:
            self.logger.warning("Through kubectl proxy the management frontend never sees the admin token (the API "
                                "server removes the Authorization header): its API answers 401. Use NodePort or "
                                "LoadBalancer addresses, or `kubectl port-forward`")

    def stop_all(self, graceful: bool = True, keep_state: bool = False) -> None:
        """Deletes the cluster's Deployments (model versions included) and Services, then, unless `keep_state`,
        its Secret and Redis's volume claim. With `keep_state` the next `start_clipper` comes back with Redis's
        data, the tokens and the model replicas that ran (listed in the ConfigMap ``clipper-replicas-at-<c>``).
        `graceful` False deletes the pods without their grace period. An external Redis is left alone; so is
        the namespace. Waits (up to `start_timeout`) until the pods are gone."""
        c = self.cluster_name
        try:
            self._check_namespace(create=False)
        except KubernetesApiError:
            raise
        except ClipperException:
            self.logger.info(f"No namespace {self.k8s_namespace}: nothing to stop")
            return
        cluster = k8s.selector({k8s.CLUSTER_LABEL: c})
        deployments = self._call("apps", "list_namespaced_deployment", label_selector=cluster)["items"]
        if keep_state:
            self._keep_replicas(deployments)
        grace: dict[str, Any] = {} if graceful else {"grace_period_seconds": 0}
        self._call("apps", "delete_collection_namespaced_deployment", label_selector=cluster,
                   propagation_policy="Background", **grace)
        for svc in self._call("core", "list_namespaced_service", label_selector=cluster)["items"]:
            self._call("core", "delete_namespaced_service", name=svc["metadata"]["name"], missing_ok=True)
        if not keep_state:
            self._call("core", "delete_namespaced_secret", name=k8s.secret_name(c), missing_ok=True)
            self._call("core", "delete_namespaced_persistent_volume_claim", name=k8s.redis_pvc_name(c),
                       missing_ok=True)
            self._call("core", "delete_namespaced_config_map", name=k8s.kept_replicas_name(c), missing_ok=True)
        deadline = time.monotonic() + self.start_timeout
        while pods := self._call("core", "list_namespaced_pod", label_selector=cluster)["items"]:
            if time.monotonic() > deadline:
                self.logger.warning(f"{len(pods)} pod(s) of {c} are still terminating")
                break
            time.sleep(self.poll_interval)
        self._admin_addr = self._query_addr = None
        kept = "; its state is kept" if keep_state else ""
        self.logger.info(f"Deleted {len(deployments)} Deployment(s) of {c}{kept}")

    def _keep_replicas(self, deployments: Sequence[Mapping[str, Any]]) -> None:
        """Lists the model replicas in a ConfigMap for the next `start_clipper`."""
        specs = []
        for dep in deployments:
            meta = dep.get("metadata") or {}
            if (meta.get("labels") or {}).get(k8s.NAME_LABEL) != k8s.MODEL:
                continue
            annotations = meta.get("annotations") or {}
            container = dep["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            specs.append({"name": annotations.get(k8s.MODEL_NAME_ANNOTATION), "image": container["image"],
                          "version": annotations.get(k8s.MODEL_VERSION_ANNOTATION),
                          "input_type": env.get("CLIPPER_INPUT_TYPE", "doubles"),
                          "count": int((dep.get("spec") or {}).get("replicas") or 0)})
        body = k8s.kept_replicas_configmap(self._base, [s for s in specs if s["name"] and s["version"]])
        self._call("core", "delete_namespaced_config_map", name=body["metadata"]["name"], missing_ok=True)
        self._call("core", "create_namespaced_config_map", body=body)

    def _restore_kept_replicas(self) -> None:
        name = k8s.kept_replicas_name(self.cluster_name)
        kept = self._call("core", "read_namespaced_config_map", name=name, missing_ok=True)
        if kept is None:
            return
        try:
            specs = json.loads(((kept.get("data") or {}).get(k8s.KEPT_REPLICAS_KEY)) or "[]")
        except ValueError as e:
            self.logger.warning(f"Cannot read the ConfigMap {name}: {e}; no model replica is started again")
            specs = []
        self._call("core", "delete_namespaced_config_map", name=name, missing_ok=True)
        self._restore_replicas(specs)

    # ------------------------------------------------------------------ addresses

    def _addr(self, addr: str | None) -> str:
        if addr is None:
            raise ClipperException(f"The Kubernetes Clipper cluster '{self.cluster_name}' is not started nor connected")
        return addr

    def get_admin_addr(self) -> str:
        return self._addr(self._admin_addr)

    def get_query_addr(self) -> str:
        return self._addr(self._query_addr)

    def get_metric_addr(self) -> str:
        """Raises: no Prometheus is deployed on Kubernetes (the pods carry ``prometheus.io/*`` annotations for the
        cluster's own Prometheus; each query frontend serves ``GET /metrics``)."""
        raise ClipperException(
            f"The Kubernetes Clipper cluster '{self.cluster_name}' deploys no Prometheus: the query frontend and "
            f"model pods carry prometheus.io/scrape annotations for the cluster's own, and the query frontends serve "
            f"their metrics at http://{self._query_addr or '<query addr>'}/metrics")

    # ------------------------------------------------------------------ models

    def build_model(self, name: str, version: str, model_data_path: str, base_image: str,
                    container_registry: str | None = None, pkgs_to_install: Sequence[str] | None = None) -> str:
        """Builds the image ``[<registry>/]<cluster>-<name>:<version>`` with the local Docker engine
        (`DockerContainerManager.build_model`: same Dockerfile, same packages) and pushes it to
        `container_registry` (default: the manager's). Without a registry the image stays in the local engine and
        the cluster's nodes cannot pull it until it is loaded into the cluster (kind: ``kind load docker-image``)."""
        from .docker import DockerContainerManager

        registry = container_registry or self.container_registry
        builder = DockerContainerManager(cluster_name=self.cluster_name, image_progress=self.image_progress)
        tag = builder.build_model(name, str(version), model_data_path, base_image, registry, pkgs_to_install)
        if not registry:
            self.logger.warning(f"{tag} is in the local Docker engine only: the cluster's nodes cannot pull it. Pass "
                                f"container_registry=..., or load it (kind: kind load docker-image {tag}; k3s: docker "
                                f"save {tag} | sudo k3s ctr images import -; minikube: minikube image load {tag})")
            return tag
        try:
            push(builder.docker_client, tag, self.image_progress)
        except PushError as e:
            raise ClipperException(str(e)) from e
        self.logger.info(f"Pushed {tag}")
        return tag

    def deploy_model(self, name: str, version: str, input_type: str, image: str, num_replicas: int = 1) -> None:
        """Runs `num_replicas` replicas of ``name:version`` from `image` (sets the replica count)."""
        self.set_num_replicas(name, version, input_type, image, num_replicas)

    def model_deployment(self, name: str, version: str, input_type: str, image: str,
                         num_replicas: int) -> dict[str, Any]:
        """The Deployment `set_num_replicas` makes for ``name:version`` (what ``kubectl apply`` would take)."""
        try:
            model = ModelSpec(name, str(version), input_type, image, num_replicas,
                              resources=self.resources_for(name, str(version)), metrics=self.model_metrics)
        except ValueError as e:
            raise ClipperException(str(e)) from e
        return k8s.model_deployment(self._base, model)

    def get_num_replicas(self, name: str, version: str) -> int:
        """The replicas the version's Deployment asks for (its scale subresource; 0 without one)."""
        scale = self._call("apps", "read_namespaced_deployment_scale", missing_ok=True,
                           name=k8s.model_deployment_name(self.cluster_name, name, str(version)))
        return int(((scale or {}).get("spec") or {}).get("replicas") or 0)

    def set_num_replicas(self, name: str, version: str, input_type: str, image: str, num_replicas: int) -> None:
        """Creates, scales or rolls out the version's Deployment (`plan_model_update`), then waits until its pods
        are ready (registered with a query frontend) or fails with their problems and logs."""
        version = str(version)
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 0:
            raise ClipperException("Invalid number of replicas: must be an integer >= 0")
        try:
            parse_input_type(input_type)
        except ValueError as e:
            raise ClipperException(str(e)) from e
        wanted = self.model_deployment(name, version, input_type, image, num_replicas)
        dep_name = wanted["metadata"]["name"]
        existing = self._call("apps", "read_namespaced_deployment", name=dep_name, missing_ok=True)
        plan = plan_model_update(existing, wanted)
        current = ((existing or {}).get("spec") or {}).get("replicas", 0)
        if plan == "none":
            return
        self.logger.info(f"{name}:{version}: {plan} ({current} -> {num_replicas} replicas, image "
                         f"{wanted['spec']['template']['spec']['containers'][0]['image']})")
        if plan == "create":
            if self._call("apps", "read_namespaced_deployment", name=k8s.query_name(self.cluster_name),
                          missing_ok=True) is None:
                raise ClipperException(f"No Clipper query frontend to attach model container to (no Deployment "
                                       f"{k8s.query_name(self.cluster_name)} in the namespace {self.k8s_namespace})")
            self._call("apps", "create_namespaced_deployment", body=wanted)
        elif plan == "scale":
            self._call("apps", "patch_namespaced_deployment_scale", name=dep_name,
                       body={"spec": {"replicas": num_replicas}})
        else:
            assert existing is not None
            wanted["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
            self._call("apps", "replace_namespaced_deployment", name=dep_name, body=wanted)
        try:
            self._wait_deployment(dep_name, f"Model {name}:{version}")
        except ClipperException:
            if plan == "create":
                self._call("apps", "delete_namespaced_deployment", name=dep_name, missing_ok=True)
            raise

    def _delete_models(self, labels: Mapping[str, str]) -> None:
        self._call("apps", "delete_collection_namespaced_deployment", label_selector=k8s.selector(labels),
                   propagation_policy="Background")

    def stop_models(self, models: Mapping[str, Sequence[str]]) -> None:
        """Deletes the Deployments of the given versions (`{name: [version, ...]}`); their pods go with them."""
        for name, versions in models.items():
            for version in versions:
                self._delete_models(k8s.model_labels(self.cluster_name, name, str(version)))

    def stop_all_model_containers(self) -> None:
        """Deletes every model Deployment of the cluster."""
        self._delete_models(k8s.role_labels(self.cluster_name, k8s.MODEL))

    # ------------------------------------------------------------------ logs

    def get_logs(self, logging_dir: str) -> list[str]:
        """Writes each container's log of every pod of the cluster to ``<logging_dir>/<pod>_<i>.log`` (Clipper's
        names); returns the paths. Containers that have not started are skipped."""
        out = Path(os.path.abspath(os.path.expanduser(logging_dir)))
        if not out.exists():
            out.mkdir(parents=True)
            self.logger.info(f"Created logging directory: {out}")
        paths = []
        for pod in self._pods({k8s.CLUSTER_LABEL: self.cluster_name}):
            name = pod["metadata"]["name"]
            for i, c in enumerate((pod.get("status") or {}).get("containerStatuses") or []):
                try:
                    text = self._call("core", "read_namespaced_pod_log", name=name, container=c["name"])
                except ClipperException as e:
                    self.logger.info(f"No log of {name}/{c['name']}: {e.msg}")
                    continue
                path = out / f"{name}_{i}.log"
                path.write_text(str(text or ""))
                paths.append(str(path))
        return paths


def _api_message(e: Exception) -> str:
    """The ``message`` of a Kubernetes API error's JSON body, else its body."""
    body = getattr(e, "body", None)
    try:
        return str(json.loads(body)["message"]) if isinstance(body, (str, bytes)) else str(body or e)
    except (TypeError, ValueError, KeyError):
        return str(body or e)
