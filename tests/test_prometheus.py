"""Prometheus with the cluster: a real Prometheus server (Debian's `prometheus`) started by the managers,
scraping the query frontend and the model replicas it discovers through file_sd, read back through its
HTTP API; the Grafana dashboard's expressions checked against the metrics the cluster really exports.

The local tests need the `prometheus` binary (`apt-get install --no-install-recommends prometheus`) and
are skipped, saying so, without it. The Docker test is marked `docker`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import HTTP_TIMEOUT_S, REPO, make_manager

from clipper import ClipperConnection
from clipper.deployers import python as python_deployer
from clipper.exceptions import ClipperException
from clipper.managers import prometheus
from clipper.managers.local import LocalContainerManager
from clipper.ports import free_port

HAS_PROMETHEUS = shutil.which("prometheus") is not None
needs_prometheus = pytest.mark.skipif(not HAS_PROMETHEUS, reason="needs Debian's `prometheus` binary "
                                      "(apt-get install --no-install-recommends prometheus)")
DASHBOARD = REPO / "examples" / "monitoring" / "grafana-dashboard.json"
#: Scrape interval of the test clusters, and how long a value may take to show up: file_sd changes
#: reach the scrape loops after Prometheus's discovery throttle (5 s), then one or two scrapes.
SCRAPE_S = 1.0
WAIT_S = 40.0
APP, NO_MODEL_APP, MODEL = "prom-app", "prom-no-model", "words"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """`probe()` until it returns something truthy; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what}: not seen within {timeout:g} s (last: {last!r})")


def values_of(addr: str, promql: str, n: int) -> Callable[[], dict[str, float] | None]:
    """A probe for `wait_for`: the query's values once there are `n` of them."""
    def probe() -> dict[str, float] | None:
        got = values(addr, promql)
        return got if len(got) == n else None
    return probe


def values(addr: str, promql: str) -> dict[str, float]:
    """An instant query's result as ``{"label=value,...": number}``."""
    out = {}
    for row in prometheus.query(addr, promql):
        key = ",".join(f"{k}={v}" for k, v in sorted(row["metric"].items()))
        out[key] = float(row["value"][1])
    return out


class Load:
    """Real HTTP clients posting to the query frontend in a thread, until stopped."""

    def __init__(self, query_addr: str) -> None:
        self.url = f"http://{query_addr}"
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prom-load", daemon=True)

    def _run(self) -> None:
        with requests.Session() as s:
            while not self._stop.is_set():
                for app in (APP, APP, APP, NO_MODEL_APP):
                    s.post(f"{self.url}/{app}/predict", json={"input": [1.0, float(self.sent)]},
                           timeout=HTTP_TIMEOUT_S)
                    self.sent += 1
                self._stop.wait(0.02)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=HTTP_TIMEOUT_S)


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A port something listens on: the cluster is asked for it and must take another."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory, taken_port: int) -> Iterator[ClipperConnection]:
    """A local cluster with Prometheus (asked for a taken port), an app with a closure model reporting user
    metrics, and an app without a model (every answer a default)."""
    if not HAS_PROMETHEUS:
        pytest.skip("needs Debian's `prometheus` binary (apt-get install --no-install-recommends prometheus)")
    cm = make_manager(f"prom-{os.getpid()}", tmp_path_factory.mktemp("prom"), use_prometheus=True,
                      prometheus_port=taken_port, prometheus_scrape_interval=SCRAPE_S)
    c = ClipperConnection(cm, health_check_timeout=60)
    try:
        c.start_clipper()
        c.register_application(APP, "doubles", "-1", 1_000_000)
        c.register_application(NO_MODEL_APP, "doubles", "-1", 1_000_000)

        def words(inputs: Any) -> list[str]:
            """A closure model (pickled by value) that reports user metrics (Clipper's API) for every batch."""
            from clipper import metrics

            metrics.add_metric("prom_test_batches", "Counter", "Batches this model saw")
            metrics.add_metric("prom_test_batch_inputs", "Histogram", "Inputs per batch", [1, 2, 4, 8, 16])
            metrics.report_metric("prom_test_batches", 1)
            metrics.report_metric("prom_test_batch_inputs", len(inputs))
            return [str(sum(x)) for x in inputs]

        python_deployer.deploy_python_closure(c, name=MODEL, version=1, input_type="doubles", func=words)
        c.link_model_to_app(APP, MODEL)
        yield c
    finally:
        c.stop_all()


