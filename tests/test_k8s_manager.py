"""`KubernetesContainerManager` without a cluster: the order of its calls, its scale and rollout decisions, address
resolution, tokens, failures and state kept across `stop_all(keep_state=True)`, against `k8s_fake.FakeKube` (a
small recording fake of the client's APIs that validates every object created or replaced against the Kubernetes
schemas), and once through the real ``kubernetes`` client over HTTP. No API server can run here (docs/kubernetes.md)."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kubernetes")
pytest.importorskip("kubernetes_validate")

from k8s_fake import FakeKube, node, serve_http  # noqa: E402

from clipper import ClipperConnection  # noqa: E402
from clipper.exceptions import ClipperException  # noqa: E402
from clipper.images import VERSION  # noqa: E402
from clipper.k8s import objects as k8s  # noqa: E402
from clipper.managers import kubernetes as km  # noqa: E402
from clipper.managers.kubernetes import KubernetesContainerManager  # noqa: E402

IMAGE = "clipper/noop-container:0.4.1"
WRITES = ("create_", "replace_", "patch_", "delete_")


def manager(kube: FakeKube, **kwargs: Any) -> KubernetesContainerManager:
    """A manager whose client is `kube` (its calls return plain dicts, as the manager's to_dict makes them)."""
    settings: dict[str, Any] = {"poll_interval": 0, "start_timeout": 5, "image_progress": None, "useInternalIP": True}
    cm = KubernetesContainerManager(**{**settings, **kwargs})
    cm._make_apis = lambda: (kube.core, kube.apps, copy.deepcopy)  # type: ignore[method-assign]
    return cm


def writes(kube: FakeKube, since: int = 0) -> list[str]:
    """The writing calls since call number `since`, as ``method kind/name``."""
    out = []
    for method, kwargs in kube.calls[since:]:
        if method.startswith(WRITES):
            body = kwargs.get("body") or {}
            what = kwargs.get("name") or (body.get("metadata") or {}).get("name") or kwargs.get("label_selector")
            out.append(f"{method} {what}")
    return out


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


# ---------------------------------------------------------------------------------------------- start, connect


@pytest.mark.parametrize("frontends", [1, 3])
def test_start_clipper_creates_the_objects_in_order_then_waits(kube: FakeKube, frontends: int) -> None:
    cm = manager(kube)
    cm.start_clipper(IMAGE.replace("noop-container", "query_frontend"), num_frontend_replicas=frontends)
    assert writes(kube) == [
        "create_namespaced_secret clipper-tokens-at-default-cluster",
        "create_namespaced_persistent_volume_claim redis-data-at-default-cluster",
        "create_namespaced_deployment redis-at-default-cluster",
        "create_namespaced_service redis-at-default-cluster",
        "create_namespaced_deployment mgmt-frontend-at-default-cluster",
        "create_namespaced_service mgmt-frontend-at-default-cluster",
        "create_namespaced_deployment query-frontend-at-default-cluster",
        "create_namespaced_service query-frontend-at-default-cluster",
        "create_namespaced_service query-frontend-rpc-at-default-cluster",
    ]
    reads = [kw["name"] for m, kw in kube.calls if m == "read_namespaced_deployment"]
    assert reads[:3] == ["redis-at-default-cluster", "mgmt-frontend-at-default-cluster",
                         "query-frontend-at-default-cluster"]
    assert kube.methods()[0] == "read_namespace"
    assert cm.num_frontend_replicas == frontends
    query = kube.get("deployment", "query-frontend-at-default-cluster")
    assert query["spec"]["replicas"] == frontends
    assert query["spec"]["template"]["spec"]["containers"][0]["image"] == f"clipper/query_frontend:{VERSION}"
    assert kube.validated == 9


def test_start_refuses_a_cluster_that_exists(kube: FakeKube) -> None:
    manager(kube).start_clipper()
    before = len(kube.calls)
    with pytest.raises(ClipperException, match="already exists in the namespace default.*connect()"):
        manager(kube).start_clipper()
    assert writes(kube, before) == []


def test_two_clusters_share_a_namespace(kube: FakeKube) -> None:
    a, b = manager(kube, cluster_name="a"), manager(kube, cluster_name="b")
    a.start_clipper()
    b.start_clipper()
    a.deploy_model("m", "1", "doubles", IMAGE)
    b.deploy_model("m", "1", "doubles", IMAGE)
    a.stop_all_model_containers()
    assert kube.names("deployment") == ["m-1-deployment-at-b", "mgmt-frontend-at-a", "mgmt-frontend-at-b",
                                        "query-frontend-at-a", "query-frontend-at-b", "redis-at-a", "redis-at-b"]
    a.stop_all()
    assert all(n.endswith("-b") for n in kube.names("deployment") + kube.names("service") + kube.names("secret"))


def test_external_redis(kube: FakeKube) -> None:
    cm = manager(kube, redis_ip="redis.data.svc.cluster.local", redis_port=6380)
    cm.start_clipper()
    assert not [n for n in kube.names("deployment") + kube.names("service") + kube.names("persistent_volume_claim")
                if n.startswith("redis")]
    args = kube.get("deployment", "query-frontend-at-default-cluster")["spec"]["template"]["spec"]["containers"][0][
        "args"]
    assert args[:2] == ["--redis_ip=redis.data.svc.cluster.local", "--redis_port=6380"]
    assert (cm.redis_ip, cm.external_redis) == ("redis.data.svc.cluster.local", True)
    cm.stop_all()
    assert ("persistent_volume_claim", "default", "redis-data-at-default-cluster") not in kube.objects


def test_the_namespace_must_exist_unless_created(kube: FakeKube) -> None:
    with pytest.raises(ClipperException, match="Namespace serving does not exist.*create_namespace_if_not_exists"):
        manager(kube, namespace="serving").start_clipper()
    assert writes(kube) == []
    cm = manager(kube, namespace="serving", create_namespace_if_not_exists=True)
    cm.start_clipper()
    assert writes(kube)[0] == "create_namespace serving"
    assert "serving" in kube.namespaces
    assert {o["metadata"]["namespace"] for o in kube.objects.values()} == {"serving"}
    assert cm.cluster_identifier == "serving-default-cluster"


def test_a_namespace_that_cannot_be_read_is_taken_at_its_word(kube: FakeKube) -> None:
    from k8s_fake import api_error

    real = kube.call

    def forbidden(method: str, kwargs: dict[str, Any]) -> Any:
        if method == "read_namespace":
            raise api_error(403, "Forbidden", "namespaces is forbidden: User cannot get resource")
        return real(method, kwargs)

    kube.call = forbidden  # type: ignore[method-assign]
    manager(kube).start_clipper()
    assert "query-frontend-at-default-cluster" in kube.names("deployment")


def test_tokens_are_drawn_kept_in_a_secret_and_read_back(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPPER_ADMIN_TOKEN", raising=False)
    cm = manager(kube)
    cm.start_clipper()
    assert cm.admin_token and cm.predict_token and cm.admin_token != cm.predict_token
    other = manager(kube)
    assert other.admin_token is None
    conn = ClipperConnection(other)
    conn.connect()
    assert (other.admin_token, other.predict_token) == (cm.admin_token, cm.predict_token)
    assert conn.get_query_addr() == cm.get_query_addr()
    query = kube.get("deployment", "query-frontend-at-default-cluster")["spec"]["template"]["spec"]["containers"][0]
    assert "--insecure" not in query["args"]


def test_insecure_and_given_tokens(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPPER_ADMIN_TOKEN", "from-the-environment")
    cm = manager(kube, insecure=True)
    cm.start_clipper()
    assert (cm.admin_token, cm.predict_token) == ("from-the-environment", None)
    query = kube.get("deployment", "query-frontend-at-default-cluster")["spec"]["template"]["spec"]["containers"][0]
    assert "--insecure" in query["args"]
    cm.stop_all()
    cm = manager(kube, admin_token="a" * 40, predict_token="p" * 40)
    cm.start_clipper()
    fresh = manager(kube)
    fresh.connect()
    assert (fresh.admin_token, fresh.predict_token) == ("a" * 40, "p" * 40)


def test_connect_without_a_cluster(kube: FakeKube) -> None:
    with pytest.raises(ClipperException, match="No Clipper cluster named 'default-cluster' in the namespace default"):
        manager(kube).connect()
    with pytest.raises(ClipperException, match="not started nor connected"):
        manager(kube).get_query_addr()


def test_get_metric_addr_says_where_metrics_are(kube: FakeKube) -> None:
    cm = manager(kube)
    cm.start_clipper()
    with pytest.raises(ClipperException, match=f"deploys no Prometheus.*http://{cm.get_query_addr()}/metrics"):
        cm.get_metric_addr()


def test_start_failure_deletes_what_it_created(kube: FakeKube) -> None:
    kube.pod_failures["query-frontend-at-default-cluster"] = {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "clipper/query_frontend:0.1.0"'}
    cm = manager(kube)
    with pytest.raises(ClipperException) as info:
        cm.start_clipper()
    msg = info.value.msg
    assert "query-frontend-at-default-cluster cannot start" in msg and "ImagePullBackOff" in msg
    assert "kind load docker-image" in msg and "container_registry" in msg
    assert kube.names("deployment") == kube.names("service") == kube.names("secret") == []
    assert kube.names("persistent_volume_claim") == []


def test_a_crash_loop_quotes_the_log(kube: FakeKube) -> None:
    kube.pod_failures["mgmt-frontend-at-default-cluster"] = {"reason": "CrashLoopBackOff", "message": "back-off"}
    kube.logs[("mgmt-frontend-at-default-cluster-0", "mgmt-frontend")] = "Traceback...\nRedisError: no route\n"
    real = kube._changed

    def restarted(dep: dict[str, Any]) -> None:
        real(dep)
        for (kind, _, name), pod in kube.objects.items():
            if kind == "pod" and name.startswith("mgmt"):
                pod["status"]["containerStatuses"][0]["restartCount"] = 3

    kube._changed = restarted  # type: ignore[method-assign]
    with pytest.raises(ClipperException, match="(?s)CrashLoopBackOff.*kubectl logs mgmt-frontend-at-default-cluster-0 "
                                               "-c mgmt-frontend:\nTraceback...\nRedisError: no route"):
        manager(kube).start_clipper()
    logs = [kw for m, kw in kube.calls if m == "read_namespaced_pod_log"]
    assert logs[0]["previous"] is True and logs[0]["tail_lines"] == 20


def test_a_deployment_that_never_gets_ready_times_out(kube: FakeKube) -> None:
    kube.pod_failures["redis-at-default-cluster"] = {
        "reason": "Unschedulable", "message": "0/1 nodes are available: pod has unbound PersistentVolumeClaims"}
    with pytest.raises(ClipperException, match="(?s)redis-at-default-cluster is not ready within 0.2 s.*unbound"):
        manager(kube, start_timeout=0.2).start_clipper()


# ---------------------------------------------------------------------------------------------- addresses


def test_node_hosts() -> None:
    nodes = [node("a", InternalIP="10.0.0.1", Hostname="a"), node("b", InternalIP="10.0.0.2", ExternalIP="203.0.113.2")]
    assert km.node_hosts(nodes, False) == ["203.0.113.2"]
    assert km.node_hosts([*nodes, node("c", ExternalDNS="c.example.com")], False) == ["c.example.com"]
    assert km.node_hosts(nodes[:1], True) == ["10.0.0.1"]
    with pytest.raises(ClipperException, match="useInternalIP=True"):
        km.node_hosts(nodes[:1], False)


def _svc(kind: str, port: int, node_port: int | None = None, ingress: list[dict[str, str]] | None = None,
         name: str = "query-frontend-at-c", namespace: str = "ns") -> dict[str, Any]:
    p: dict[str, Any] = {"name": "http", "port": port, "targetPort": "http"}
    if node_port:
        p["nodePort"] = node_port
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"type": kind, "ports": [p]},
            "status": {"loadBalancer": {"ingress": ingress} if ingress is not None else {}}}


def test_service_addresses() -> None:
    hosts = ["203.0.113.7"]
    assert km.service_addr(_svc("NodePort", 1337, 31337), 1337, hosts=hosts) == "203.0.113.7:31337"
    assert km.service_addr(_svc("LoadBalancer", 1337, 31337, [{"ip": "198.51.100.1"}]), 1337) == "198.51.100.1:1337"
    assert km.service_addr(_svc("LoadBalancer", 1337, 31337, [{"hostname": "lb.example.com"}]), 1337) == (
        "lb.example.com:1337")
    with pytest.raises(km.AddressPending):
        km.service_addr(_svc("LoadBalancer", 1337, 31337, []), 1337, proxy="127.0.0.1:8001")
    proxied = "127.0.0.1:8001/api/v1/namespaces/ns/services/query-frontend-at-c:1337/proxy"
    assert km.service_addr(_svc("NodePort", 1337, 31337), 1337, proxy="127.0.0.1:8001") == proxied
    assert km.service_addr(_svc("ClusterIP", 1337), 1337, proxy="http://127.0.0.1:8001/") == proxied
    assert km.service_addr(_svc("ClusterIP", 1337), 1337, cluster_domain="corp") == (
        "query-frontend-at-c.ns.svc.corp:1337")
    with pytest.raises(ClipperException, match="no port 1338"):
        km.service_addr(_svc("NodePort", 1337, 31337), 1338, hosts=hosts)


@pytest.mark.parametrize("types,proxy,nodes,expected", [
    ({}, None, [node("n", InternalIP="10.0.0.1")], ("10.0.0.1:30000", "10.0.0.1:30001")),
    ({}, None, [node("n", InternalIP="10.0.0.1", ExternalDNS="n.example.com")], ("n.example.com:30000",
                                                                                 "n.example.com:30001")),
    ({"management": "LoadBalancer", "query": "LoadBalancer"}, None, [], ("198.51.100.20:1338", "198.51.100.20:1337")),
    ({"management": "ClusterIP", "query": "ClusterIP"}, "127.0.0.1:8001", [],
     ("127.0.0.1:8001/api/v1/namespaces/default/services/mgmt-frontend-at-default-cluster:1338/proxy",
      "127.0.0.1:8001/api/v1/namespaces/default/services/query-frontend-at-default-cluster:1337/proxy")),
    ({"management": "ClusterIP", "query": "ClusterIP"}, None, [],
     ("mgmt-frontend-at-default-cluster.default.svc.cluster.local:1338",
      "query-frontend-at-default-cluster.default.svc.cluster.local:1337")),
], ids=["nodeport-internal", "nodeport-dns", "loadbalancer", "proxy", "clusterip"])
def test_connect_resolves_addresses_as_clipper(types: dict[str, str], proxy: str | None, nodes: list[dict[str, Any]],
                                               expected: tuple[str, str]) -> None:
    kube = FakeKube(nodes=nodes)
    cm = manager(kube, service_types=types, kubernetes_proxy_addr=proxy)
    cm.start_clipper()
    assert (cm.get_admin_addr(), cm.get_query_addr()) == expected
    assert ("list_node" in kube.methods()) is (proxy is None and not types)
    if types.get("query") == "LoadBalancer":
        assert (cm.clipper_query_ip, cm.clipper_query_port) == ("198.51.100.20", 1337)
    elif not types:
        assert (cm.clipper_management_port, cm.clipper_query_port) == (30000, 30001)


def test_start_waits_for_load_balancer_addresses() -> None:
    kube = FakeKube(lb_pending_reads=3)
    cm = manager(kube, service_types={"query": "LoadBalancer", "management": "LoadBalancer"})
    cm.start_clipper()
    assert cm.get_query_addr() == "198.51.100.20:1337"
    assert kube.methods().count("read_namespaced_service") >= 5
    never = FakeKube(lb_pending_reads=10**6)
    with pytest.raises(km.AddressPending, match="no external address yet"):
        manager(never, service_types={"query": "LoadBalancer"}, start_timeout=0.1).start_clipper()
    assert never.names("deployment") == []


def test_nodeports_without_a_node_address_say_what_to_do(kube: FakeKube) -> None:
    kube.nodes = [node("n", InternalIP="10.0.0.1")]
    manager(kube).start_clipper()
    with pytest.raises(ClipperException, match="useInternalIP=True"):
        manager(kube, useInternalIP=False).connect()


def test_the_proxy_warns_that_tokens_do_not_pass(kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    manager(kube).start_clipper()
    with caplog.at_level(logging.WARNING, "clipper.managers.kubernetes"):
        manager(kube, kubernetes_proxy_addr="127.0.0.1:8001").connect()
    assert "removes the Authorization header" in caplog.text


# ---------------------------------------------------------------------------------------------- models


def _dep(replicas: int, hash_: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {k8s.SPEC_HASH_ANNOTATION: hash_}}, "spec": {"replicas": replicas}}


@pytest.mark.parametrize("existing,wanted,plan", [
    (None, _dep(2, "h"), "create"),
    (None, _dep(0, "h"), "none"),
    (_dep(2, "h"), _dep(2, "h"), "none"),
    (_dep(2, "h"), _dep(5, "h"), "scale"),
    (_dep(2, "h"), _dep(0, "h"), "scale"),
    (_dep(2, "h"), _dep(2, "other"), "rollout"),
    (_dep(2, "h"), _dep(4, "other"), "rollout"),
    ({"metadata": {}, "spec": {"replicas": 1}}, _dep(1, "h"), "rollout"),  # made by hand: ours replaces it
])
def test_plan_model_update(existing: dict[str, Any] | None, wanted: dict[str, Any], plan: str) -> None:
    assert km.plan_model_update(existing, wanted) == plan


def test_deployment_ready() -> None:
    def dep(gen: int, observed: int, want: int, replicas: int, updated: int, ready: int) -> dict[str, Any]:
        return {"metadata": {"generation": gen}, "spec": {"replicas": want},
                "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                           "readyReplicas": ready}}

    assert km.deployment_ready(dep(2, 2, 3, 3, 3, 3))
    assert not km.deployment_ready(dep(2, 1, 3, 3, 3, 3))  # the controller has not seen the change
    assert not km.deployment_ready(dep(2, 2, 3, 4, 3, 3))  # a surge pod or an old one is still there
    assert not km.deployment_ready(dep(2, 2, 3, 3, 2, 3))  # rolling out
    assert not km.deployment_ready(dep(2, 2, 3, 3, 3, 2))  # not ready
    assert km.deployment_ready({"metadata": {"generation": 1}, "spec": {"replicas": 0},
                                "status": {"observedGeneration": 1}})


def test_deploy_scale_rollout_and_nothing(kube: FakeKube) -> None:
    cm = manager(kube)
    cm.start_clipper()
    name = "sum-model-1-deployment-at-default-cluster"
    start = len(kube.calls)
    cm.deploy_model("sum-model", "1", "d", IMAGE, 2)
    assert writes(kube, start) == [f"create_namespaced_deployment {name}"]
    assert cm.get_num_replicas("sum-model", "1") == 2
    assert cm.get_num_replicas("sum-model", "2") == 0
    start = len(kube.calls)
    cm.set_num_replicas("sum-model", "1", "d", IMAGE, 5)
    assert writes(kube, start) == [f"patch_namespaced_deployment_scale {name}"]
    assert kube.calls[-2][1]["body"] == {"spec": {"replicas": 5}}
    start = len(kube.calls)
    cm.set_num_replicas("sum-model", "1", "d", IMAGE, 5)
    assert writes(kube, start) == []
    rv = kube.get("deployment", name)["metadata"]["resourceVersion"]
    cm.set_num_replicas("sum-model", "1", "d", "registry.example.com/sum:2", 5)
    method, kwargs = next((m, kw) for m, kw in reversed(kube.calls) if m.startswith("replace"))
    assert method == "replace_namespaced_deployment" and kwargs["body"]["metadata"]["resourceVersion"] == rv
    dep = kube.get("deployment", name)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/sum:2"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    start = len(kube.calls)
    cm.set_num_replicas("sum-model", "1", "d", "registry.example.com/sum:2", 0)
    assert writes(kube, start) == [f"patch_namespaced_deployment_scale {name}"]
    start = len(kube.calls)
    cm.set_num_replicas("sum-model", "9", "d", IMAGE, 0)
    assert writes(kube, start) == []


@pytest.mark.parametrize("bad,match", [(-1, "Invalid number of replicas"), (1.5, "Invalid number of replicas"),
                                       (True, "Invalid number of replicas")])
def test_bad_replica_counts(kube: FakeKube, bad: Any, match: str) -> None:
    with pytest.raises(ClipperException, match=match):
        manager(kube).set_num_replicas("m", "1", "doubles", IMAGE, bad)


def test_bad_model_values(kube: FakeKube) -> None:
    cm = manager(kube)
    with pytest.raises(ClipperException, match="unknown input type"):
        cm.set_num_replicas("m", "1", "tensors", IMAGE, 1)
    with pytest.raises(ClipperException, match="model name"):
        cm.set_num_replicas("M", "1", "doubles", IMAGE, 1)
    assert writes(kube) == []


def test_model_resources_and_gpus(kube: FakeKube) -> None:
    cm = manager(kube, model_resources={"*": {"cpu": "250m"}, "big": k8s.Resources(memory_limit="16Gi", gpus=2),
                                        "big:2": {"gpus": 1}}, model_metrics=False)
    cm.start_clipper()
    for name, version in (("small", "1"), ("big", "1"), ("big", "2")):
        cm.deploy_model(name, version, "floats", IMAGE)
    res = {n: kube.get("deployment", n)["spec"]["template"]["spec"]["containers"][0].get("resources")
           for n in ("small-1-deployment-at-default-cluster", "big-1-deployment-at-default-cluster",
                     "big-2-deployment-at-default-cluster")}
    assert res["small-1-deployment-at-default-cluster"] == {"requests": {"cpu": "250m"}}
    assert res["big-1-deployment-at-default-cluster"] == {"requests": {"nvidia.com/gpu": "2"},
                                                          "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"}}
    assert res["big-2-deployment-at-default-cluster"]["limits"] == {"nvidia.com/gpu": "1"}
    small = kube.get("deployment", "small-1-deployment-at-default-cluster")["spec"]["template"]["spec"]
    assert "livenessProbe" not in small["containers"][0]  # model_metrics=False
    with pytest.raises(ClipperException, match="Invalid resources"):
        manager(kube, model_resources={"x": {"gpus": -1}})


def test_a_model_that_cannot_start_is_removed(kube: FakeKube) -> None:
    cm = manager(kube)
    cm.start_clipper()
    kube.pod_failures["m-1-deployment-at-default-cluster"] = {"reason": "InvalidImageName", "message": "bad ref"}
    with pytest.raises(ClipperException, match="(?s)Model m:1 cannot start.*InvalidImageName: bad ref"):
        cm.deploy_model("m", "1", "doubles", "Not A/Valid:Image")
    assert "m-1-deployment-at-default-cluster" not in kube.names("deployment")


def test_stop_models_selects_by_clippers_labels(kube: FakeKube) -> None:
    cm = manager(kube)
    cm.start_clipper()
    for v in ("1", "2", "3"):
        cm.deploy_model("m", v, "doubles", IMAGE)
    cm.deploy_model("other", "1", "doubles", IMAGE)
    start = len(kube.calls)
    cm.stop_models({"m": ["1", "3"]})
    assert [kw["label_selector"] for _, kw in kube.calls[start:]] == [
        "ai.clipper.container.label=default-cluster,ai.clipper.name=model,ai.clipper.model_container.label=m_1",
        "ai.clipper.container.label=default-cluster,ai.clipper.name=model,ai.clipper.model_container.label=m_3"]
    assert [n for n in kube.names("deployment") if "deployment-at" in n] == ["m-2-deployment-at-default-cluster",
                                                                              "other-1-deployment-at-default-cluster"]
    assert not [n for n in kube.names("pod") if n.startswith(("m-1-", "m-3-"))]
    cm.stop_all_model_containers()
    assert [n for n in kube.names("deployment") if "deployment-at" in n] == []
    assert "query-frontend-at-default-cluster" in kube.names("deployment")


# ---------------------------------------------------------------------------------------------- stop, state, logs


def test_stop_all_removes_everything_of_the_cluster(kube: FakeKube) -> None:
    cm = manager(kube)
    cm.start_clipper()
    cm.deploy_model("m", "1", "doubles", IMAGE, 2)
    cm.stop_all(graceful=False)
    assert [k for k in kube.objects if k[0] != "pod"] == []
    assert kube.names("pod") == []
    deletes = [kw for m, kw in kube.calls if m == "delete_collection_namespaced_deployment"]
    assert deletes[-1] == {"namespace": "default", "label_selector": "ai.clipper.container.label=default-cluster",
                           "propagation_policy": "Background", "grace_period_seconds": 0}
    with pytest.raises(ClipperException, match="not started nor connected"):
        cm.get_admin_addr()
    cm.start_clipper()  # starts again, empty
    assert cm.get_num_replicas("m", "1") == 0


def test_keep_state_brings_back_data_tokens_and_replicas(kube: FakeKube) -> None:
    cm = manager(kube)
    cm.start_clipper()
    cm.deploy_model("m", "1", "ints", IMAGE, 3)
    cm.deploy_model("m", "2", "ints", "registry.example.com/m:2", 1)
    tokens = (cm.admin_token, cm.predict_token)
    cm.stop_all(keep_state=True)
    left = sorted(k for k in kube.objects if k[0] != "pod")
    assert left == [("config_map", "default", "clipper-replicas-at-default-cluster"),
                    ("persistent_volume_claim", "default", "redis-data-at-default-cluster"),
                    ("secret", "default", "clipper-tokens-at-default-cluster")]
    again = manager(kube)
    start = len(kube.calls)
    again.start_clipper()
    created = writes(kube, start)
    assert "create_namespaced_persistent_volume_claim redis-data-at-default-cluster" not in created
    assert "replace_namespaced_secret clipper-tokens-at-default-cluster" in created
    assert (again.admin_token, again.predict_token) == tokens
    assert (again.get_num_replicas("m", "1"), again.get_num_replicas("m", "2")) == (3, 1)
    env = kube.get("deployment", "m-2-deployment-at-default-cluster")["spec"]["template"]["spec"]["containers"][0]
    assert env["image"] == "registry.example.com/m:2"
    assert {"name": "CLIPPER_INPUT_TYPE", "value": "integers"} in env["env"]
    assert "clipper-replicas-at-default-cluster" not in kube.names("config_map")


def test_get_logs_writes_one_file_per_container(kube: FakeKube, tmp_path: Path) -> None:
    cm = manager(kube)
    cm.start_clipper(num_frontend_replicas=2)
    cm.deploy_model("m", "1", "doubles", IMAGE, 1)
    kube.logs[("m-1-deployment-at-default-cluster-0", "model")] = "model log\n"
    paths = cm.get_logs(str(tmp_path / "logs"))
    names = sorted(Path(p).name for p in paths)
    assert names == ["m-1-deployment-at-default-cluster-0_0.log", "mgmt-frontend-at-default-cluster-0_0.log",
                     "query-frontend-at-default-cluster-0_0.log", "query-frontend-at-default-cluster-1_0.log",
                     "redis-at-default-cluster-0_0.log"]
    assert (tmp_path / "logs" / "m-1-deployment-at-default-cluster-0_0.log").read_text() == "model log\n"
    pods = [kw for m, kw in kube.calls if m == "list_namespaced_pod"]
    assert pods[-1]["label_selector"] == "ai.clipper.container.label=default-cluster"


def test_problems_are_described() -> None:
    pods = [{"metadata": {"name": "p"}, "status": {
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}],
        "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}},
                              {"name": "d", "state": {"terminated": {"reason": "Error", "exitCode": 2}}},
                              {"name": "e", "state": {"waiting": {"reason": "ErrImagePull", "message": "nope"}}}]}}]
    problems = km.pod_problems(pods)
    assert problems == [("p", "Unschedulable", "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."),
                        ("p", "Error", "exit code 2"), ("p", "ErrImagePull", "nope")]
    text = km.describe_problems(problems)
    assert "Insufficient nvidia.com/gpu" in text and "kind load docker-image" in text


