"""The ``costs`` subcommand: how the cost of serving grows (issue #19), one curve per run.

- ``size``: the input's size (doubles: 4, 1000, 100000 values; bytes: 1 KB, 100 KB, 1 MB as base64), the
  floor server vs. the pipeline (query frontend + Python no-op container);
- ``apps``: 1, 100, 1000 apps, each with its own model, configured through Redis and the management
  frontend; load on the few whose models have a container, and the time an added app takes to reach the
  query frontend;
- ``replicas``: 1, 2, 4, 8 replicas of a model whose batch sleeps 1 ms (``models:sleep``);
- ``connections``: 1 to 10,000 keep-alive wrk connections: req/s, p99, the frontend's RSS per connection.

Every point is a closed-loop wrk run (``loadtest.closed_point``) with inputs the prediction cache never
hits. Each curve prints progress on stderr and a table on stdout, and writes JSON and a PNG plot to
``benchmarks/results/``.
"""

from __future__ import annotations

import base64
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from benchmarks import report, serving
from benchmarks.loadtest import LoadOptions, closed_point
from benchmarks.procs import (
    Proc,
    http_request,
    log,
    raise_open_files_limit,
    rss_mb,
    wait_ready,
    wait_until,
)
from benchmarks.serving import Serving, Variant
from benchmarks.sweeps import SLEEP
from benchmarks.throughput import NOOP_CONTAINER, Seeds, start_floor
from clipper.frontend.config import DEFAULT_MAX_BODY_BYTES
from clipper.ports import free_port
from clipper.state.redis_server import RedisServer

NOOP = "clipper.model_runtime.models:noop"
CURVES = ("size", "apps", "replicas", "connections")

#: predict.lua's ``body`` mode: what replaces ``@UNIQUE@`` in each request, from (seed, wrk thread, counter).
#: Fixed width, so the body's length is known here. Doubles: the input's first three values (JSON allows
#: the padding spaces); bytes: 24 base64 characters, the input's first 18 bytes.
UNIQUE_FORMAT = {"doubles": "%9d.0,%3d.0,%9d.0", "bytes": "%08x%08x%08x"}


@dataclass
class CostOptions:
    """Options of ``python -m benchmarks costs CURVE``; a ``None`` list takes the curve's default."""

    curve: str
    duration: float = 5.0
    warmup: float = 1.0
    connections: int | None = None  # wrk connections of the size, apps and replicas curves
    ready_timeout: float = 90.0
    wrk_timeout: int = 10
    quick: bool = False
    doubles: list[int] | None = None  # size: values per doubles input
    byte_sizes: list[int] | None = None  # size: bytes per bytes input
    apps: list[int] | None = None
    served: int = 10  # apps: how many of the apps' models get a container (the load goes to those)
    changes: int = 5  # apps: configuration changes timed
    replicas: list[int] | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])  # replicas: fixed batch sizes (-1: AIMD)
    fixed_ms: float = 1.0  # replicas: the model's cost per batch
    levels: list[int] | None = None  # connections: wrk connection counts


#: Each curve's points: (default, --quick).
DEFAULT_POINTS: dict[str, tuple[dict, dict]] = {
    "size": ({"doubles": [4, 1000, 100_000], "byte_sizes": [1024, 100 * 1024, 1024 * 1024]},
             {"doubles": [4, 1000], "byte_sizes": [1024, 100 * 1024]}),
    "apps": ({"apps": [1, 100, 1000]}, {"apps": [1, 100]}),
    "replicas": ({"replicas": [1, 2, 4, 8]}, {"replicas": [1, 2]}),
    "connections": ({"levels": [1, 10, 100, 1000, 10_000]}, {"levels": [1, 10, 100]}),
}
DEFAULT_CONNECTIONS = {"size": 64, "apps": 64, "replicas": 128, "connections": 0}


