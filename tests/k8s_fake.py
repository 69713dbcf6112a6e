"""A small fake of the ``kubernetes`` client's ``CoreV1Api`` and ``AppsV1Api``, and the schema check.

No Kubernetes API server can run on the machines this project is tested on (docs/kubernetes.md), so the manager's
tests drive `KubernetesContainerManager` against `FakeKube`: the methods the manager calls, on plain dicts (what
the manager's ``to_dict`` turns the client's models into), each call recorded in `calls`. It keeps objects by
kind, namespace and name, answers 404/409 as the API server does (with the client's ``ApiException``), fills in
what the server would (node ports, a load balancer's address, generations, resource versions, a Deployment's
status and its pods, as a healthy controller would make them; `pod_failures` makes a Deployment's pods wait with
a reason instead), and validates every object created or replaced against the Kubernetes OpenAPI schemas of
`SCHEMA_VERSIONS` (kubernetes-validate, strict: unknown fields fail). It is not a model of the API server's
semantics beyond that; `serve_http` puts the same fake behind HTTP so that the real client can be driven too.
"""

from __future__ import annotations

import base64
import copy
import functools
import itertools
import json
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
from kubernetes.client.exceptions import ApiException

#: Kubernetes versions every object is validated against: the oldest and newest kubernetes-validate carries and
#: two between (it has 1.25 to 1.37).
SCHEMA_VERSIONS = ("1.25", "1.29", "1.33", "1.37")

# kubernetes-validate reads its schema files (the definitions are megabytes of JSON) on every call: read each once.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    kubernetes_validate.utils.schema_contents)


def validate(obj: Mapping[str, Any], versions: tuple[str, ...] = SCHEMA_VERSIONS) -> None:
    """Validates `obj` against the published schemas of each version, strictly (no unknown fields)."""
    for version in versions:
        kubernetes_validate.validate(dict(obj), version, strict=True)


def api_error(status: int, reason: str, message: str) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                         "reason": reason, "code": status})
    return e


def matches(labels: Mapping[str, str] | None, selector: str | None) -> bool:
    """``k=v,k2`` label selectors (equality and existence: what the manager uses)."""
    labels = labels or {}
    for term in filter(None, (selector or "").split(",")):
        key, sep, value = term.strip().partition("=")
        if (sep and labels.get(key) != value) or (not sep and key not in labels):
            return False
    return True


def node(name: str, **addresses: str) -> dict[str, Any]:
    """A Node with addresses by type, e.g. ``node("n1", InternalIP="10.0.0.1")``."""
    return {"metadata": {"name": name},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addresses.items()]}}


_KINDS = ("deployment", "service", "secret", "persistent_volume_claim", "config_map", "pod")
_METHOD = re.compile(r"(create|read|replace|patch|delete_collection|delete|list)_namespaced_(\w+?)(_scale)?")