@needs_prometheus
def test_prometheus_runs_with_the_cluster(conn: ClipperConnection, taken_port: int) -> None:
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    addr = conn.get_metric_addr()
    host, port = addr.split(":")
    assert host == "127.0.0.1" and int(port) != taken_port, "a taken prometheus_port is replaced by a free one"
    assert cm.prometheus_port == int(port)
    assert prometheus.ready(addr)
    status = cm.status()
    assert status["metric_addr"] == addr and status["prometheus"]["alive"]
    assert Path(status["prometheus"]["data_dir"]) == cm.prometheus_data_dir.resolve()
    assert (cm.prometheus_data_dir / "wal").is_dir(), "its database is in the cluster's folder"
    replica = status["replicas"][0]
    assert replica["metrics_port"], "each replica gets CLIPPER_METRICS_PORT"
    files = {job: json.loads((cm.prometheus_dir / "targets" / f"{job}.json").read_text()) for job in prometheus.JOBS}
    assert files["query_frontend"] == [{"targets": [cm.get_query_addr()], "labels": {"cluster": cm.cluster_name}}]
    assert files["model_container"] == [{"targets": [f"127.0.0.1:{replica['metrics_port']}"], "labels": {
        "cluster": cm.cluster_name, "model": MODEL, "version": "1", "replica": str(replica["seq"])}}]
    up = wait_for("both targets up", lambda: {k: v for k, v in values(addr, "up").items() if v == 1}
                  if len(values(addr, "up == 1")) == 2 else None)
    assert any("job=query_frontend" in k for k in up) and any(f"job=model_container,model={MODEL}" in k for k in up)


@needs_prometheus
def test_load_is_seen_through_prometheus(conn: ClipperConnection) -> None:
    addr, name = conn.get_metric_addr(), conn.cm.cluster_identifier
    sel = f'cluster="{name}"'
    with Load(conn.get_query_addr()) as load:
        # the request rate: a frontend counter's rate. Waited for above 1/s, not taken at its first value: when
        # the model connects, the app's answers move from the default outcome's series to the ok one, whose rate
        # needs two scrapes, and for one evaluation the sum is the old series' fading rate (0.88 in a CI run).
        rate = wait_for("request rate of the app above 1/s", lambda: values(
            addr, f'sum by (app) (rate(clipper_app_requests_total{{{sel},app="{APP}"}}[5s])) > 1'))
        assert list(rate.values())[0] > 1
        # the default ratio: every answer of the app without a model is a default, none of the other's
        ratio = (f'sum by (app) (rate(clipper_app_requests_total{{{sel},outcome=~"default_.*"}}[10s])) / '
                 f"sum by (app) (rate(clipper_app_requests_total{{{sel}}}[10s]))")
        got = wait_for("default ratios", values_of(addr, ratio, 2))
        assert got == {f"app={APP}": 0.0, f"app={NO_MODEL_APP}": 1.0}
        # a model container's own metric, with the target's labels
        mc = wait_for("clipper_mc_pred_inputs_total", lambda: values(
            addr, f'clipper_mc_pred_inputs_total{{{sel},job="model_container",model="{MODEL}"}} > 0'))
        (key, inputs), = mc.items()
        assert "replica=" in key and "version=1" in key
        # a user metric reported by the model's code
        user = wait_for("user metric prom_test_batches_total", lambda: values(
            addr, f'prom_test_batches_total{{{sel},model="{MODEL}"}} > 0'))
        hist = values(addr, f'prom_test_batch_inputs_sum{{{sel},model="{MODEL}"}}')
        assert list(user.values())[0] >= 1 and list(hist.values())[0] >= 1
    assert load.sent > 0


@needs_prometheus
def test_a_replica_added_later_is_scraped_without_restarting_prometheus(conn: ClipperConnection) -> None:
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    addr = conn.get_metric_addr()
    pid = cm.status()["prometheus"]["pid"]
    up = f'up{{cluster="{cm.cluster_identifier}",job="model_container",model="{MODEL}"}} == 1'
    wait_for("the first replica up", lambda: len(values(addr, up)) == 1)
    conn.set_num_replicas(MODEL, 2)
    seen = wait_for("two replicas up", values_of(addr, up, 2))
    assert {re.search(r"replica=(\d+)", k).group(1) for k in seen} == {str(r["seq"]) for r in cm.status()["replicas"]}
    conn.set_num_replicas(MODEL, 1)
    targets = json.loads((cm.prometheus_dir / "targets" / "model_container.json").read_text())
    assert len(targets) == 1, "the target file follows the replicas"
    wait_for("the removed replica dropped", lambda: len(values(addr, f'up{{cluster="{cm.cluster_identifier}",'
                                                                  f'job="model_container"}}')) == 1)
    assert cm.status()["prometheus"]["pid"] == pid, "Prometheus was not restarted"