def resolve(o: CostOptions) -> CostOptions:
    """Fill the curve's defaults in (``--quick``: 1 s points, no warm-up, fewer points)."""
    if o.quick:
        o.duration, o.warmup = 1.0, 0.0
    for key, value in DEFAULT_POINTS[o.curve][1 if o.quick else 0].items():
        if getattr(o, key) is None:
            setattr(o, key, value)
    if o.connections is None:
        o.connections = DEFAULT_CONNECTIONS[o.curve]
    return o


def _load(o: CostOptions) -> LoadOptions:
    return LoadOptions(duration=o.duration, warmup=o.warmup, wrk_timeout=o.wrk_timeout)


def _names(srv: Serving) -> dict[int, str]:
    """pid -> the label of its CPU: the first process is the server, the others the model containers."""
    return {p.popen.pid: ("frontend" if i == 0 else "containers") for i, p in enumerate(srv.procs)}


def _server_us(row: dict) -> float:
    """CPU µs per request of the serving processes (wrk's left out)."""
    return round(sum(v for k, v in (row.get("cpu_us_per_request") or {}).items() if k != "wrk"), 2)


def _run(curve: str, o: CostOptions, body: Callable[[dict, Path, Seeds], None]) -> int:
    """Results head, ``body(results, log_dir, seeds)``, JSON; exit code (1 on error)."""
    results = report.new_results(f"costs-{curve}", asdict(o))
    results["open_files_limit"] = raise_open_files_limit()
    log_dir = Path(tempfile.mkdtemp(prefix="clipper-bench-"))
    with report.recording_errors(results, log_dir):
        body(results, log_dir, Seeds())
    return report.finish(results, log_dir)