class FakeKube:
    """The objects of one fake cluster and the calls made to it (see the module docstring)."""

    def __init__(self, nodes: list[dict[str, Any]] | None = None, lb_pending_reads: int = 0) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.namespaces = {"default", "kube-system"}
        self.nodes = nodes if nodes is not None else [node("n1", InternalIP="10.0.0.1", ExternalIP="203.0.113.7")]
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: Deployment name -> the waiting state of its pods' containers, e.g. {"reason": "ImagePullBackOff"}.
        self.pod_failures: dict[str, dict[str, str]] = {}
        self.lb_pending_reads = lb_pending_reads
        self.logs: dict[tuple[str, str], str] = {}
        self._owners: dict[tuple[str, str], str] = {}  # (namespace, pod) -> its Deployment
        self.validated = 0
        self._ports = itertools.count(30000)
        self._versions = itertools.count(1)
        self.core = _Api(self)
        self.apps = _Api(self)

    # what tests look at

    def names(self, kind: str, namespace: str = "default") -> list[str]:
        return sorted(n for k, ns, n in self.objects if k == kind and ns == namespace)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.objects[(kind, namespace, name)]

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    # the API

    def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append((method, copy.deepcopy(kwargs)))
        if method == "read_namespace":
            if kwargs["name"] not in self.namespaces:
                raise api_error(404, "NotFound", f'namespaces "{kwargs["name"]}" not found')
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": kwargs["name"]}}
        if method == "create_namespace":
            validate(kwargs["body"])
            self.namespaces.add(kwargs["body"]["metadata"]["name"])
            return copy.deepcopy(kwargs["body"])
        if method == "list_node":
            return {"items": copy.deepcopy(self.nodes)}
        if method == "read_namespaced_pod_log":
            key = (kwargs["name"], kwargs["container"])
            if ("pod", kwargs["namespace"], kwargs["name"]) not in self.objects:
                raise api_error(404, "NotFound", f'pods "{kwargs["name"]}" not found')
            return self.logs.get(key, f"log of {key[0]}/{key[1]}\n")
        m = _METHOD.fullmatch(method)
        if m is None or m.group(2) not in _KINDS:
            raise AttributeError(f"FakeKube has no {method}")
        verb, kind, scale = m.group(1), m.group(2), bool(m.group(3))
        ns = kwargs["namespace"]
        if ns not in self.namespaces:
            raise api_error(404, "NotFound", f'namespaces "{ns}" not found')
        if verb == "list":
            return {"items": [copy.deepcopy(o) for (k, n, _), o in sorted(self.objects.items())
                              if k == kind and n == ns and matches(o["metadata"].get("labels"),
                                                                   kwargs.get("label_selector"))]}
        if verb == "delete_collection":
            for (k, n, name), o in list(self.objects.items()):
                if k == kind and n == ns and matches(o["metadata"].get("labels"), kwargs.get("label_selector")):
                    self._delete(kind, ns, name)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if verb == "create":
            return self._create(kind, ns, kwargs["body"])
        key = (kind, ns, kwargs["name"])
        if key not in self.objects:
            raise api_error(404, "NotFound", f'{kind}s "{kwargs["name"]}" not found')
        obj = self.objects[key]
        if verb == "read" and scale:
            return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": kwargs["name"]},
                    "spec": {"replicas": obj["spec"]["replicas"]}, "status": {"replicas": obj["status"]["replicas"]}}
        if verb == "read":
            if kind == "service" and obj["spec"]["type"] == "LoadBalancer":
                self._load_balancer(obj)
            return copy.deepcopy(obj)
        if verb == "patch" and scale:
            obj["spec"]["replicas"] = kwargs["body"]["spec"]["replicas"]
            self._changed(obj)
            return {"spec": {"replicas": obj["spec"]["replicas"]}}
        if verb == "replace":
            body = copy.deepcopy(kwargs["body"])
            version = body["metadata"].get("resourceVersion")
            if version is not None and version != obj["metadata"]["resourceVersion"]:
                raise api_error(409, "Conflict", "the object has been modified")
            validate(body)
            body["metadata"].update(generation=obj["metadata"].get("generation", 1),
                                    uid=obj["metadata"]["uid"])
            self.objects[key] = body
            self._stored(kind, body)
            if kind == "deployment":
                self._changed(body)
            return copy.deepcopy(body)
        if verb == "delete":  # the API server answers with the object (with a deletionTimestamp)
            self._delete(kind, ns, kwargs["name"])
            return copy.deepcopy(obj)
        raise AttributeError(f"FakeKube does not do {method}")

    def _create(self, kind: str, ns: str, body: Mapping[str, Any]) -> dict[str, Any]:
        validate(body)
        self.validated += 1
        obj = copy.deepcopy(dict(body))
        name = obj["metadata"]["name"]
        if obj["metadata"].get("namespace", ns) != ns:
            raise api_error(400, "BadRequest", "the namespace of the object does not match the request's")
        if (kind, ns, name) in self.objects:
            raise api_error(409, "AlreadyExists", f'{kind}s "{name}" already exists')
        obj["metadata"].update(namespace=ns, uid=f"uid-{name}", generation=1)
        self.objects[(kind, ns, name)] = obj
        self._stored(kind, obj)
        if kind == "deployment":
            self._changed(obj)
        return copy.deepcopy(obj)

    def _stored(self, kind: str, obj: dict[str, Any]) -> None:
        """What the API server adds: resource versions, encoded Secret data, Service addresses."""
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        if kind == "secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        if kind == "service":
            spec = obj["spec"]
            spec.setdefault("clusterIP", f"10.96.0.{len(self.objects)}")
            if spec["type"] in ("NodePort", "LoadBalancer"):
                for p in spec["ports"]:
                    p.setdefault("nodePort", next(self._ports))
            obj["status"] = {"loadBalancer": {}}

    def _load_balancer(self, svc: dict[str, Any]) -> None:
        if self.lb_pending_reads > 0:
            self.lb_pending_reads -= 1
        else:
            svc["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.20"}]}}

    def _changed(self, dep: dict[str, Any]) -> None:
        """A Deployment's controller and kubelets at work: its pods made again, its status brought up to date."""
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        dep["metadata"]["generation"] = dep["metadata"].get("generation", 0) + (1 if "status" in dep else 0)
        self._delete_pods(ns, name)
        replicas = dep["spec"]["replicas"]
        failure = self.pod_failures.get(name)
        template = dep["spec"]["template"]
        for i in range(replicas):
            pod_name = f"{name}-{i}"
            statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "restartCount": 0,
                         "ready": failure is None,
                         "state": {"waiting": dict(failure)} if failure else {"running": {}}}
                        for c in template["spec"]["containers"]]
            self.objects[("pod", ns, pod_name)] = {
                "metadata": {"name": pod_name, "namespace": ns, "labels": dict(template["metadata"]["labels"])},
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Pending" if failure else "Running", "containerStatuses": statuses}}
            self._owners[(ns, pod_name)] = name
        ready = 0 if failure else replicas
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": replicas,
                         "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}

    def _delete(self, kind: str, ns: str, name: str) -> None:
        del self.objects[(kind, ns, name)]
        if kind == "deployment":
            self._delete_pods(ns, name)

    def _delete_pods(self, ns: str, deployment: str) -> None:
        for (n, pod), owner in list(self._owners.items()):
            if n == ns and owner == deployment:
                self.objects.pop(("pod", n, pod), None)
                del self._owners[(n, pod)]


class _Api:
    """``CoreV1Api``/``AppsV1Api`` stand-in: any method is a call on the `FakeKube`."""

    def __init__(self, kube: FakeKube) -> None:
        self._kube = kube

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda **kwargs: self._kube.call(method, kwargs)


# ---------------------------------------------------------------------------------------------- over HTTP

_PLURALS = {"deployments": "deployment", "services": "service", "secrets": "secret",
            "persistentvolumeclaims": "persistent_volume_claim", "configmaps": "config_map", "pods": "pod"}
_PATH = re.compile(r"/(?:api/v1|apis/apps/v1)(?:/namespaces(?:/(?P<ns>[^/]+)(?:/(?P<plural>[a-z]+)"
                   r"(?:/(?P<name>[^/]+)(?:/(?P<sub>scale|log))?)?)?)?|/(?P<nodes>nodes))")
_KWARGS = {"labelSelector": "label_selector", "container": "container", "tailLines": "tail_lines",
           "previous": "previous", "propagationPolicy": "propagation_policy",
           "gracePeriodSeconds": "grace_period_seconds"}


def _route(method: str, path: str, query: dict[str, str], body: Any) -> tuple[str, dict[str, Any]]:
    """The client method an HTTP request of the real client stands for."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise KeyError(path)
    kwargs = {_KWARGS[k]: v for k, v in query.items() if k in _KWARGS}
    if m["nodes"]:
        return "list_node", kwargs
    if m["ns"] is None:
        return "create_namespace", {"body": body}
    if m["plural"] is None:
        return "read_namespace", {"name": m["ns"]}
    kind = _PLURALS[m["plural"]]
    kwargs["namespace"] = m["ns"]
    if body is not None:
        kwargs["body"] = body
    if m["name"] is None:
        verb = {"GET": "list", "POST": "create", "DELETE": "delete_collection"}[method]
        return f"{verb}_namespaced_{kind}", kwargs
    kwargs["name"] = m["name"]
    if m["sub"] == "log":
        return "read_namespaced_pod_log", kwargs
    verb = {"GET": "read", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"}[method]
    return f"{verb}_namespaced_{kind}{'_scale' if m['sub'] == 'scale' else ''}", kwargs


@contextmanager
def serve_http(kube: FakeKube) -> Iterator[str]:
    """Serves `kube` over HTTP on 127.0.0.1 as the API server's REST paths; yields its URL. Requests seen are also
    in ``kube.http`` as ``(method, path)``."""
    kube.http = []  # type: ignore[attr-defined]

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            kube.http.append((self.command, url.path))  # type: ignore[attr-defined]
            try:
                method, kwargs = _route(self.command, url.path, query, body)
                if "tail_lines" in kwargs:
                    kwargs["tail_lines"] = int(kwargs["tail_lines"])
                result = kube.call(method, kwargs)
                status = 201 if method.startswith("create") else 200
            except ApiException as e:
                result, status = json.loads(e.body), e.status
            data = result.encode() if isinstance(result, str) else json.dumps(result).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(result, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
