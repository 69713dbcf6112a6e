"""Model-container metrics: ``GET /metrics`` on ``$CLIPPER_METRICS_PORT`` of real container processes (Python,
C++, Java) serving a real query frontend, and the user-metrics API (`clipper.metrics`)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from clipper import metrics
from clipper.exceptions import ClipperException
from clipper.model_runtime.metrics import CONTENT_TYPE, MC_METRIC_NAMES, MC_METRICS
from clipper.ports import free_port
from tests.conformance import cpp_build, impl_r, java_build

TIMEOUT_S = 10.0
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)\Z")


def parse(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """Prometheus text: {name + labels: value} and {family: type}; fails on a malformed line."""
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m, f"not a Prometheus sample: {line!r}"
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples, types


def scrape(port: int) -> dict[str, float]:
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == CONTENT_TYPE
    samples, types = parse(r.text)
    for name, kind, _, buckets in MC_METRICS:
        assert types.get(name) == kind, (name, types.get(name))
        if kind == "histogram":
            assert samples[f'{name}_bucket{{le="+Inf"}}'] == samples[f"{name}_count"]
            les = {k.split('"')[1] for k in samples if k.startswith(name + "_bucket")}
            assert les == {repr(float(b)) for b in buckets} | {"+Inf"}, (name, les)
    return samples


def wait_for(port: int, check, timeout: float = TIMEOUT_S) -> dict[str, float]:
    """Scrapes until `check(samples)` holds (a batch is counted just after its answer went out)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports the processes of session `pid` (a process the cluster started, and its children) listen
    on: their socket inodes matched in /proc/net/tcp{,6}."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getsid(int(proc.name)) != pid:
                continue
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def config(*models: tuple[str, str]) -> dict:
    return {"models": [{"name": m, "version": "1", "input_type": t, "batch_size": -1, "batch_wait_micros": 0}
                       for m, t in models],
            "apps": [{"name": m, "input_type": t, "latency_slo_micros": 5_000_000, "default_output": "default",
                      "models": [m]} for m, t in models]}


def predict_each(fe, app: str, n: int, start: float = 0.5) -> list[dict]:
    """`n` predictions one after another, each its own batch (distinct inputs: no cache hits)."""
    return [fe.predict(app, [start + i, 1.0]) for i in range(n)]


def check_counts(samples: dict[str, float], batches: int, inputs: int, errors: int = 0) -> None:
    assert samples["clipper_mc_pred_total"] == batches
    assert samples["clipper_mc_pred_inputs_total"] == inputs
    assert samples["clipper_mc_pred_errors_total"] == errors
    assert samples["clipper_mc_pred_batch_size_count"] == batches
    assert samples["clipper_mc_pred_batch_size_sum"] == inputs
    for name in ("recv_time_ms", "queue_wait_ms", "end_to_end_latency_ms"):
        assert samples[f"clipper_mc_{name}_count"] == batches
    for name in ("parse_time_ms", "handle_time_ms"):
        assert samples[f"clipper_mc_{name}_count"] == batches - errors


# --- the Python runtime ---


def test_counts_equal_predictions_and_batches(cluster) -> None:
    fe = cluster.frontend(config(("noop", "doubles")))
    port = free_port()
    cluster.container(fe, "noop", "noop", env={"CLIPPER_METRICS_PORT": str(port)})
    fe.wait_replicas("noop", 1)
    check_counts(scrape(port), 0, 0)
    answers = predict_each(fe, "noop", 20)
    assert all(a["output"] == 1.0 and not a["default"] for a in answers), answers
    samples = wait_for(port, lambda s: s["clipper_mc_pred_total"] >= 20)
    check_counts(samples, 20, 20)
    assert samples['clipper_mc_pred_batch_size_bucket{le="1.0"}'] == 20
    assert 0 < samples["clipper_mc_end_to_end_latency_ms_sum"] < 20 * 1000
    batch = fe.predict_batch("noop", [[100.5 + i, 2.0] for i in range(7)])
    assert all(not a["default"] for a in batch)
    samples = wait_for(port, lambda s: s["clipper_mc_pred_inputs_total"] >= 27)
    batches = samples["clipper_mc_pred_total"]
    assert 21 <= batches <= 27  # the frontend may split the 7 inputs into several batches
    check_counts(samples, int(batches), 27)
    assert requests.get(f"http://127.0.0.1:{port}/other", timeout=TIMEOUT_S).status_code == 404


