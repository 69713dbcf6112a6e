"""The Kubernetes objects (`clipper.k8s.objects`) and the ``clipper k8s`` command: every object the manager would
create and every manifest the command prints is validated against the published Kubernetes OpenAPI schemas of
several versions (kubernetes-validate, strict), and checked for what the schemas cannot say (DNS names, label
syntax, selectors that select the pods, Service ports that exist on those pods, referenced Secret keys). No API
server can run here: docs/kubernetes.md."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

import kubernetes_validate  # noqa: E402
from k8s_fake import SCHEMA_VERSIONS, validate  # noqa: E402

from clipper import cli  # noqa: E402
from clipper.images import VERSION  # noqa: E402
from clipper.k8s import objects as k8s  # noqa: E402
from clipper.k8s import registry  # noqa: E402
from clipper.managers import base  # noqa: E402
from clipper.state.redis_server import persistence_args  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
_IANA_PORT = re.compile(r"(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def semantic_check(objs: Sequence[Mapping[str, Any]]) -> None:
    """What the schemas leave to the API server's validation and to the controllers."""
    secrets = {o["metadata"]["name"]: set(o.get("stringData") or o.get("data") or {}) for o in objs
               if o["kind"] == "Secret"}
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in objs if o["kind"] == "Deployment"}
    for o in objs:
        meta = o["metadata"]
        name_limit = 63 if o["kind"] in ("Service", "Deployment", "Namespace") else 253
        assert k8s.is_dns_label(meta["name"], name_limit), meta["name"]
        if o["kind"] == "Service":
            assert meta["name"][0].isalpha(), f"Service names are DNS-1035 labels: {meta['name']}"
        for key, value in (meta.get("labels") or {}).items():
            assert k8s.is_label_value(value), (key, value)
            assert len(key.rpartition("/")[2]) <= 63, key
        if o["kind"] == "Deployment":
            template = o["spec"]["template"]
            assert o["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
            for c in template["spec"]["containers"]:
                assert k8s.is_dns_label(c["name"])
                names = {p["name"] for p in c.get("ports") or []}
                for p in c.get("ports") or []:
                    assert len(p["name"]) <= 15 and _IANA_PORT.fullmatch(p["name"]), p["name"]
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = ((c.get(probe) or {}).get("httpGet") or (c.get(probe) or {}).get("tcpSocket") or {})
                    if isinstance(port.get("port"), str):
                        assert port["port"] in names, (c["name"], probe, port)
                defined: set[str] = set()
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and secrets:
                        assert ref["key"] in secrets.get(ref["name"], set()), ref
                    defined.add(e["name"])
                for arg in c.get("args") or []:
                    for var in _ENV_REF.findall(arg):
                        assert var in defined, (c["name"], arg)
                for mount in c.get("volumeMounts") or []:
                    assert mount["name"] in {v["name"] for v in template["spec"].get("volumes") or []}
            for v in template["spec"].get("volumes") or []:
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    assert any(x["kind"] == "PersistentVolumeClaim" and x["metadata"]["name"] == claim for x in objs)
        if o["kind"] == "Service":
            selected = [t for t in pods.values()
                        if o["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
            assert selected, f"{meta['name']} selects no pods"
            for p in o["spec"]["ports"]:
                for t in selected:
                    ports = {cp["name"] for c in t["spec"]["containers"] for cp in c.get("ports") or []}
                    assert p["targetPort"] in ports, (meta["name"], p)


def check(objs: Sequence[Mapping[str, Any]]) -> None:
    for o in objs:
        validate(o)
    semantic_check(objs)


# ---------------------------------------------------------------------------------------------- the schemas


def test_the_schemas_carry_the_versions_checked() -> None:
    carried = kubernetes_validate.utils.all_versions()
    for version in SCHEMA_VERSIONS:
        assert any(v.startswith(version + ".") for v in carried), (version, carried)


def test_the_schema_check_is_not_vacuous() -> None:
    """A typo in a field name, a wrong type and a missing required field all fail."""
    dep = k8s.query_deployment(k8s.ClusterSpec())
    validate(dep)
    typo = {**dep, "spec": {**dep["spec"], "replica": 3}}
    wrong = {**dep, "spec": {**dep["spec"], "replicas": "three"}}
    svc = k8s.query_service(k8s.ClusterSpec())
    no_port = {**svc, "spec": {**svc["spec"], "ports": [{"name": "http"}]}}
    for bad in (typo, wrong, no_port):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(bad)


SERVICE_TYPES = [dict(zip(("query", "management", "redis"), combo, strict=True))
                 for combo in itertools.product(k8s.SERVICE_TYPES, repeat=3)]


@pytest.mark.parametrize("frontends", [1, 3])
@pytest.mark.parametrize("types", SERVICE_TYPES, ids=lambda t: "-".join(v[0] for v in t.values()))
def test_every_cluster_object_validates(frontends: int, types: dict[str, str]) -> None:
    spec = k8s.ClusterSpec(num_frontend_replicas=frontends, service_types=types)
    objs = k8s.cluster_objects(spec, "admin", "predict")
    check(objs)
    assert [o["kind"] for o in objs] == ["Secret", "PersistentVolumeClaim", "Deployment", "Service", "Deployment",
                                         "Service", "Deployment", "Service", "Service"]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    assert by_name[("Deployment", "query-frontend-at-default-cluster")]["spec"]["replicas"] == frontends
    assert [o["spec"]["type"] for o in objs if o["kind"] == "Service"] == [
        types["redis"], types["management"], types["query"], "ClusterIP"]


@pytest.mark.parametrize("variant", ["external-redis", "insecure", "in-memory-redis", "namespace-and-registry",
                                     "no-secret"])
def test_cluster_variants_validate(variant: str) -> None:
    spec = {
        "external-redis": k8s.ClusterSpec(redis_ip="redis.example.internal", redis_port=6380),
        "insecure": k8s.ClusterSpec(insecure=True, num_frontend_replicas=2),
        "in-memory-redis": k8s.ClusterSpec(redis_persistence=False, storage_class="fast"),
        "namespace-and-registry": k8s.ClusterSpec(cluster_name="c2", namespace="serving",
                                                  container_registry="registry.example.com/team",
                                                  storage_class="fast", image_pull_policy="Always"),
        "no-secret": k8s.ClusterSpec(),
    }[variant]
    objs = k8s.cluster_objects(spec, None if variant == "no-secret" else "a", "p")
    check(objs)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    args = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["args"]
            for o in objs if o["kind"] == "Deployment"}
    if variant == "external-redis":
        assert not [k for k in kinds if "redis" in k[1]]
        assert "--redis_ip=redis.example.internal" in args["query-frontend-at-default-cluster"]
        assert "--redis_port=6380" in args["mgmt-frontend-at-default-cluster"]
    elif variant == "insecure":
        assert "--insecure" in args["query-frontend-at-default-cluster"]
        assert "predict-token" not in objs[0]["stringData"]
        query = next(o for o in objs if o["metadata"]["name"] == "query-frontend-at-default-cluster")
        assert not [e for e in query["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e
                    and "secretKeyRef" in e["valueFrom"]]
    elif variant == "in-memory-redis":
        assert ("PersistentVolumeClaim", "redis-data-at-default-cluster") not in kinds
        assert args["redis-at-default-cluster"] == ["redis-server", "--port", "6379", *persistence_args(None)]
    elif variant == "namespace-and-registry":
        assert {o["metadata"]["namespace"] for o in objs} == {"serving"}
        images = {c["image"] for o in objs if o["kind"] == "Deployment"
                  for c in o["spec"]["template"]["spec"]["containers"]}
        assert images == {f"registry.example.com/team/clipper/{n}:{VERSION}"
                          for n in ("redis", "management_frontend", "query_frontend")}
    else:
        assert "Secret" not in [k for k, _ in kinds]


@pytest.mark.parametrize("resources,metrics", [
    (k8s.Resources(), True),
    (k8s.Resources(), False),
    (k8s.Resources(cpu="500m", memory="512Mi", cpu_limit="2", memory_limit="1Gi"), True),
    (k8s.Resources(cpu="1", gpus=2), True),
    (k8s.Resources(memory_limit="8Gi", gpus=1, gpu_resource="amd.com/gpu"), False),
], ids=["plain", "no-metrics", "limits", "gpus", "amd-gpu"])
def test_model_deployments_validate(resources: k8s.Resources, metrics: bool) -> None:
    spec = k8s.ClusterSpec(num_frontend_replicas=3)
    dep = k8s.model_deployment(spec, k8s.ModelSpec("sum-model", "1", "d", "registry.example.com/m:1", 2, resources,
                                                   metrics))
    check([*k8s.cluster_objects(spec, "a", "p"), dep])
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLIPPER_IP"] == "query-frontend-rpc-at-default-cluster.default.svc.cluster.local"
    assert env["CLIPPER_PORT"] == "7000" and env["CLIPPER_INPUT_TYPE"] == "doubles"
    assert (env["CLIPPER_MODEL_NAME"], env["CLIPPER_MODEL_VERSION"]) == ("sum-model", "1")
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", env["CLIPPER_READY_FILE"]]
    assert ("livenessProbe" in container) is metrics
    assert ("CLIPPER_METRICS_PORT" in env) is metrics
    if resources.gpus:
        assert container["resources"]["limits"][resources.gpu_resource] == str(resources.gpus)
        assert container["resources"]["requests"][resources.gpu_resource] == str(resources.gpus)
        assert pod["tolerations"][0]["key"] == resources.gpu_resource
    else:
        assert "tolerations" not in pod
    if resources.memory_limit == "1Gi":
        assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                          "limits": {"cpu": "2", "memory": "1Gi"}}


def test_kept_replicas_configmap_validates() -> None:
    spec = k8s.ClusterSpec()
    validate(k8s.kept_replicas_configmap(spec, [{"name": "m", "version": "1", "input_type": "doubles",
                                                 "image": "i", "count": 2}]))


# ---------------------------------------------------------------------------------------------- names, labels


def test_labels_are_clippers() -> None:
    assert k8s.NAME_LABEL == base.CLIPPER_NAME_LABEL
    assert k8s.MODEL_LABEL == base.CLIPPER_MODEL_CONTAINER_LABEL
    assert k8s.CLUSTER_LABEL == "ai.clipper.container.label"  # clipper_admin's CLIPPER_DOCKER_LABEL
    assert k8s.model_label_value("sum-model", "1") == base.create_model_container_label("sum-model", "1")
    assert k8s.model_labels("c", "m", "2") == {"ai.clipper.container.label": "c", "ai.clipper.name": "model",
                                               "ai.clipper.model_container.label": "m_2"}
    assert k8s.selector(k8s.model_labels("c", "m", "2")) == (
        "ai.clipper.container.label=c,ai.clipper.name=model,ai.clipper.model_container.label=m_2")


def test_object_names_are_clippers() -> None:
    assert k8s.redis_name("c") == "redis-at-c"
    assert k8s.mgmt_name("c") == "mgmt-frontend-at-c"
    assert k8s.query_name("c") == "query-frontend-at-c"
    assert k8s.model_deployment_name("c", "sum", "1") == "sum-1-deployment-at-c"


def test_long_model_names_are_shortened_distinctly() -> None:
    long = "a" * 60
    names = {k8s.model_deployment_name("default-cluster", long, v) for v in ("1", "2", "10", "1" * 50)}
    labels = {k8s.model_label_value(long, v) for v in ("1", "2", "10", "1" * 50)}
    assert len(names) == len(labels) == 4
    for n in names:
        assert k8s.is_dns_label(n) and len(n) <= 63
    for v in labels:
        assert k8s.is_label_value(v) and len(v) <= 63
    assert k8s.model_deployment_name("c", long, "1") == k8s.model_deployment_name("c", long, "1")  # stable
    dep = k8s.model_deployment(k8s.ClusterSpec(), k8s.ModelSpec(long, "1" * 50, "ints", "img"))
    check([*k8s.cluster_objects(k8s.ClusterSpec(), "a", "p"), dep])
    assert dep["metadata"]["annotations"][k8s.MODEL_NAME_ANNOTATION] == long  # the exact name is kept


def test_fit_dns_label() -> None:
    assert k8s.fit_dns_label("ok-name") == "ok-name"
    for bad in ("Upper_Case.name", "-x-", "x" * 64, "___"):
        fitted = k8s.fit_dns_label(bad)
        assert k8s.is_dns_label(fitted), fitted
    assert k8s.fit_dns_label("Upper") != k8s.fit_dns_label("upper")


@pytest.mark.parametrize("name", ["Default", "under_score", "dot.name", "-lead", "x" * (k8s.MAX_CLUSTER_NAME + 1), ""])
def test_bad_cluster_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cluster name"):
        k8s.ClusterSpec(cluster_name=name)


def test_the_longest_cluster_name_fits_every_object() -> None:
    spec = k8s.ClusterSpec(cluster_name="c" * k8s.MAX_CLUSTER_NAME, num_frontend_replicas=2)
    check([*k8s.cluster_objects(spec, "a", "p"), k8s.model_deployment(spec, k8s.ModelSpec("m" * 40, "7", "s", "i"))])


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "Sum", "version": "1"}, "model name"),
    ({"name": "sum", "version": "v_1"}, "model version"),
    ({"name": "sum", "version": "1", "input_type": "tensors"}, "unknown input type"),
    ({"name": "sum", "version": "1", "num_replicas": -1}, "num_replicas"),
    ({"name": "sum", "version": "1", "image": ""}, "image"),
])
def test_bad_model_specs_are_refused(kwargs: dict[str, Any], match: str) -> None:
    full = {"input_type": "doubles", "image": "img", **kwargs}
    with pytest.raises(ValueError, match=match):
        k8s.ModelSpec(**full)