# ---------------------------------------------------------------------------------------------- the client


def test_without_the_client_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    cm = KubernetesContainerManager()
    with pytest.raises(ModuleNotFoundError, match=r"clipper-serving\[kubernetes\]"):
        cm.connect()


def test_without_a_configuration_the_error_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClipperException, match="No Kubernetes configuration"):
        KubernetesContainerManager().connect()


def test_the_real_client_over_http(tmp_path: Path) -> None:
    """The same lifecycle through the official client's ApiClient, against the fake behind HTTP: the dicts go out
    unchanged, the paths and query parameters are the client's, its answers come back as the manager expects."""
    from kubernetes import client

    kube = FakeKube()
    with serve_http(kube) as url:
        config = client.Configuration()
        config.host = url
        cm = KubernetesContainerManager(api_client=client.ApiClient(config), poll_interval=0, start_timeout=5,
                                        useInternalIP=True, image_progress=None)
        cm.start_clipper(num_frontend_replicas=3)
        assert cm.get_query_addr() == "203.0.113.7:30001" and cm.num_frontend_replicas == 3
        tokens = (cm.admin_token, cm.predict_token)
        assert all(tokens)
        cm.deploy_model("m", "1", "doubles", IMAGE, 2)
        cm.set_num_replicas("m", "1", "doubles", IMAGE, 3)
        cm.set_num_replicas("m", "1", "doubles", "registry.example.com/m:1", 3)
        assert cm.get_num_replicas("m", "1") == 3
        assert len(cm.get_logs(str(tmp_path))) == 3 + 3 + 1 + 1
        cm.stop_all(keep_state=True)
        cm.start_clipper()
        assert (cm.admin_token, cm.predict_token) == tokens and cm.get_num_replicas("m", "1") == 3
        cm.stop_models({"m": ["1"]})
        cm.stop_all()
    seen = set(kube.http)  # type: ignore[attr-defined]
    assert ("POST", "/apis/apps/v1/namespaces/default/deployments") in seen
    assert ("PATCH", "/apis/apps/v1/namespaces/default/deployments/m-1-deployment-at-default-cluster/scale") in seen
    assert ("PUT", "/apis/apps/v1/namespaces/default/deployments/m-1-deployment-at-default-cluster") in seen
    assert ("GET", "/api/v1/nodes") in seen
    assert [k for k in kube.objects if k[0] != "pod"] == []
    sent = [kw["body"] for m, kw in kube.calls if m == "create_namespaced_deployment"]
    assert sent[0] == k8s.redis_deployment(k8s.ClusterSpec(num_frontend_replicas=3))