def _exposed_names(text: str) -> set[str]:
    """Sample and family names in a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def _dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in data["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def test_dashboard_is_valid_and_has_the_panels() -> None:
    data = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in data["panels"] if p["type"] != "row"}
    for wanted in ("Request rate per app", "Default ratio per app", "Latency percentiles vs SLO",
                   "Batch size (recent quantiles, frontend)", "Queue depth", "Replicas", "Cache hit ratio"):
        assert wanted in titles
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for p in data["panels"]:
        for t in p.get("targets", []):
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


@needs_prometheus
def test_dashboard_exprs_name_metrics_the_cluster_exports(conn: ClipperConnection) -> None:
    """Every ``clipper_*`` name in the dashboard is in a live frontend's or model container's /metrics, and every
    expression parses and evaluates in the cluster's Prometheus."""
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    frontend = requests.get(f"http://{cm.get_query_addr()}/metrics", headers={"Accept": "text/plain"},
                            timeout=HTTP_TIMEOUT_S).text
    port = cm.status()["replicas"][0]["metrics_port"]
    container = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=HTTP_TIMEOUT_S).text
    exported = _exposed_names(frontend) | _exposed_names(container) | {"up"}
    used = {m for expr in _dashboard_exprs() for m in re.findall(r"\b(clipper_[a-z_]+)\b", expr)}
    assert used, "no metric names found in the dashboard"
    assert not used - exported, f"the dashboard names metrics nobody exports: {sorted(used - exported)}"
    assert any(m.startswith("clipper_mc_") for m in used) and any(m.startswith("clipper_app_") for m in used)
    addr = conn.get_metric_addr()
    for expr in _dashboard_exprs():
        if expr.startswith("label_values("):
            continue
        concrete = (expr.replace("$__rate_interval", "10s").replace('=~"$cluster"', '=~".*"')
                    .replace('=~"$app"', '=~".*"'))
        prometheus.query(addr, concrete)  # raises on a bad expression