# ---------------------------------------------------------------------------------------------- settings


def test_service_types() -> None:
    assert k8s.check_service_types(None) == k8s.DEFAULT_SERVICE_TYPES
    assert k8s.DEFAULT_SERVICE_TYPES["query"] == k8s.DEFAULT_SERVICE_TYPES["management"] == "NodePort"
    assert k8s.DEFAULT_SERVICE_TYPES["redis"] == "ClusterIP"
    clippers = {"redis": "NodePort", "management": "LoadBalancer", "query": "loadbalancer", "query-rpc": "ClusterIP",
                "metric": "LoadBalancer"}
    assert k8s.check_service_types(clippers)["query"] == "LoadBalancer"
    for bad, match in (({"frontend": "NodePort"}, "unknown keys"), ({"query": "Ingress"}, "unknown value"),
                       ({"query": "ExternalName"}, "does not support"), (["query"], "must be a dict")):
        with pytest.raises(ValueError, match=match):
            k8s.check_service_types(bad)  # type: ignore[arg-type]


def test_resources() -> None:
    assert k8s.Resources().to_k8s() == {}
    assert k8s.Resources(gpus=1).to_k8s() == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    for good in ("500m", "2", "1.5", "256Mi", "1Gi", "2G", "1e3"):
        k8s.Resources(cpu=good)
    for bad in ("abc", "1 Gi", "-", "1GB"):
        with pytest.raises(ValueError, match="quantity"):
            k8s.Resources(memory=bad)
    for bad_gpus in (-1, 1.5, True):
        with pytest.raises(ValueError, match="gpus"):
            k8s.Resources(gpus=bad_gpus)  # type: ignore[arg-type]