def test_build_model_builds_with_docker_and_pushes_to_the_registry(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """`build_model` is the Docker manager's build (faked here: no Docker tests in this module) plus a push."""
    import clipper.managers.docker as docker_manager

    built, pushed = [], []

    class Images:
        def push(self, repo: str, tag: str, stream: bool, decode: bool) -> list[dict[str, Any]]:
            pushed.append(f"{repo}:{tag}")
            return [{"status": "Pushed", "id": "l1"}]

    class Builder:
        def __init__(self, cluster_name: str, image_progress: Any) -> None:
            self.cluster_name = cluster_name
            self.docker_client = type("Client", (), {"images": Images()})()

        def build_model(self, name: str, version: str, path: str, base: str, registry: str | None,
                        pkgs: Any) -> str:
            built.append((name, version, path, base, registry, pkgs))
            return f"{registry + '/' if registry else ''}{self.cluster_name}-{name}:{version}"

    monkeypatch.setattr(docker_manager, "DockerContainerManager", Builder)
    cm = KubernetesContainerManager(container_registry="reg.example.com/t", image_progress=None)
    assert cm.build_model("m", "1", "/models/m", "default", pkgs_to_install=["numpy"]) == (
        "reg.example.com/t/default-cluster-m:1")
    assert built == [("m", "1", "/models/m", "default", "reg.example.com/t", ["numpy"])]
    assert pushed == ["reg.example.com/t/default-cluster-m:1"]
    local = KubernetesContainerManager(image_progress=None)
    with caplog.at_level(logging.WARNING, "clipper.managers.kubernetes"):
        assert local.build_model("m", "2", "/models/m", "default") == "default-cluster-m:2"
    assert "kind load docker-image default-cluster-m:2" in caplog.text
    assert pushed == ["reg.example.com/t/default-cluster-m:1"]


def test_an_unreachable_api_server_is_one_clipper_error(kube: FakeKube) -> None:
    import urllib3

    def refused(method: str, kwargs: dict[str, Any]) -> Any:
        raise urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/default", "Connection refused")  # type: ignore[arg-type]

    kube.call = refused  # type: ignore[method-assign]
    with pytest.raises(ClipperException, match="Cannot reach the Kubernetes API server .read_namespace.*refused"):
        manager(kube).connect()


def test_models_need_a_running_cluster_and_stopping_nothing_is_fine(kube: FakeKube) -> None:
    cm = manager(kube)
    with pytest.raises(ClipperException, match="No Clipper query frontend to attach model container to"):
        cm.deploy_model("m", "1", "doubles", IMAGE)
    assert writes(kube) == []
    cm.stop_all()  # nothing there: nothing to do
    manager(kube, namespace="gone").stop_all()
    assert [w for w in writes(kube) if not w.startswith("delete")] == []