def test_config_and_the_images_default_config() -> None:
    cfg = json.loads(prometheus.config("/t", 1.5))
    assert cfg["global"]["scrape_interval"] == "1500ms" and prometheus.duration(2) == "2s"
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["query_frontend", "model_container"]
    assert cfg["scrape_configs"][1]["file_sd_configs"][0]["files"] == ["/t/model_container.json"]
    recipe = (REPO / "containers" / "prometheus" / "prometheus.yml").read_text()
    body = "".join(line + "\n" for line in recipe.splitlines() if not line.startswith("#"))
    assert body == prometheus.config("/prometheus/targets"), "containers/prometheus/prometheus.yml is out of date"
    if shutil.which("promtool"):
        recipe_path = REPO / "containers" / "prometheus" / "prometheus.yml"
        done = subprocess.run(["promtool", "check", "config", str(recipe_path)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    with pytest.raises(ClipperException, match="prometheus_scrape_interval"):
        LocalContainerManager("x", prometheus_scrape_interval=0)


def test_without_prometheus(tmp_path: Path) -> None:
    """use_prometheus=False: no server, no target files, replicas without a metrics port; get_metric_addr says so."""
    c = ClipperConnection(make_manager(f"noprom-{os.getpid()}", tmp_path, use_prometheus=False))
    c.start_clipper()
    try:
        cm = c.cm
        assert isinstance(cm, LocalContainerManager)
        status = cm.status()
        assert status["prometheus"] is None and status["metric_addr"] is None
        assert not cm.prometheus_dir.exists() and not cm.prometheus_data_dir.exists()
        with pytest.raises(ClipperException, match=r"runs no Prometheus server.*http://127\.0\.0\.1:\d+/metrics"):
            c.get_metric_addr()
        c.deploy_model("m", 1, "doubles", "python:clipper.model_runtime.models:sum")
        assert cm.status()["replicas"][0]["metrics_port"] is None
    finally:
        c.stop_all()


def test_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Asked for explicitly: a ClipperException naming the package. By default: a warning, and no Prometheus."""
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "prometheus" else which(name, *a, **k))
    cm = make_manager(f"nobin-{os.getpid()}", tmp_path, use_prometheus=True)
    with pytest.raises(ClipperException, match=r"Debian package `prometheus`: apt-get install"):
        cm.start_clipper()
    assert not cm.status()["running"]
    cm = make_manager(f"nobin-{os.getpid()}", tmp_path, use_prometheus=None)
    with caplog.at_level(logging.WARNING, logger="clipper.managers.local"):
        cm.start_clipper()
    try:
        assert "Starting without Prometheus" in caplog.text and "use_prometheus=False" in caplog.text
        assert cm.status()["prometheus"] is None
    finally:
        cm.stop_all()


@needs_prometheus
def test_stop_all_stops_prometheus_and_keep_state_keeps_its_data(tmp_path: Path) -> None:
    cm = make_manager(f"promstop-{os.getpid()}", tmp_path, use_prometheus=True, prometheus_port=0)
    cm.start_clipper()
    rec = cm.status()["prometheus"]
    assert prometheus.ready(cm.get_metric_addr())
    cm.stop_all(keep_state=True)
    assert not cm._alive(rec), "stop_all stops Prometheus"
    assert cm.prometheus_data_dir.is_dir() and not cm.prometheus_dir.exists()
    cm.start_clipper()
    assert prometheus.ready(cm.get_metric_addr())
    cm.stop_all()
    assert not cm.prometheus_data_dir.exists(), "stop_all() forgets Prometheus's data too"
    with pytest.raises(ClipperException, match="runs no Prometheus server"):
        cm.get_metric_addr()


# ---------------------------------------------------------------------- Docker


def _docker_problem() -> str | None:
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed (pip install docker)"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        return f"the Docker engine does not answer: {e}"
    return None


@pytest.mark.docker
def test_docker_cluster_with_prometheus(current_images: float) -> None:
    """clipper/prometheus (built on first use) scrapes the query frontend and a model container found through
    the target files the manager writes into it; a second replica is found too; stop_all removes its volume."""
    problem = _docker_problem()
    if problem:
        pytest.skip(f"needs a Docker engine: {problem}")
    import docker

    from clipper.managers.docker import DockerContainerManager

    name = f"dprom-{uuid.uuid4().hex[:8]}"
    cm = DockerContainerManager(cluster_name=name, clipper_query_port=free_port(), clipper_management_port=free_port(),
                                clipper_rpc_port=free_port(), redis_port=free_port(), prometheus_port=free_port(),
                                docker_network=f"{name}-net", prometheus_scrape_interval=SCRAPE_S,
                                redis_persistence=False, image_progress=None, rebuild_images=True)
    c = ClipperConnection(cm, health_check_timeout=120)
    try:
        c.start_clipper()
        addr = c.get_metric_addr()
        assert addr == f"localhost:{cm.prometheus_port}"
        c.register_application(APP, "doubles", "-1", 1_000_000)
        c.deploy_model(MODEL, 1, "doubles", "clipper/noop-container:0.1.0")
        c.link_model_to_app(APP, MODEL)
        with requests.Session() as s:
            for i in range(20):
                s.post(f"http://{c.get_query_addr()}/{APP}/predict", json={"input": [float(i)]}, timeout=HTTP_TIMEOUT_S)
        sel = f'cluster="{name}"'
        wait_for("the frontend's counter", lambda: values(addr, f'clipper_app_requests_total{{{sel},app="{APP}"}} > 0'),
                 timeout=60)
        wait_for("the container's counter", lambda: values(
            addr, f'clipper_mc_pred_inputs_total{{{sel},job="model_container",model="{MODEL}"}} > 0'), timeout=60)
        c.set_num_replicas(MODEL, 2)
        wait_for("two replicas up", lambda: len(values(
            addr, f'up{{{sel},job="model_container",model="{MODEL}"}} == 1')) == 2, timeout=60)
        other = DockerContainerManager(cluster_name=name, docker_network=f"{name}-net")
        other.connect()
        assert other.get_metric_addr() == addr, "connect() finds Prometheus from its labels"
    finally:
        c.stop_all()
    client = docker.from_env(timeout=60)
    assert not client.volumes.list(filters={"name": cm.prometheus_volume})