def test_failing_model_counts_errors(cluster) -> None:
    fe = cluster.frontend(config(("failing", "doubles")))
    port = free_port()
    cluster.container(fe, "failing", "fail", env={"CLIPPER_METRICS_PORT": str(port)})
    fe.wait_replicas("failing", 1)
    answers = predict_each(fe, "failing", 5)
    assert all(a["default"] for a in answers), answers
    check_counts(wait_for(port, lambda s: s["clipper_mc_pred_errors_total"] >= 5), 5, 5, errors=5)


def test_user_metrics_on_the_same_endpoint(cluster) -> None:
    fe = cluster.frontend(config(("metered", "doubles")))
    port = free_port()
    cluster.container(fe, "metered", "metered", env={"CLIPPER_METRICS_PORT": str(port)})
    fe.wait_replicas("metered", 1)
    predict_each(fe, "metered", 4)
    samples = wait_for(port, lambda s: s.get("custom_inputs_total") == 4)
    assert samples["custom_inputs_total"] == 4
    assert samples['custom_batch_size_bucket{le="1.0"}'] == 4
    assert samples['custom_batch_size_bucket{le="+Inf"}'] == samples["custom_batch_size_count"] == 4
    assert samples["custom_last_batch"] == 1
    check_counts(samples, 4, 4)


def test_no_metrics_port_opens_no_port(cluster) -> None:
    fe = cluster.frontend(config(("quiet", "doubles"), ("quiet2", "doubles")))
    env_without = {k: v for k, v in os.environ.items() if not k.startswith("CLIPPER_METRICS")}
    assert env_without == dict(os.environ), "the test environment sets CLIPPER_METRICS_*"
    proc = cluster.container(fe, "quiet", "metered")  # user metrics still work, recorded in-process
    empty = cluster.container(fe, "quiet2", "noop", env={"CLIPPER_METRICS_PORT": ""})
    fe.wait_replicas("quiet", 1)
    fe.wait_replicas("quiet2", 1)
    assert not predict_each(fe, "quiet", 3)[0]["default"]
    assert not predict_each(fe, "quiet2", 1)[0]["default"]
    assert listening_ports(proc.pid) == set()
    assert listening_ports(empty.pid) == set()


