"""The status page: the query frontends' announcements, the monitor's windows, `GET /status/data` over real
processes (Redis, management frontend, query frontend, a model container) under load, and the page itself in
headless Chromium (skipped when no Chromium is installed)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import HTTP_TIMEOUT_S, REPO, START_TIMEOUT_S, Cluster, Frontend

from clipper.frontend.management.status import StatusMonitor, parse_metrics
from clipper.ports import free_port
from clipper.state import RedisServer, StateStore

TOKEN = "status-secret"
SLO_MICROS = 50_000
#: The page polls every 2 s; the management frontends here sample every half second.
SAMPLE_INTERVAL_S = 0.5


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


# ---------------------------------------------------------------------- announcements and windows (no processes)

def test_announcements_expire_and_are_withdrawn(store: StateStore) -> None:
    record = {"id": "qf:1337/7000", "http": "qf:1337", "rpc": "tcp://0.0.0.0:7000", "pid": 1}
    assert store.announce_frontend(record, ttl_s=0.3) is False  # a first announcement
    assert store.announce_frontend(record, ttl_s=0.3) is True  # a renewal of a live one
    store.announce_frontend({**record, "id": "other", "http": "other:1337"}, ttl_s=60)
    assert [f["id"] for f in store.get_frontends()] == ["other", "qf:1337/7000"]
    time.sleep(0.4)
    assert store.get_frontends() == [{**record, "id": "other", "http": "other:1337"}]
    assert store.redis.smembers("clipper:frontends") == {"other"}  # the expired id was dropped
    store.withdraw_frontend("other")
    assert store.get_frontends() == []


def metrics_report(answers: int, defaults: int, *, lookups: int = 0, hits: int = 0, queued: int = 0) -> dict[str, Any]:
    """A query frontend's `/metrics` JSON with one app `a` and one model `m:1`."""
    hist = {"unit": "microseconds", "size": "10", "min": "1", "max": "9", "mean": "5", "std_dev": "1",
            "p50": "1000", "p95": "2000", "p99": "3000"}
    return {"counters": [{"internal:prediction_cache_lookups": {"count": str(lookups)}},
                         {"internal:prediction_cache_hits": {"count": str(hits)}},
                         {"app:a:num_predictions": {"count": str(answers)}},
                         {"app:a:num_defaults": {"count": str(defaults)}},
                         {"model:m:1:num_predictions": {"count": str(answers - defaults)}},
                         {"model:m:1:num_replicas": {"count": "1"}},
                         {"model:m:1:queue_length": {"count": str(queued)}}],
            "histograms": [{"app:a:prediction_latency": hist},
                           {"model:m:1:batch_size": {**hist, "p50": "4", "max": "8", "p95": "8", "mean": "4"}}]}


def test_monitor_windows_come_from_deltas(store: StateStore) -> None:
    store.add_app("a", "doubles", "0", SLO_MICROS)
    store.announce_frontend({"id": "f1", "http": "127.0.0.1:1", "rpc": "tcp://x:1", "pid": 1}, ttl_s=60)
    reports = iter([metrics_report(100, 50), metrics_report(200, 60, lookups=10, hits=5),
                    metrics_report(10, 10, lookups=4, hits=4),  # restarted: counts from zero
                    OSError("connection refused")])

    def fetch(address: str, timeout: float) -> dict[str, Any]:
        report = next(reports)
        if isinstance(report, Exception):
            raise report
        return report

    monitor = StatusMonitor(store, interval_s=1.0, fetch=fetch)
    for _ in range(3):
        monitor.sample()
    data = monitor.data()
    app = data["apps"][0]
    assert app["name"] == "a" and app["slo_micros"] == SLO_MICROS
    # the first sample is the baseline; then +100 answers (+10 defaults), then a restart: +10 (+10)
    assert app["answers_1m"] == 110 and app["default_ratio_1m"] == round(20 / 110, 4)
    assert app["latency_micros"] == {"p50": 1000.0, "p95": 2000.0, "p99": 3000.0}
    assert app["series"]["default_ratio"][-2:] == [0.1, 1.0]
    model = data["models"][0]
    assert (model["name"], model["version"], model["connected_replicas"]) == ("m", "1", 1)
    assert model["batch_size"]["p50"] == 4.0 and model["batch_size"]["max"] == 8.0
    assert data["cache"]["hit_ratio_1m"] == round(9 / 14, 4)
    assert data["frontends"][0]["state"] == "up"
    monitor.sample()
    assert monitor.data()["frontends"][0]["state"] == "down"
    assert monitor.data()["frontends"][0]["error"] == "connection refused"