def _plot(results: dict, title: str, xlabel: str, panels: list[tuple[str, dict[str, list[tuple[float, float]]]]],
          logy: tuple[bool, ...] = (), xticks: bool = True) -> None:
    """One panel per (y label, {series: [(x, y)]}), log x (``xticks``: ticks at the points' x); a series named
    ``ideal...`` is drawn dashed in the colour of the one before it. The PNG sits next to the results JSON."""
    plt = report.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for i, (ax, (ylabel, series)) in enumerate(zip(axes[0], panels, strict=True)):
        color = 0
        for label, pts in series.items():
            pts = sorted(p for p in pts if p[1] is not None)
            ideal = label.startswith("ideal")
            color += 0 if ideal else 1
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "--" if ideal else "o-", color=f"C{color - 1}",
                        alpha=0.6 if ideal else 1.0, label=label)
        ax.set_xscale("log")
        xs = sorted({p[0] for pts in series.values() for p in pts})
        if xticks and xs:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        if i < len(logy) and logy[i]:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png = report.results_path(results, ".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    results["plot"] = str(png)
    log(f"plot written to {png}")


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


# size


def write_body(kind: str, size: int, path: Path) -> int:
    """Write predict.lua's body file for an input of ``size`` doubles or bytes (``@UNIQUE@`` stands for its
    first values, `UNIQUE_FORMAT`); return the length of each request's body in bytes."""
    rng = random.Random(size)
    if kind == "doubles":
        if size < 4:
            raise ValueError("doubles inputs need at least 4 values (3 make each input unique)")
        head, tail = '{"input":[', "".join(f",{rng.random():.6f}" for _ in range(size - 3)) + "]}"
    else:
        if size < 19:
            raise ValueError("bytes inputs need at least 19 bytes (18 make each input unique)")
        head, tail = '{"input":"', base64.b64encode(rng.randbytes(size - 18)).decode() + '"}'
    path.write_text(head + "@UNIQUE@" + tail)
    return len(head) + len(UNIQUE_FORMAT[kind] % (0, 0, 0)) + len(tail)


def run_size(o: CostOptions) -> int:
    """Floor vs. pipeline for each input size; CPU per request and per KB of body."""
    points = [("doubles", n) for n in o.doubles or []] + [("bytes", n) for n in o.byte_sizes or []]

    def body(results: dict, log_dir: Path, seeds: Seeds) -> None:
        lengths = {p: write_body(p[0], p[1], log_dir / f"{p[0]}-{p[1]}.json") for p in points}
        max_body = max(DEFAULT_MAX_BODY_BYTES, 2 * max(lengths.values(), default=0))
        results["max_body_bytes"] = max_body
        log(f"query frontend --max-body-bytes {max_body} (largest body {max(lengths.values()):,} bytes)")
        v = Variant(-1, 0, 10_000.0)  # an SLO far above the queueing of a closed loop: no default answers
        rows: list[dict] = []
        results["rows"] = rows
        port, procs = start_floor(log_dir)
        floor = Serving(port, procs)
        try:
            wait_ready(port, v.name, procs, o.ready_timeout)
            for kind in ("doubles", "bytes"):
                sizes = [n for k, n in points if k == kind]
                if not sizes:
                    continue
                log(f"starting the pipeline for {kind} inputs")
                srv = serving.start([v], NOOP, log_dir, input_type=kind, ready_timeout=o.ready_timeout,
                                    frontend_args=["--max-body-bytes", str(max_body)])
                try:
                    for n in sizes:
                        path, length = log_dir / f"{kind}-{n}.json", lengths[(kind, n)]
                        for stage, target in (("floor", floor), ("pipeline", srv)):
                            log(f"{kind} x {n:,} ({length / 1024:,.1f} KB body): {stage}")
                            row = closed_point(target, v, o.connections or 1, _load(o), seeds, mode="body",
                                               script_args=[str(path), UNIQUE_FORMAT[kind]], cpu_pids=_names(target))
                            row.update(kind=kind, size=n, stage=stage, body_bytes=length,
                                       server_us_per_request=_server_us(row),
                                       server_us_per_kb=round(_server_us(row) * 1024 / length, 3))
                            rows.append(row)
                finally:
                    srv.stop()
        finally:
            floor.stop()
        print(size_table(rows))
        _plot(results, f"costs size: floor vs. pipeline, wrk {o.connections} connections, unique inputs",
              "request body (KB)", [
                  ("req/s", {f"{k} {s}": [(r["body_bytes"] / 1024, r["throughput"]) for r in rows
                                          if r["kind"] == k and r["stage"] == s]
                             for k in ("doubles", "bytes") for s in ("floor", "pipeline")}),
                  ("server CPU µs per KB of body", {f"{k} {s}": [(r["body_bytes"] / 1024, r["server_us_per_kb"])
                                                                 for r in rows if r["kind"] == k and r["stage"] == s]
                                                    for k in ("doubles", "bytes") for s in ("floor", "pipeline")}),
              ], logy=(True, True), xticks=False)

    return _run("size", o, body)


def size_table(rows: list[dict]) -> str:
    """One line per (input, stage); the pipeline's line has the ratio to the floor's."""
    lines = [f"{'':82} {'CPU µs per request':-^39} {'server':>8}",
             f"{'input':16} {'body bytes':>11} {'stage':8} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'errors':>6} {'defaults':>8} {'frontend':>9} {'container':>9} {'server':>9} {'wrk':>9} {'µs/KB':>8}"]
    floor: dict[tuple[str, int], float] = {}
    for r in rows:
        key = (r["kind"], r["size"])
        if r["stage"] == "floor":
            floor[key] = r["throughput"]
        ratio = r["throughput"] / floor[key] if r["stage"] == "pipeline" and floor.get(key) else None
        cpu = r.get("cpu_us_per_request") or {}
        name = f"{r['kind']} x {r['size']:,}" if r["kind"] == "doubles" else f"bytes {r['size'] / 1024:g} KB"
        lat = r["latency_ms"]
        lines.append(
            f"{name:16} {r['body_bytes']:>11,} {r['stage']:8} {r['throughput']:>8,.0f} "
            f"{_num(ratio, '.3f'):>6} {_num(lat['p50'], '.2f'):>7} {_num(lat['p99'], '.2f'):>7} "
            f"{r['errors'] + r['non_2xx']:>6} {r['defaults']:>8} {_num(cpu.get('frontend'), '.1f'):>9} "
            f"{_num(cpu.get('containers'), '.1f'):>9} {r['server_us_per_request']:>9.1f} "
            f"{_num(cpu.get('wrk'), '.1f'):>9} {r['server_us_per_kb']:>8.2f}")
    return "\n".join(lines)


# apps


class Admin:
    """The management frontend's REST API (``POST /admin/<route>``)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(self, route: str, **body: object) -> None:
        status, data = http_request(self.port, "POST", f"/admin/{route}", orjson.dumps(body), timeout_s=10.0)
        if status != 200:
            raise RuntimeError(f"/admin/{route} answered HTTP {status}: {data[:300]!r}")

    def ping(self) -> tuple[bool, str]:
        try:
            status, data = http_request(self.port, "GET", "/admin/ping")
        except OSError as e:
            return False, str(e)
        return status == 200, data.decode(errors="replace")


def _predict_status(port: int, app: str) -> int:
    """The HTTP status of one predict on ``app`` (0 when the connection fails)."""
    try:
        return http_request(port, "POST", f"/{app}/predict", b'{"input":[1.0]}')[0]
    except OSError:
        return 0


def _time_change(admin: Admin, port: int, app: str, timeout_s: float = 20.0) -> dict:
    """Add ``app`` through the management API; seconds until the query frontend stops answering 404 for it."""
    if _predict_status(port, app) != 404:
        raise RuntimeError(f"app {app} is served before it was added")
    t0 = time.monotonic()
    admin("add_app", name=app, input_type="doubles", default_output="-1.0", latency_slo_micros=100_000)
    posted = time.monotonic() - t0
    while (status := _predict_status(port, app)) == 404:
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"the query frontend did not serve {app} within {timeout_s}s of add_app")
        time.sleep(0.002)
    return {"add_app_ms": round(posted * 1e3, 2), "served_after_ms": round((time.monotonic() - t0) * 1e3, 2),
            "status": status}


def _apps_point(o: CostOptions, n: int, log_dir: Path, seeds: Seeds) -> dict:
    """Redis + management frontend + query frontend with ``n`` apps (one model each), containers for the
    first ``served``; load over those, then the added apps' propagation times."""
    k = min(o.served, n)
    procs: list[Proc] = []
    redis = RedisServer(log_path=log_dir / f"redis-{n}.log").start()
    try:
        mport = free_port()
        procs.append(Proc(f"management-{n}", [sys.executable, "-m", "clipper.frontend.management", "--redis-port",
                                              str(redis.port), "--port", str(mport), "--max-apps",
                                              str(n + o.changes)], log_dir))
        admin = Admin(mport)
        wait_until(admin.ping, procs, o.ready_timeout, 0.05, "the management frontend did not answer")
        t0 = time.monotonic()
        for i in range(n):
            admin("add_model", model_name=f"model{i}", model_version="1", labels=[], input_type="doubles",
                  container_name="local", model_data_path="", batch_size=-1)
            admin("add_app", name=f"app{i}", input_type="doubles", default_output="-1.0",
                  latency_slo_micros=100_000)
            admin("add_model_links", app_name=f"app{i}", model_names=[f"model{i}"])
        configure_s = time.monotonic() - t0
        log(f"{n} apps and models added through the management API in {configure_s:.1f}s")
        port, rpc_port = free_port(), free_port()
        procs.insert(0, Proc(f"query_frontend-{n}", [
            sys.executable, "-m", "clipper.frontend.query", "--redis-port", str(redis.port), "--port", str(port),
            "--rpc-port", str(rpc_port)], log_dir))
        for i in range(k):
            procs.append(Proc(f"model{i}-{n}", NOOP_CONTAINER, log_dir, env={
                "CLIPPER_MODEL_NAME": f"model{i}", "CLIPPER_MODEL_VERSION": "1", "CLIPPER_IP": "127.0.0.1",
                "CLIPPER_PORT": str(rpc_port), "CLIPPER_INPUT_TYPE": "doubles"}))
        for i in range(k):
            wait_ready(port, f"app{i}", procs, o.ready_timeout)
        wait_until(lambda: (_predict_status(port, f"app{n - 1}") == 200, ""), procs, o.ready_timeout, 0.1,
                   f"app{n - 1} was not served")
        time.sleep(1.0)
        idle_rss = rss_mb(procs[0].popen.pid)
        srv = Serving(port, [procs[0], *procs[2:]])  # the management frontend is not part of the query path
        served = [f"app{i}" for i in range(k)]
        row = closed_point(srv, Variant(-1, 0, 100.0), o.connections or 1, _load(o), seeds,
                           script_args=["paths=" + ",".join(f"/{a}/predict" for a in served)], apps=served,
                           cpu_pids=_names(srv))
        changes = [_time_change(admin, port, f"added{j}") for j in range(o.changes)]
        after = [c["served_after_ms"] for c in changes]
        row.update(apps=n, served=k, configure_s=round(configure_s, 2), rss_idle_mb=idle_rss, changes=changes,
                   change_ms={"median": statistics.median(after) if after else None, "max": max(after, default=None),
                              "min": min(after, default=None)})
        log(f"{n} apps: an added app is served {row['change_ms']['median']} ms (median) after add_app is sent")
        return row
    finally:
        for p in reversed(procs):
            p.stop()
        redis.stop()


def run_apps(o: CostOptions) -> int:
    """Throughput, p99, frontend RSS and configuration-change time against the number of apps."""

    def body(results: dict, log_dir: Path, seeds: Seeds) -> None:
        rows: list[dict] = []
        results["rows"] = rows
        results["what"] = (f"each of N apps has its own model; the first min(N, {o.served}) models have one no-op "
                           "container each and wrk rotates its requests over their apps, the other apps are "
                           "configured and idle; RSS is the query frontend's; a change is add_app through the "
                           "management API, timed until the query frontend stops answering 404 for it (idle)")
        log(results["what"])
        for n in o.apps or []:
            rows.append(_apps_point(o, n, log_dir, seeds))
        print(apps_table(rows))
        print(f"what was measured: {results['what']}")
        xs = [r["apps"] for r in rows]
        _plot(results, f"costs apps: wrk {o.connections} connections over the served apps", "apps", [
            ("req/s (served apps)", {"req/s": list(zip(xs, [r["throughput"] for r in rows], strict=True))}),
            ("ms", {"p99": list(zip(xs, [r["latency_ms"]["p99"] for r in rows], strict=True)),
                    "add_app -> served (median)": list(zip(xs, [r["change_ms"]["median"] for r in rows],
                                                           strict=True))}),
            ("query frontend RSS (MB)", {"idle": list(zip(xs, [r["rss_idle_mb"] for r in rows], strict=True)),
                                         "under load (max)": list(zip(xs, [r["rss"]["max_mb"] for r in rows],
                                                                      strict=True))}),
        ])

    return _run("apps", o, body)


def apps_table(rows: list[dict]) -> str:
    """One line per app count."""
    lines = [f"{'apps':>6} {'served':>6} {'config s':>8} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
             f"{'defaults':>8} {'RSS idle':>8} {'RSS load':>8} {'fe µs/req':>9} {'change ms med/max':>17}"]
    for r in rows:
        lat, cpu = r["latency_ms"], r.get("cpu_us_per_request") or {}
        ch = r["change_ms"]
        lines.append(
            f"{r['apps']:>6} {r['served']:>6} {r['configure_s']:>8.1f} {r['throughput']:>9,.0f} "
            f"{_num(lat['p50'], '.2f'):>7} {_num(lat['p99'], '.2f'):>7} {r['errors'] + r['non_2xx']:>6} "
            f"{r['defaults']:>8} {_num(r['rss_idle_mb'], '.1f'):>8} {_num(r['rss']['max_mb'], '.1f'):>8} "
            f"{_num(cpu.get('frontend'), '.1f'):>9} {_num(ch['median'], '.1f'):>8}/{_num(ch['max'], '.1f'):<8}")
    return "\n".join(lines)


# replicas


def run_replicas(o: CostOptions) -> int:
    """Closed-loop throughput of 1, 2, 4, 8 replicas of ``sleep`` (``fixed_ms`` per batch) per batch size."""
    env = {"CLIPPER_SLEEP_FIXED_MS": f"{o.fixed_ms:g}", "CLIPPER_SLEEP_PER_ITEM_US": "0"}

    def body(results: dict, log_dir: Path, seeds: Seeds) -> None:
        rows: list[dict] = []
        results["rows"] = rows
        for r in o.replicas or []:
            variants = [Variant(b, 0, 10_000.0, r) for b in o.batch_sizes]
            log(f"starting {r} replica(s) of sleep ({o.fixed_ms:g} ms per batch) for batch sizes {o.batch_sizes}")
            srv = serving.start(variants, SLEEP, log_dir, env=env, ready_timeout=o.ready_timeout)
            try:
                for v in variants:
                    row = closed_point(srv, v, o.connections or 1, _load(o), seeds, cpu_pids=_names(srv))
                    cpu = row.get("cpu_us_per_request") or {}
                    ideal = r * v.batch_size * 1e3 / o.fixed_ms if v.batch_size > 0 else None
                    row.update(replicas=r, batch_size=v.batch_size, ideal=ideal,
                               efficiency=round(row["throughput"] / ideal, 3) if ideal else None,
                               cores={k: round(us * row["throughput"] / 1e6, 2) for k, us in cpu.items()})
                    rows.append(row)
            finally:
                srv.stop()
        print(replicas_table(rows))
        _plot(results, f"costs replicas: sleep {o.fixed_ms:g} ms per batch, wrk {o.connections} connections",
              "replicas", [
                  ("answers/s", {label: [(r["replicas"], r[key]) for r in rows if r["batch_size"] == b]
                                 for b in o.batch_sizes
                                 for label, key in ((f"batch {b}", "throughput"), (f"ideal, batch {b}", "ideal"))
                                 if key == "throughput" or b > 0}),
                  ("cores busy (frontend + containers + wrk)", {
                      f"batch {b}": [(r["replicas"], round(sum(r["cores"].values()), 2)) for r in rows
                                     if r["batch_size"] == b] for b in o.batch_sizes}),
              ], logy=(True, False))

    return _run("replicas", o, body)


def replicas_table(rows: list[dict]) -> str:
    """One line per (replicas, batch size); ``batch ms``: the median batch round trip the frontend saw (model
    time + RPC); ``cores``: CPU µs per request x answers/s."""
    lines = [f"{'replicas':>8} {'batch':>6} {'answers/s':>10} {'ideal':>8} {'effic.':>6} {'batch mean':>10} "
             f"{'batch ms':>8} {'p50 ms':>7} {'p99 ms':>7} {'defaults':>8} {'cores: frontend':>15} {'containers':>10} "
             f"{'wrk':>5}"]
    for r in rows:
        lat, cores = r["latency_ms"], r["cores"]
        lines.append(
            f"{r['replicas']:>8} {'AIMD' if r['batch_size'] == -1 else r['batch_size']:>6} {r['throughput']:>10,.0f} "
            f"{_num(r['ideal'], ',.0f'):>8} {_num(r['efficiency'], '.2f'):>6} {_num(r['mean_batch'], '.1f'):>10} "
            f"{_num((r.get('batch_latency_ms') or {}).get('p50'), '.2f'):>8} "
            f"{_num(lat['p50'], '.2f'):>7} {_num(lat['p99'], '.2f'):>7} {r['defaults']:>8} "
            f"{_num(cores.get('frontend'), '.2f'):>15} {_num(cores.get('containers'), '.2f'):>10} "
            f"{_num(cores.get('wrk'), '.2f'):>5}")
    return "\n".join(lines)


# connections


def run_connections(o: CostOptions) -> int:
    """req/s, p99 and the frontend's RSS per connection for 1 to 10,000 wrk connections (a fresh pipeline
    each, prediction cache off so that its filling does not count as the connections' memory)."""

    def body(results: dict, log_dir: Path, seeds: Seeds) -> None:
        rows: list[dict] = []
        results["rows"] = rows
        levels = o.levels or []
        max_queue = max(10_000, 2 * max(levels, default=0))
        results["frontend_args"] = ["--cache-size", "0", "--max-queue", str(max_queue)]
        log(f"open files limit {results['open_files_limit']} (wrk and the query frontend inherit it); "
            f"query frontend {' '.join(results['frontend_args'])}")
        v = Variant(-1, 0, 10_000.0)
        for n in levels:
            srv = serving.start([v], NOOP, log_dir, ready_timeout=o.ready_timeout, max_queue=max_queue,
                                frontend_args=["--cache-size", "0"])
            try:
                time.sleep(0.5)
                base = rss_mb(srv.frontend_pid)
                row = closed_point(srv, v, n, _load(o), seeds, cpu_pids=_names(srv))
            finally:
                srv.stop()
            grown = row["rss"]["max_mb"] - base if base is not None and row["rss"]["max_mb"] is not None else None
            row.update(rss_baseline_mb=base, rss_grown_mb=None if grown is None else round(grown, 2),
                       rss_per_connection_kb=None if grown is None else round(grown * 1024 / n, 2))
            rows.append(row)
        print(connections_table(rows))
        xs = [r["connections"] for r in rows]
        _plot(results, "costs connections: wrk keep-alive connections against the pipeline (no-op model)",
              "connections", [
                  ("req/s", {"req/s": list(zip(xs, [r["throughput"] for r in rows], strict=True))}),
                  ("p99 ms", {"p99": list(zip(xs, [r["latency_ms"]["p99"] for r in rows], strict=True))}),
                  ("query frontend RSS growth per connection (KB)",
                   {"(max under load - before) / N": list(zip(xs, [r["rss_per_connection_kb"] for r in rows],
                                                              strict=True))}),
              ], logy=(False, True, True))

    return _run("connections", o, body)


def connections_table(rows: list[dict]) -> str:
    """One line per connection count."""
    lines = [f"{'connections':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'non2xx':>6} "
             f"{'defaults':>8} {'RSS before':>10} {'RSS max':>8} {'KB/conn':>8} {'fe µs/req':>9}"]
    for r in rows:
        lat, cpu = r["latency_ms"], r.get("cpu_us_per_request") or {}
        lines.append(
            f"{r['connections']:>11,} {r['throughput']:>9,.0f} {_num(lat['p50'], '.2f'):>8} "
            f"{_num(lat['p99'], '.2f'):>8} {r['errors']:>6} {r['non_2xx']:>6} {r['defaults']:>8} "
            f"{_num(r['rss_baseline_mb'], '.1f'):>10} {_num(r['rss']['max_mb'], '.1f'):>8} "
            f"{_num(r['rss_per_connection_kb'], '.1f'):>8} {_num(cpu.get('frontend'), '.1f'):>9}")
    return "\n".join(lines)


def run_costs(o: CostOptions) -> int:
    """``costs CURVE``: run one curve."""
    o = resolve(o)
    return {"size": run_size, "apps": run_apps, "replicas": run_replicas, "connections": run_connections}[o.curve](o)