def test_taken_metrics_port_exits_2(cluster, tmp_path: Path) -> None:
    port = free_port()
    fe = cluster.frontend(config(("m", "doubles")))
    first = cluster.container(fe, "m", "noop", env={"CLIPPER_METRICS_PORT": str(port)})
    fe.wait_replicas("m", 1)
    assert port in listening_ports(first.pid)
    env = {**os.environ, "CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "2", "CLIPPER_PORT": str(fe.rpc_port),
           "CLIPPER_METRICS_PORT": str(port)}
    proc = subprocess.run([sys.executable, "-m", "clipper.model_runtime", "--predict",
                           "clipper.model_runtime.models:noop"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "clipper.model_runtime", "--predict",
                          "clipper.model_runtime.models:noop"], env={**env, "CLIPPER_METRICS_PORT": "x"},
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "invalid metrics port 'x'" in bad.stderr


def test_names_are_prometheus_names_in_one_place() -> None:
    assert len(set(MC_METRIC_NAMES)) == len(MC_METRIC_NAMES)
    for name, kind, _, buckets in MC_METRICS:
        assert re.fullmatch(r"clipper_mc_[a-z_]+", name)
        assert kind in ("counter", "histogram")
        assert (kind == "counter") == name.endswith("_total")
        assert list(buckets) == sorted(set(buckets))
    # Clipper's monitoring/metrics_config.yaml names, kept
    for clipper_name in ("pred_total", "recv_time_ms", "parse_time_ms", "handle_time_ms", "end_to_end_latency_ms"):
        assert f"clipper_mc_{clipper_name}" in MC_METRIC_NAMES


# --- the C++, Java and R containers: the same endpoint, the same clipper_mc_* metrics ---


def _cpp(example: str) -> list[str]:
    return [str(cpp_build.binary(f"clipper-{example}"))]


def _java(example: str) -> list[str]:
    return java_build.command({"noop": "ai.clipper.examples.NoopModel",
                               "conformance": "ai.clipper.examples.ConformanceModel"}[example])


def _r(example: str) -> list[str]:
    return ["sh", str(impl_r.R_DIR / "clipper-r-container"), str(impl_r.R_DIR / "examples" / f"{example}.R")]


LANGUAGES = [
    pytest.param(_cpp, marks=pytest.mark.skipif(cpp_build.unavailable() is not None,
                                                reason=str(cpp_build.unavailable())), id="cpp"),
    pytest.param(_java, marks=pytest.mark.skipif(java_build.unavailable() is not None,
                                                 reason=str(java_build.unavailable())), id="java"),
    pytest.param(_r, marks=pytest.mark.skipif(impl_r.available() is not None,
                                              reason=f"needs R with pbdZMQ: {impl_r.available()}"), id="r"),
]


@pytest.mark.parametrize("argv", LANGUAGES)
def test_other_languages_count_batches_and_errors(cluster, argv) -> None:
    fe = cluster.frontend(config(("noop", "doubles"), ("conf", "strings")))
    noop_port, conf_port = free_port(), free_port()
    cluster.command_container(fe, "noop", argv("noop"), env={"CLIPPER_METRICS_PORT": str(noop_port)})
    cluster.command_container(fe, "conf", argv("conformance"), input_type="strings",
                              env={"CLIPPER_METRICS_PORT": str(conf_port)})
    fe.wait_replicas("noop", 1)
    fe.wait_replicas("conf", 1)
    check_counts(scrape(noop_port), 0, 0)
    assert not any(a["default"] for a in predict_each(fe, "noop", 12))
    check_counts(wait_for(noop_port, lambda s: s["clipper_mc_pred_total"] >= 12), 12, 12)
    assert not any(a["default"] for a in fe.predict_batch("noop", [[200.5 + i] for i in range(5)]))
    samples = wait_for(noop_port, lambda s: s["clipper_mc_pred_inputs_total"] >= 17)
    check_counts(samples, int(samples["clipper_mc_pred_total"]), 17)
    assert 13 <= samples["clipper_mc_pred_total"] <= 17
    assert samples["clipper_mc_end_to_end_latency_ms_sum"] > 0
    for word in ("poison", "fine", "poison"):
        answer = fe.predict("conf", word)
        assert answer["default"] == (word == "poison"), answer
    check_counts(wait_for(conf_port, lambda s: s["clipper_mc_pred_total"] >= 3), 3, 3, errors=2)
    assert requests.get(f"http://127.0.0.1:{noop_port}/nothing", timeout=TIMEOUT_S).status_code == 404


@pytest.mark.parametrize("argv", LANGUAGES)
def test_other_languages_without_port_or_with_a_taken_one(cluster, argv) -> None:
    fe = cluster.frontend(config(("quiet", "doubles")))
    quiet = cluster.command_container(fe, "quiet", argv("noop"), env={"CLIPPER_METRICS_PORT": ""})
    fe.wait_replicas("quiet", 1)
    assert listening_ports(quiet.pid) == set()
    port = free_port()
    taken = cluster.command_container(fe, "quiet", argv("noop"), version="2", env={"CLIPPER_METRICS_PORT": str(port)})
    fe.wait_replicas("quiet", 1, version="2")
    assert port in listening_ports(taken.pid)
    env = {**os.environ, "CLIPPER_MODEL_NAME": "quiet", "CLIPPER_MODEL_VERSION": "3",
           "CLIPPER_PORT": str(fe.rpc_port), "CLIPPER_METRICS_PORT": str(port)}
    proc = subprocess.run(argv("noop"), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
    bad = subprocess.run(argv("noop"), env={**env, "CLIPPER_METRICS_PORT": "x"}, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "invalid" in bad.stderr and "CLIPPER_METRICS_PORT" in bad.stderr, bad.stderr


# --- the user-metrics API, in-process (no metrics server here) ---


@pytest.fixture
def registry():
    metrics.REGISTRY.clear()
    yield metrics
    metrics.REGISTRY.clear()


def test_user_metrics_record_in_process(registry) -> None:
    registry.add_metric("custom_count", "Counter", "a counter")
    registry.add_metric("custom_count", "Counter", "added again: ignored")
    registry.add_metric("custom_level", "Gauge", "a gauge", buckets=[1, 2])  # buckets ignored, as in Clipper
    registry.add_metric("custom_ms", "Histogram", "a histogram", [1, 10, math.inf])
    registry.add_metric("custom_default", "Histogram", "default buckets")
    registry.add_metric("custom_sum", "Summary", "a summary")
    for v in (0.5, 5, 50):
        registry.report_metric("custom_count", v)
        registry.report_metric("custom_level", v)
        registry.report_metric("custom_ms", v)
        registry.report_metric("custom_sum", v)
    registry.report_metric("custom_default", "7")  # anything float() takes, as in Clipper
    samples, types = parse(registry.render())
    assert types == {"custom_count_total": "counter", "custom_level": "gauge", "custom_ms": "histogram",
                     "custom_default": "histogram", "custom_sum": "summary"}
    assert samples["custom_count_total"] == 55.5
    assert samples["custom_level"] == 50
    assert [samples[f'custom_ms_bucket{{le="{b}"}}'] for b in ("1.0", "10.0", "+Inf")] == [1, 2, 3]
    assert samples["custom_ms_sum"] == 55.5 and samples["custom_ms_count"] == 3
    assert samples['custom_default_bucket{le="5.0"}'] == 0 and samples['custom_default_bucket{le="10.0"}'] == 1
    assert len([k for k in samples if k.startswith("custom_default_bucket")]) == len(metrics.DEFAULT_BUCKETS) + 1
    assert samples["custom_sum_sum"] == 55.5 and samples["custom_sum_count"] == 3


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.add_metric("custom x", "Counter", "d"), "'custom x' is not a Prometheus name"),
    (lambda m: m.add_metric("9lives", "Counter", "d"), "'9lives' is not a Prometheus name"),
    (lambda m: m.add_metric(None, "Counter", "d"), "None is not a Prometheus name"),
    (lambda m: m.add_metric("custom", "counter", "d"), "needs to be one of ['Gauge', 'Counter', 'Histogram', "
                                                       "'Summary']; got 'counter'"),
    (lambda m: m.add_metric("clipper_mc_pred_total", "Counter", "d"), "the prefix 'clipper_mc_' is the container's"),
    (lambda m: m.add_metric("custom", "Histogram", "d", [5, 1]), "must be strictly increasing numbers"),
    (lambda m: m.add_metric("custom", "Histogram", "d", ["a"]), "must be numbers"),
    (lambda m: m.report_metric("custom_never_added", 1), "'custom_never_added' has not been added"),
    (lambda m: (m.add_metric("custom", "Gauge", "d"), m.add_metric("custom", "Counter", "d")),
     "already added as a Gauge, not a Counter"),
    (lambda m: (m.add_metric("custom", "Gauge", "d"), m.report_metric("custom", "high")),
     "value of metric 'custom' must be a number; got 'high'"),
    (lambda m: (m.add_metric("custom", "Counter", "d"), m.report_metric("custom", -1)), "can only be increased"),
    (lambda m: (m.add_metric("custom", "Counter", "d"), m.add_metric("custom_total", "Counter", "d")),
     "would be exported as 'custom_total', like 'custom'"),
])
def test_bad_user_metric_calls_raise_clear_errors(registry, call, message: str) -> None:
    with pytest.raises(metrics.MetricError) as info:
        call(registry)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ClipperException)