def test_older_frontends_without_the_new_totals() -> None:
    report = metrics_report(100, 25, lookups=8, hits=2)
    report["counters"] = [c for c in report["counters"]
                          if not any(k.endswith(("num_defaults", "cache_hits")) for k in c)]
    report["ratio_counters"] = [{"app:a:default_prediction_ratio": {"ratio": "0.250000"}},
                                {"internal:prediction_cache_hit_ratio": {"ratio": "0.250000"}}]
    sample = parse_metrics(report)
    assert sample.apps["a"].defaults == 25 and sample.cache_hits == 2


# ---------------------------------------------------------------------- over real processes

class Management:
    """A running `python -m clipper.frontend.management` sampling every SAMPLE_INTERVAL_S."""

    def __init__(self, redis_port: int, log_path: Path, token: str | None = None) -> None:
        self.log_path, self.token = log_path, token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "clipper.frontend.management", "--redis-port", str(redis_port),
                "--port", str(self.port), "--status-interval", str(SAMPLE_INTERVAL_S)]
        if token:
            argv += ["--token", token]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for("the management frontend", self._serving, START_TIMEOUT_S, 0.05)

    def _serving(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        with contextlib.suppress(requests.RequestException):
            return requests.get(self.url + "/admin/ping", timeout=1).status_code == 200
        return False

    def data(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = requests.get(self.url + "/status/data", headers=headers, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
        return r.json()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


class Load:
    """Requests in a background thread until `stop`: batches of fresh inputs to `served` (AIMD batches),
    one repeated input (cache hits), and single requests to `unserved` (defaults: no model linked yet)."""

    def __init__(self, fe: Frontend, served: str, unserved: str) -> None:
        self.fe, self.served, self.unserved = fe, served, unserved
        self.requests = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        rng = random.Random(7)
        while not self._stop.is_set():
            try:
                batch = [[rng.random(), rng.random()] for _ in range(16)] + [[1.0, 2.0]]
                session.post(f"{self.fe.url}/{self.served}/predict", json={"input_batch": batch}, timeout=5)
                session.post(f"{self.fe.url}/{self.unserved}/predict", json={"input": [rng.random()]}, timeout=5)
                self.requests += 2
                time.sleep(0.005)  # a steady load, not all the machine
            except requests.RequestException as e:
                self.errors.append(str(e))
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def system(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Redis with apps `served` (linked to model `m`, AIMD) and `later` (no model yet); a query frontend
    following it; one replica of `m`; a management frontend without a token and one with; load running."""
    workdir = tmp_path_factory.mktemp("status")
    store = StateStore.connect("127.0.0.1", redis_server.port)
    store.redis.flushdb()
    store.add_app("served", "doubles", "-1", SLO_MICROS)
    store.add_app("later", "doubles", "-1", SLO_MICROS)
    store.add_model("m", "1", "doubles", [], "NO_CONTAINER", "DEPRECATED", -1)
    store.add_model("m2", "1", "doubles", [], "NO_CONTAINER", "DEPRECATED", 4)
    store.add_links("served", ["m"])
    cluster = Cluster(workdir)
    open_mgmt = token_mgmt = load = None
    try:
        fe = cluster.frontend(redis_port=redis_server.port)
        container = cluster.container(fe, "m", "sleep", env={"CLIPPER_SLEEP_FIXED_MS": "2"})
        fe.wait_replicas("m", 1)
        cluster.container(fe, "m2", "noop")
        fe.wait_replicas("m2", 1)
        open_mgmt = Management(redis_server.port, workdir / "management.log")
        token_mgmt = Management(redis_server.port, workdir / "management-token.log", token=TOKEN)
        load = Load(fe, "served", "later")
        yield {"store": store, "fe": fe, "container": container, "mgmt": open_mgmt, "token_mgmt": token_mgmt,
               "load": load, "cluster": cluster}
    finally:
        if load is not None:
            load.stop()
        for m in (open_mgmt, token_mgmt):
            if m is not None:
                m.close()
        cluster.close()
        store.close()


def app_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in data["apps"] if a["name"] == name)


def model_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in data["models"] if m["name"] == name)


def loaded(mgmt: Management) -> dict[str, Any] | None:
    """The data once it shows answers of both apps, latencies and batch sizes; else None."""
    data = mgmt.data()
    served, later = app_of(data, "served"), app_of(data, "later")
    ok = (served["answers_1m"] > 0 and later["answers_1m"] > 0 and served["latency_micros"]
          and model_of(data, "m")["batch_size"])
    return data if ok else None


def test_data_route_under_load(system: dict[str, Any]) -> None:
    mgmt: Management = system["mgmt"]
    fe: Frontend = system["fe"]
    data = wait_for("figures under load", lambda: loaded(mgmt))
    assert data["redis"] == {"ok": True, "error": None}
    [frontend] = data["frontends"]
    assert frontend["state"] == "up" and frontend["http"] == f"127.0.0.1:{fe.port}"
    served, later = app_of(data, "served"), app_of(data, "later")
    assert served["slo_micros"] == SLO_MICROS and served["linked_models"] == ["m"]
    assert later["default_ratio_1m"] == 1.0  # no model linked: every answer is the default
    assert served["default_ratio_1m"] is not None  # a share: answers past the SLO are defaults too
    assert served["rate"] > 0 and 0 < served["latency_micros"]["p50"] <= served["latency_micros"]["p99"]
    assert len(served["series"]["rate"]) == len(served["series"]["t"]) >= 2
    m, m2 = model_of(data, "m"), model_of(data, "m2")
    assert m["batch_size_setting"] == -1 and m["batch_size"]["max"] >= 1 and m["current"]
    assert m2["batch_size_setting"] == 4
    assert m["connected_replicas"] == 1 and m["queue"] is not None
    assert [(r["model"], r["state"]) for r in data["replicas"]] == [("m", "up"), ("m2", "up")]
    assert data["cache"]["hits"] > 0 and data["cache"]["hit_ratio_1m"] is not None


def test_token_rule(system: dict[str, Any]) -> None:
    token_mgmt: Management = system["token_mgmt"]
    page = requests.get(token_mgmt.url + "/status", timeout=HTTP_TIMEOUT_S)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "/status/status.js" in page.text
    for path, ctype in (("/status/status.js", "text/javascript"), ("/status/status.css", "text/css")):
        r = requests.get(token_mgmt.url + path, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(ctype)
    assert requests.get(token_mgmt.url + "/status/data", timeout=HTTP_TIMEOUT_S).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(token_mgmt.url + "/status/data", headers=wrong, timeout=HTTP_TIMEOUT_S).status_code == 401
    assert token_mgmt.data()["apps"]


# ---------------------------------------------------------------------- the page in a real browser

def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


CHROMIUM = chromium_binary()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install "
                                    "--no-install-recommends chromium)")


def chromium(profile: Path, *args: str, timeout: float = 60.0) -> str:
    """Runs headless Chromium (its profile in `profile`) with `args`; returns its stdout (the DOM with --dump-dom)."""
    assert CHROMIUM is not None
    argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def page_dom(profile: Path, url: str) -> str:
    """The page's DOM after its script rendered at least one answer of /status/data (virtual time lets the
    fetch and a few polls run before the dump)."""
    dom = chromium(profile, "--virtual-time-budget=5000", "--dump-dom", url)
    assert re.search(r'<body data-updates="[1-9]', dom), dom[:3000]
    return dom


def rows(dom: str, kind: str) -> dict[str, str]:
    """Each table row of `kind` ("app", "model") by its name, as its HTML."""
    return dict(re.findall(rf'<tr class="{kind}" data-{kind}="([^"]+)">(.*?)</tr>', dom, re.S))


def cell(row: str, cls: str) -> str:
    match = re.search(rf'<td class="[^"]*\b{cls}\b[^"]*">([^<]*)', row)
    assert match, (cls, row)
    return match.group(1)


@needs_chromium
def test_page_in_a_browser(system: dict[str, Any], tmp_path: Path) -> None:
    mgmt: Management = system["mgmt"]
    store: StateStore = system["store"]
    wait_for("figures under load", lambda: loaded(mgmt))

    # during load: a row per app with its SLO, defaults and latency; the models with their batch sizes
    first = page_dom(tmp_path, mgmt.url + "/status")
    apps = rows(first, "app")
    assert set(apps) == {"served", "later"}
    assert cell(apps["served"], "slo") == "50.0 ms"
    assert cell(apps["later"], "defaults-1m") == "100.0 %"
    assert re.fullmatch(r"[\d.]+ ms / [\d.]+ ms / [\d.]+ ms", cell(apps["served"], "latency"))
    assert "<polyline" in apps["served"]  # the charts are drawn
    models = rows(first, "model")
    assert cell(models["m:1"], "batch").endswith("AIMD") and cell(models["m2:1"], "batch").endswith("fixed")
    assert 'data-state="up"' in first

    # a model is linked to `later`: the page shows the link, and its figures have moved
    store.add_links("later", ["m2"])
    wait_for("later's answers served by m2", lambda: app_of(mgmt.data(), "later")["series"]["default_ratio"][-1] == 0)
    second = page_dom(tmp_path, mgmt.url + "/status")
    apps2 = rows(second, "app")
    assert cell(apps2["later"], "models") == "m2"
    assert cell(apps2["later"], "defaults-1m") != "100.0 %"
    assert cell(rows(second, "model")["m2:1"], "rate") != cell(models["m2:1"], "rate")

    # a replica is killed: the page lists it as gone
    os.killpg(system["container"].pid, signal.SIGKILL)
    wait_for("the replica shown as gone", lambda: any(r["state"] == "gone" for r in mgmt.data()["replicas"]))
    third = page_dom(tmp_path, mgmt.url + "/status")
    replica_rows = re.findall(r'<tr class="replica" data-state="([^"]+)"><td>([^<]+)</td>', third)
    assert ("gone", "m:1") in replica_rows and ("up", "m2:1") in replica_rows
    assert '<span class="badge gone">gone</span>' in third

    if target := os.environ.get("CLIPPER_STATUS_SCREENSHOT"):  # docs/images/status.png
        chromium(tmp_path, "--virtual-time-budget=5000", "--hide-scrollbars", "--window-size=1280,900",
                 f"--screenshot={Path(target).resolve()}", mgmt.url + "/status")


@needs_chromium
def test_page_with_a_token_in_the_fragment(system: dict[str, Any], tmp_path: Path) -> None:
    token_mgmt: Management = system["token_mgmt"]
    wait_for("figures", lambda: loaded(token_mgmt))
    dom = page_dom(tmp_path, f"{token_mgmt.url}/status#token={TOKEN}")
    assert set(rows(dom, "app")) == {"served", "later"}
    refused = chromium(tmp_path / "fresh", "--virtual-time-budget=3000", "--dump-dom", f"{token_mgmt.url}/status")
    assert '<form id="login">' in refused and not rows(refused, "app")  # no token: the form shows, no data