def test_images_get_the_package_version_and_the_registry() -> None:
    assert k8s.cluster_image("clipper/query_frontend:0.4.1") == f"clipper/query_frontend:{VERSION}"
    assert k8s.cluster_image("clipper/query_frontend") == f"clipper/query_frontend:{VERSION}"
    assert k8s.cluster_image("clipper/noop-container:0.4.1", "reg:5000/x/") == (
        f"reg:5000/x/clipper/noop-container:{VERSION}")
    assert k8s.cluster_image("clipper/python311-closure-container:0.4.1", "r") == (
        f"r/clipper/python311-closure-container:{VERSION}")
    assert k8s.cluster_image("clipper/query_frontend:dev", "r") == "r/clipper/query_frontend:dev"
    for foreign in ("redis:7", "registry.example.com/team/m:1", "clipper/not-ours:1", "localhost:5000/clipper/x"):
        assert k8s.cluster_image(foreign, "r") == foreign


def test_redis_runs_as_the_docker_manager_runs_it() -> None:
    assert k8s.redis_args() == ["redis-server", "--port", "6379", *persistence_args(k8s.REDIS_DATA_DIR)]
    dep = k8s.redis_deployment(k8s.ClusterSpec())
    assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1


def test_query_frontends_advertise_their_pod_ip_and_model_replicas_reach_every_one() -> None:
    spec = k8s.ClusterSpec(cluster_name="c", namespace="ns", cluster_domain="corp.local", num_frontend_replicas=3)
    query = k8s.query_deployment(spec)
    container = query["spec"]["template"]["spec"]["containers"][0]
    assert "--advertise-address=$(CLIPPER_POD_IP)" in container["args"]
    assert {"name": "CLIPPER_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    rpc = k8s.query_rpc_service(spec)
    assert rpc["spec"]["clusterIP"] == "None" and rpc["spec"]["ports"][0]["port"] == 7000
    assert rpc["spec"]["selector"] == query["spec"]["selector"]["matchLabels"]
    model = k8s.model_deployment(spec, k8s.ModelSpec("m", "1", "doubles", "i"))
    env = {e["name"]: e["value"] for e in model["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CLIPPER_IP"] == "query-frontend-rpc-at-c.ns.svc.corp.local"
    probes = {k: container[k]["httpGet"]["path"] for k in ("readinessProbe", "livenessProbe")}
    assert probes == {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    mgmt = k8s.mgmt_deployment(spec)["spec"]["template"]["spec"]["containers"][0]
    assert mgmt["readinessProbe"]["httpGet"]["path"] == "/admin/ping"
    assert {"name": "CLIPPER_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "clipper-tokens-at-c", "key": "admin-token"}}} in mgmt["env"]


def test_the_spec_hash_follows_the_pod_template() -> None:
    spec = k8s.ClusterSpec()
    one = k8s.model_deployment(spec, k8s.ModelSpec("m", "1", "doubles", "img:1", 1))
    more = k8s.model_deployment(spec, k8s.ModelSpec("m", "1", "doubles", "img:1", 5))
    other = k8s.model_deployment(spec, k8s.ModelSpec("m", "1", "doubles", "img:2", 1))
    hashes = [d["metadata"]["annotations"][k8s.SPEC_HASH_ANNOTATION] for d in (one, more, other)]
    assert hashes[0] == hashes[1] != hashes[2]


# ---------------------------------------------------------------------------------------------- the command


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clipper", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


def _documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.mark.parametrize("args", [
    (), ("--frontends", "3"), ("--frontends", "2", "--query-service", "loadbalancer", "--management-service",
                               "ClusterIP", "--insecure", "--create-namespace", "--namespace", "serving"),
    ("--redis-ip", "10.1.2.3", "--no-secret", "--registry", "registry.example.com/t"),
    ("--no-redis-persistence", "--storage-class", "ssd", "--pull-policy", "Always"),
], ids=["default", "3-frontends", "lb-insecure-ns", "external-redis", "in-memory"])
def test_printed_cluster_manifests_validate(args: tuple[str, ...]) -> None:
    done = run_cli("--cluster-name", "prod", "k8s", "manifests", *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Clipper cluster 'prod'")
    docs = _documents(done.stdout)
    check([d for d in docs if d["kind"] != "Namespace"])
    for d in docs:
        validate(d)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "query-frontend-at-prod") in names and ("Service", "query-frontend-rpc-at-prod") in names
    if "3" in args:
        query = next(d for d in docs if d["metadata"]["name"] == "query-frontend-at-prod" and d["kind"] == "Deployment")
        assert query["spec"]["replicas"] == 3
    if "--no-secret" in args:
        assert "Secret" not in {k for k, _ in names}
        assert "kubectl -n default create secret generic clipper-tokens-at-prod" in done.stdout
    else:
        secret = next(d for d in docs if d["kind"] == "Secret")
        assert len(secret["stringData"]["admin-token"]) >= 40
        assert ("predict-token" in secret["stringData"]) is ("--insecure" not in args)
    if "--create-namespace" in args:
        assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "serving"}}


def test_printed_manifests_equal_what_the_manager_creates() -> None:
    """The command and the manager build the objects with the same functions: same objects, tokens aside."""
    done = run_cli("k8s", "manifests", "--frontends", "3")
    docs = _documents(done.stdout)
    spec = k8s.ClusterSpec(num_frontend_replicas=3)
    secret = docs[0]["stringData"]
    assert docs == k8s.cluster_objects(spec, secret["admin-token"], secret["predict-token"])


def test_printed_model_manifest_validates() -> None:
    done = run_cli("k8s", "manifests", "model", "--name", "sum", "--version", "2", "--image",
                   "clipper/noop-container:0.4.1", "--registry", "reg.example.com", "--replicas", "3", "--gpus", "1",
                   "--cpu", "500m", "--memory-limit", "2Gi", "--input-type", "ints")
    assert done.returncode == 0, done.stderr
    (dep,) = _documents(done.stdout)
    check([*k8s.cluster_objects(k8s.ClusterSpec(), "a", "p"), dep])
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"reg.example.com/clipper/noop-container:{VERSION}"
    assert c["resources"] == {"requests": {"cpu": "500m", "nvidia.com/gpu": "1"},
                              "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}}
    assert dep["spec"]["replicas"] == 3
    assert {"name": "CLIPPER_INPUT_TYPE", "value": "integers"} in c["env"]
    assert "/admin/add_model" in done.stdout  # how to register it


@pytest.mark.parametrize("args,code,message", [
    (("k8s", "manifests", "--frontends", "0"), 2, "--frontends: '0' must be at least 1"),
    (("k8s", "manifests", "--query-service", "Ingress"), 2, "--query-service: 'Ingress' is not one of"),
    (("k8s", "manifests", "--redis-storage", "lots"), 2, "--redis-storage: 'lots' is not a Kubernetes quantity"),
    (("k8s", "manifests", "--namespace", "Prod"), 2, "--namespace: 'Prod' is not a DNS-1123 label"),
    (("k8s", "manifests", "model", "--name", "m"), 2, "needs --name and --image"),
    (("k8s", "manifests", "model", "--name", "m", "--image", "i", "--frontends", "2"), 2,
     "--frontends: option(s) of `manifests cluster`"),
    (("k8s", "manifests", "--gpus", "1"), 2, "--gpus: option(s) of `manifests model`"),
    (("k8s", "manifests", "model", "--name", "m", "--image", "i", "--gpus", "-1"), 2, "--gpus"),
    (("k8s", "manifests", "model", "--name", "m", "--image", "i", "--input-type", "tensors"), 2, "tensors"),
    (("--cluster-name", "Bad_Name", "k8s", "manifests"), 1, "clipper: error: Invalid cluster name 'Bad_Name'"),
    (("k8s", "push-images"), 2, "--registry"),
    (("k8s", "push-images", "--registry", "r", "nosuch"), 2, "unknown image(s) nosuch"),
])
def test_bad_values_get_one_line(args: tuple[str, ...], code: int, message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_images_lists_what_the_manifests_name() -> None:
    done = run_cli("k8s", "images", "--registry", "reg.example.com/t")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"clipper/{n}:{VERSION} -> reg.example.com/t/clipper/{n}:{VERSION}"
                                        for n in k8s.CLUSTER_IMAGES]
    local = run_cli("k8s", "images").stdout.splitlines()
    assert local == [f"clipper/{n}:{VERSION}" for n in k8s.CLUSTER_IMAGES]


def test_k8s_is_a_subcommand_of_clipper() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["--cluster-name", "x", "k8s", "manifests", "--frontends", "3"])
    assert (args.func, args.cluster_name, args.frontends, args.what) == (cli._cmd_k8s, "x", 3, "cluster")
    assert isinstance(args.k8s_parser, argparse.ArgumentParser)


# ---------------------------------------------------------------------------------------------- pushing


class _FakeImage:
    def __init__(self, client: _FakeDocker, ref: str) -> None:
        self.client, self.ref = client, ref

    def tag(self, repo: str, tag: str) -> bool:
        self.client.tags.append((self.ref, f"{repo}:{tag}"))
        return True


class _FakeDocker:
    """``docker.DockerClient.images``: get, tag and push (stream of dicts), recorded."""

    def __init__(self, have: set[str], push_error: str | None = None) -> None:
        self.have, self.push_error = have, push_error
        self.tags: list[tuple[str, str]] = []
        self.pushed: list[str] = []
        self.images = self

    def get(self, ref: str) -> _FakeImage:
        if ref not in self.have:
            raise LookupError(f"No such image: {ref}")
        return _FakeImage(self, ref)

    def push(self, repo: str, tag: str, stream: bool, decode: bool) -> list[dict[str, Any]]:
        assert stream and decode
        self.pushed.append(f"{repo}:{tag}")
        if self.push_error:
            return [{"status": "Preparing"}, {"error": self.push_error, "errorDetail": {"message": self.push_error}}]
        return [{"status": "Pushed", "id": "abc"}, {"status": "1: digest: sha256:00 size: 1"}]


def test_push_cluster_images_tags_then_pushes() -> None:
    have = {f"clipper/{n}:{VERSION}" for n in k8s.CLUSTER_IMAGES}
    docker = _FakeDocker(have)
    lines: list[str] = []
    pushed = registry.push_cluster_images(docker, "reg.example.com/t", progress=lines.append)
    assert pushed == docker.pushed == [f"reg.example.com/t/clipper/{n}:{VERSION}" for n in k8s.CLUSTER_IMAGES]
    assert docker.tags == list(zip(sorted(have, key=lambda r: [f"clipper/{n}:{VERSION}" for n in k8s.CLUSTER_IMAGES]
                                          .index(r)), pushed, strict=True))
    assert any("Pushed" in line for line in lines)


def test_push_errors_name_the_image() -> None:
    with pytest.raises(registry.PushError, match="clipper images build redis"):
        registry.push_cluster_images(_FakeDocker(set()), "r", ["redis"])
    docker = _FakeDocker({f"clipper/redis:{VERSION}"}, push_error="denied: requested access to the resource is denied")
    with pytest.raises(registry.PushError, match=f"docker push r/clipper/redis:{VERSION} failed: denied"):
        registry.push_cluster_images(docker, "r", ["redis"])


def test_set_model_resources_reaches_the_deployment() -> None:
    """``deploy_model(..., gpus=n)`` goes through `set_model_resources`: the version's entry wins over the model's."""
    from clipper import ClipperException
    from clipper.managers.kubernetes import KubernetesContainerManager

    cm = KubernetesContainerManager()
    cm.set_model_resources("m", cpu="250m")
    cm.set_model_resources("m", "2", gpus=1)
    assert cm.resources_for("m", "2").to_k8s() == {"requests": {"nvidia.com/gpu": "1"},
                                                   "limits": {"nvidia.com/gpu": "1"}}
    assert cm.resources_for("m", "1").to_k8s() == {"requests": {"cpu": "250m"}}
    with pytest.raises(ClipperException, match="number of GPUs"):
        cm.set_model_resources("m", gpus=["0"])
