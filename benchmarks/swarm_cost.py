"""The cost per request as a Swarm cluster grows: 1, 2, 3 query frontends, CPU time per request of each process.

    python -m benchmarks.swarm_cost [--duration 10] [--frontends 1 2 3] [--connections 16] [--runs 1]

Brings the images (query_frontend, management_frontend, redis, noop-container) up to date with this checkout and
pins them under the tag ``swarm-cost`` for the run (other checkouts on the machine rebuild the shared tags).
Forms a real Docker Swarm on this machine with the test harness (`tests.swarm_harness`: one dockerd per node,
each in its own network namespace), copies the images onto the nodes, and for each frontend count N starts a
cluster with `SwarmContainerManager` (``num_frontend_replicas=N``, insecure), app ``bench`` (doubles, SLO
100 ms, default ``-1.0``) linked to model ``noop`` (``clipper/noop-container``, N replicas: each serves every
frontend). Once every frontend answers a prediction that is not the default, wrk runs from the host against
all frontends at once (one wrk per frontend, the same connections each, unique inputs: the cache never hits),
a warm-up, then the measured window.

Around the measured window it reads the CPU time of every container of the cluster from its cgroup (the node's
cgroup parent, ``cpuacct.usage`` on cgroup v1, ``cpu.stat`` on v2) and of every thread in it (``/proc``), the
CPU time of each node's engine processes (dockerd, containerd, shims, fuse-overlayfs: the processes in the
node's network namespace outside its containers), wrk's own CPU time, and the machine's (``/proc/stat``);
each frontend's ``GET /metrics`` gives the predictions, the defaults and the batches. CPU time per request is
the CPU time over the requests wrk completed: per role (query frontends, model replicas, Redis, management
frontend, all containers of the role together), per frontend (its CPU over its own requests) and per busiest
thread of each frontend.

Prints a table per N on stdout, progress on stderr, writes ``benchmarks/results/<stamp>-swarm-cost.json``;
stops each cluster and always takes the swarm down (also on Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import itertools
import os
import resource
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks import report, wrkrun
from benchmarks.procs import app_prediction_counts, log, model_replicas, thread_cpu_ticks
from clipper.managers.base import (
    CLIPPER_DOCKER_LABEL,
    CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL,
    CLIPPER_MODEL_CONTAINER_LABEL,
    CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL,
)
from clipper.managers.swarm import CLIPPER_REDIS_LABEL

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # tests/ is a folder of the repository, not an installed package

#: Roles, in the order of the tables, and the container label that marks each.
ROLES = ("query frontend", "model replica", "redis", "management frontend")
ROLE_LABELS = {
    "query frontend": CLIPPER_QUERY_FRONTEND_CONTAINER_LABEL,
    "model replica": CLIPPER_MODEL_CONTAINER_LABEL,
    "redis": CLIPPER_REDIS_LABEL,
    "management frontend": CLIPPER_MGMT_FRONTEND_CONTAINER_LABEL,
}
SLO_MICROS = 100_000
#: The /proc/stat columns of the machine's CPU time (``cpu`` line), in clock ticks.
PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass
class Options:
    """Command-line options of ``python -m benchmarks.swarm_cost``."""

    duration: int = 10
    frontends: list[int] = field(default_factory=lambda: [1, 2, 3])
    connections: int = 16
    runs: int = 1
    warmup: int = 3
    app: str = "bench"
    cluster: str = "swcost"
    wrk_timeout: int = 2
    ready_timeout: float = 120.0
    lock_timeout: float = 900.0


# ------------------------------------------------------------------------------------------ CPU accounting


def cgroup_cpu_file(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> Path | None:
    """The file holding the CPU time of the cgroup a process is in, from its ``/proc/<pid>/cgroup``:
    ``<root>/<cpuacct hierarchy>/<path>/cpuacct.usage`` (v1, nanoseconds) or ``<root>/<path>/cpu.stat``
    (v2, ``usage_usec``). None when neither is there."""
    unified = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        names = controllers.split(",")
        if "cpuacct" in names:
            rel = path.lstrip("/")
            for mount in (controllers, "cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
                candidate = root / mount / rel / "cpuacct.usage"
                if candidate.exists():
                    return candidate
        elif controllers == "":
            unified = path
    if unified is not None:
        candidate = root / unified.lstrip("/") / "cpu.stat"
        if candidate.exists():
            return candidate
    return None


def read_cgroup_cpu_s(path: Path) -> float:
    """Seconds of CPU time in a ``cpuacct.usage`` (ns) or ``cpu.stat`` (``usage_usec``) file."""
    text = path.read_text()
    if path.name == "cpuacct.usage":
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise ValueError(f"no usage_usec in {path}")


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads) in seconds, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def machine_ticks() -> dict[str, int]:
    """The machine's CPU time by kind (``/proc/stat``'s ``cpu`` line), in clock ticks."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return {k: int(v) for k, v in zip(PROC_STAT_FIELDS, fields, strict=False)}


def all_processes_cpu_s() -> dict[int, float]:
    """utime + stime of every process of the machine, in seconds."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            cpu = process_cpu_s(int(entry))
            if cpu is not None:
                out[int(entry)] = cpu
    return out


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (wrk)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Target:
    """A container of the cluster whose CPU time is read around the window."""

    node: str
    role: str
    name: str
    cpu_file: Path
    pids: list[int]
    addr: str | None = None  # a query frontend's host:port


@dataclass
class Targets:
    containers: list[Target]
    #: node name -> pids of its engine processes (not in its containers)
    engines: dict[str, list[int]]


def container_role(labels: dict[str, str]) -> str | None:
    for role in ROLES:
        if ROLE_LABELS[role] in labels:
            return role
    return None


def find_targets(swarm: Any, cluster: str, query_port: int) -> Targets:
    """Every running container of `cluster` on every node (role, cgroup CPU file, pids) and every node's engine
    processes; read before the window so that no Docker API call falls inside it."""
    containers: list[Target] = []
    engines: dict[str, list[int]] = {}
    for node in swarm.nodes:
        in_containers: set[int] = set()
        for c in node.client.containers.list(filters={"label": f"{CLIPPER_DOCKER_LABEL}={cluster}"}):
            role = container_role(c.labels)
            pid = int(c.attrs["State"].get("Pid") or 0)
            if role is None or pid <= 0:
                continue
            cpu_file = cgroup_cpu_file(Path(f"/proc/{pid}/cgroup").read_text())
            if cpu_file is None:
                raise RuntimeError(f"no cgroup CPU file for {c.name} (pid {pid}) on {node.name}")
            procs_file = cpu_file.parent / "cgroup.procs"
            pids = [int(p) for p in procs_file.read_text().split()] if procs_file.exists() else [pid]
            in_containers.update(pids)
            addr = f"{node.ip}:{query_port}" if role == "query frontend" else None
            containers.append(Target(node.name, role, c.name, cpu_file, pids, addr))
        mark = f"/{node.cgroup_parent}/"
        own = []
        for pid in node.pids():
            if pid in in_containers:
                continue
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{pid}/cgroup").read_text():
                    continue  # a container's process (a container of another cluster)
                own.append(pid)
        engines[node.name] = own
    return Targets(containers, engines)


def snapshot(targets: Targets) -> dict[str, Any]:
    """CPU seconds of every target container (and of each of its threads), every engine process, wrk (the
    children of this process) and the machine."""
    return {
        "containers": [read_cgroup_cpu_s(t.cpu_file) for t in targets.containers],
        "threads": [thread_cpu_ticks(t.pids) for t in targets.containers],
        "engines": {node: {pid: process_cpu_s(pid) for pid in pids} for node, pids in targets.engines.items()},
        "wrk": children_cpu_s(),
        "machine": machine_ticks(),
        "processes": all_processes_cpu_s(),
        "t": time.monotonic(),
    }


def _us(seconds: float, requests: int) -> float | None:
    return round(seconds * 1e6 / requests, 2) if requests > 0 else None


def cpu_figures(targets: Targets, before: dict[str, Any], after: dict[str, Any],
                requests_by_addr: dict[str, int]) -> dict[str, Any]:
    """CPU per request from two snapshots: per role, per container, per frontend (and its busiest threads),
    per node's engine processes, wrk's; the machine's busy cores over the window."""
    total = sum(requests_by_addr.values())
    hz = os.sysconf("SC_CLK_TCK")
    per_role = dict.fromkeys(ROLES, 0.0)
    containers = []
    for i, t in enumerate(targets.containers):
        seconds = after["containers"][i] - before["containers"][i]
        per_role[t.role] += seconds
        t_before, t_after = before["threads"][i], after["threads"][i]
        threads = {k: (v - t_before.get(k, 0)) / hz for k, v in t_after.items() if v > t_before.get(k, 0)}
        mine = requests_by_addr.get(t.addr or "", 0) if t.role == "query frontend" else total
        busiest = sorted(threads.items(), key=lambda kv: -kv[1])[:4]
        containers.append({
            "node": t.node, "role": t.role, "name": t.name, "addr": t.addr, "cpu_s": round(seconds, 4),
            "us_per_request": _us(seconds, mine), "us_per_request_of_all": _us(seconds, total),
            "cores": round(seconds / (after["t"] - before["t"]), 3),
            "busiest_threads_us_per_request": {k.split("/", 1)[1]: _us(s, mine) for k, s in busiest},
        })
    engines: dict[str, dict[str, float]] = {}
    engine_total = 0.0
    for node, pids in after["engines"].items():
        by_name: dict[str, float] = {}
        for pid, cpu in pids.items():
            was = before["engines"].get(node, {}).get(pid)
            if cpu is None or was is None:
                continue
            name = process_name(pid)
            by_name[name] = by_name.get(name, 0.0) + (cpu - was)
        engine_total += sum(by_name.values())
        engines[node] = {k: _us(v, total) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v > 0}
    ours = {pid for t in targets.containers for pid in t.pids} | {p for ps in targets.engines.values() for p in ps}
    others: dict[str, float] = {}
    for pid, cpu in after["processes"].items():
        was = before["processes"].get(pid, 0.0)  # a process started during the window: all of its time
        if pid not in ours and cpu > was:
            name = process_name(pid)
            others[name] = others.get(name, 0.0) + cpu - was
    ticks = {k: after["machine"][k] - before["machine"].get(k, 0) for k in after["machine"]}
    window = after["t"] - before["t"]
    busy = sum(v for k, v in ticks.items() if k not in ("idle", "iowait"))
    wrk_s = after["wrk"] - before["wrk"]
    accounted = sum(per_role.values()) + engine_total + wrk_s
    return {
        "requests": total,
        "us_per_request": {role: _us(s, total) for role, s in per_role.items()},
        "containers_us_per_request": _us(sum(per_role.values()), total),
        "engines_us_per_request": _us(engine_total, total),
        "engines": engines,
        "wrk_us_per_request": _us(wrk_s, total),
        "machine": {
            "window_s": round(window, 3),
            "busy_cores": round(busy / hz / window, 3) if window > 0 else None,
            "us_per_request": {k: _us(v / hz, total) for k, v in ticks.items() if v},
            "busy_us_per_request": _us(busy / hz, total),
            # busy time of the machine outside the containers, the engines and wrk: softirq of the bridge and
            # veths, this script, other work on the machine
            "unaccounted_us_per_request": _us(busy / hz - accounted, total),
            # the other processes of the machine that ran during the window, busiest first (by command name;
            # this script is one of them; processes that ended within the window are missing)
            "other_processes_us_per_request": {k: _us(v, total) for k, v in
                                               sorted(others.items(), key=lambda kv: -kv[1])[:8] if v > 0},
        },
        "containers": containers,
    }


# ------------------------------------------------------------------------------------------------ HTTP


def http_get(addr: str, path: str, accept: str = "application/json", timeout: float = 5.0) -> tuple[int, bytes]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


_probe = itertools.count(1)


def probe(addr: str, app: str) -> tuple[bool, str]:
    """POST a fresh input; (True, body) if the answer is a prediction, not the default."""
    host, port = addr.rsplit(":", 1)
    body = orjson.dumps({"input": [-2.0, float(os.getpid()), float(next(_probe)), time.time()]})
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", f"/{app}/predict", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        return False, f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    text = data.decode(errors="replace")
    if resp.status != 200:
        return False, f"HTTP {resp.status}: {text}"
    try:
        return orjson.loads(data).get("default") is False, text
    except (orjson.JSONDecodeError, AttributeError):
        return False, text


def wait_served(addrs: list[str], app: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for addr in addrs:
        while True:
            ok, last = probe(addr, app)
            if ok:
                break
            if time.monotonic() > deadline:
                replicas = {}
                for a in addrs:
                    try:
                        replicas[a] = model_replicas(orjson.loads(http_get(a, "/metrics")[1]), "noop")
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        replicas[a] = f"{type(e).__name__}: {e}"
                raise RuntimeError(f"{addr} gave no prediction (only defaults or errors) within {timeout:.0f} s: "
                                   f"{last[:300]}; replicas of noop connected to each frontend: {replicas}")
            time.sleep(0.25)


def parse_batch_totals(prometheus_text: str, model: str, version: str = "1") -> tuple[int, int] | None:
    """(batches, inputs) sent to a model so far, from a frontend's Prometheus text."""
    label = f'{{model="{model}",version="{version}"}} '
    totals = {}
    for line in prometheus_text.splitlines():
        for kind in ("count", "sum"):
            if line.startswith(f"clipper_model_batch_size_{kind}{label}"):
                totals[kind] = int(float(line.rsplit(" ", 1)[1]))
    return (totals["count"], totals["sum"]) if len(totals) == 2 else None


def frontend_counters(addr: str, app: str, model: str) -> dict[str, int | None]:
    """predictions, defaults, batches, batched inputs of one frontend so far (None where unreadable)."""
    out: dict[str, int | None] = {"predictions": None, "defaults": None, "batches": None, "inputs": None}
    try:
        status, data = http_get(addr, "/metrics")
        if status == 200:
            counts = app_prediction_counts(orjson.loads(data), app)
            if counts is not None:
                out["predictions"], out["defaults"] = counts
        status, data = http_get(addr, "/metrics", accept="text/plain")
        if status == 200:
            totals = parse_batch_totals(data.decode(errors="replace"), model)
            if totals is not None:
                out["batches"], out["inputs"] = totals
    except (OSError, http.client.HTTPException, ValueError) as e:
        log(f"could not read {addr}/metrics: {e}")
    return out


def _diff(after: int | None, before: int | None) -> int | None:
    return after - before if after is not None and before is not None else None


# ------------------------------------------------------------------------------------------------- wrk


class Seeds:
    """Distinct seeds for predict.lua: no two wrk runs (nor two frontends) share an input."""

    def __init__(self) -> None:
        self.next = (int(time.time()) % 100_000) * 1000

    def __call__(self) -> int:
        self.next += 1
        return self.next


def wrk_all(addrs: list[str], opts: Options, seeds: Seeds, duration: int) -> list[tuple[wrkrun.WrkResult, str]]:
    """One wrk per frontend address, all at once; their results in the order of `addrs`."""
    with concurrent.futures.ThreadPoolExecutor(len(addrs)) as pool:
        futures = [pool.submit(wrkrun.run, f"http://{addr}/{opts.app}/predict", connections=opts.connections,
                               duration_s=duration, threads=1, mode="unique", seed=seeds(),
                               timeout_s=opts.wrk_timeout) for addr in addrs]
        return [f.result() for f in futures]


def measure(swarm: Any, conn: Any, opts: Options, seeds: Seeds, n: int, run: int) -> dict[str, Any]:
    """One warm-up and one measured window against every frontend of the running cluster."""
    addrs = conn.cm.get_query_addrs(refresh=True)
    port = int(addrs[0].rsplit(":", 1)[1])
    if opts.warmup > 0:
        log(f"N={n} run {run}: warm-up {opts.warmup} s on {len(addrs)} frontend(s)")
        wrk_all(addrs, opts, seeds, opts.warmup)
    targets = find_targets(swarm, opts.cluster, port)
    fe_nodes = {t.addr: t.node for t in targets.containers if t.role == "query frontend"}
    counters_before = {a: frontend_counters(a, opts.app, "noop") for a in addrs}
    log(f"N={n} run {run}: wrk {opts.duration} s, {opts.connections} connections on each of {', '.join(addrs)}")
    before = snapshot(targets)
    results = wrk_all(addrs, opts, seeds, opts.duration)
    after = snapshot(targets)
    counters_after = {a: frontend_counters(a, opts.app, "noop") for a in addrs}
    per_frontend = []
    for addr, (r, raw) in zip(addrs, results, strict=True):
        b, a = counters_before[addr], counters_after[addr]
        batches, inputs = _diff(a["batches"], b["batches"]), _diff(a["inputs"], b["inputs"])
        per_frontend.append({
            "addr": addr, "node": fe_nodes.get(addr), **r.to_dict(),
            "predictions": _diff(a["predictions"], b["predictions"]), "defaults": _diff(a["defaults"], b["defaults"]),
            "batches": batches, "mean_batch": round(inputs / batches, 2) if batches and inputs is not None else None,
            "wrk_output": raw,
        })
    requests_by_addr = {f["addr"]: f["requests"] for f in per_frontend}
    cpu = cpu_figures(targets, before, after, requests_by_addr)
    for c in cpu["containers"]:
        if c["role"] == "query frontend":
            for f in per_frontend:
                if f["addr"] == c["addr"]:
                    f["cpu_us_per_request"] = c["us_per_request"]
                    f["busiest_threads_us_per_request"] = c["busiest_threads_us_per_request"]
    figures = {
        "frontends": n, "run": run, "loadavg_before": os.getloadavg(),
        "requests": cpu["requests"],
        "requests_per_s": round(sum(f["requests_per_s"] for f in per_frontend), 1),
        "non_2xx": sum(f["non_2xx"] for f in per_frontend),
        "socket_errors": sum(sum(f["socket_errors"].values()) for f in per_frontend),
        "defaults": None if any(f["defaults"] is None for f in per_frontend)
        else sum(f["defaults"] for f in per_frontend),
        "per_frontend": per_frontend, "cpu": cpu,
    }
    log(f"N={n} run {run}: {figures['requests_per_s']:,.0f} req/s, containers "
        f"{cpu['containers_us_per_request']} µs/request, engines {cpu['engines_us_per_request']} µs/request, "
        f"machine busy {cpu['machine']['busy_cores']} cores")
    return figures


# --------------------------------------------------------------------------------------------- cluster


#: The images a cluster runs, and the tag under which this benchmark pins them for its run.
IMAGE_NAMES = ("query_frontend", "management_frontend", "redis", "noop-container")
PIN_TAG = "swarm-cost"


def pinned_ref(name: str) -> str:
    from clipper.image_names import image_ref

    return image_ref(name, tag=PIN_TAG)


def pin_images() -> dict[str, str]:
    """Brings the images up to date with this checkout (what `clipper.images.build_images` does, as the Docker
    tests do: an inspection when they are current, a build when another checkout left them) and tags each as
    ``clipper/<name>:swarm-cost`` under the same build lock, so that no other checkout's build slips in between
    and a rebuild of the shared tags during the run changes nothing here; the pinned reference -> image ID."""
    from clipper import images as builder
    from tests.swarm_harness import main_engine

    client = main_engine(timeout=300)
    log("[images] waiting for the image build lock (other checkouts may be building)")
    # build_images' own body (its lock, its builder), with the tagging inside the lock
    with builder._lock():
        built = builder._Builder(client, os.environ.get(builder.BASE_ENV) or None, False,
                                 log).run(list(IMAGE_NAMES))
        ids = {name: client.images.get(builder.image_ref(name)).id for name in IMAGE_NAMES}
        for name, image_id in ids.items():
            client.images.get(image_id).tag(pinned_ref(name).rsplit(":", 1)[0], PIN_TAG)
    log(f"[images] {'built ' + ', '.join(built) if built else 'up to date'}; pinned as :{PIN_TAG}")
    return {pinned_ref(name): image_id for name, image_id in ids.items()}


def unpin_images() -> None:
    from tests.swarm_harness import main_engine

    client = main_engine(timeout=60)
    for name in IMAGE_NAMES:
        with contextlib.suppress(Exception):  # docker.errors.*: gone already, or in use
            client.images.remove(pinned_ref(name))


def git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_cluster(swarm: Any, opts: Options, seeds: Seeds, n: int) -> list[dict[str, Any]]:
    """Start a cluster with `n` frontends, measure it `opts.runs` times, stop it."""
    from clipper import ClipperConnection
    from clipper.managers.swarm import SwarmContainerManager

    cm = SwarmContainerManager(opts.cluster, docker_client=swarm.manager.client,
                               docker_network=f"{opts.cluster}-net",
                               node_engines={node.name: node.client for node in swarm.nodes}, insecure=True,
                               start_timeout=180, redis_image=pinned_ref("redis"))
    conn = ClipperConnection(cm)
    runs = []
    try:
        log(f"N={n}: starting the cluster ({n} query frontend(s))")
        t0 = time.monotonic()
        conn.start_clipper(query_frontend_image=pinned_ref("query_frontend"),
                           mgmt_frontend_image=pinned_ref("management_frontend"), num_frontend_replicas=n)
        conn.register_application(opts.app, "doubles", "-1.0", SLO_MICROS)
        conn.deploy_model("noop", 1, "doubles", pinned_ref("noop-container"), num_replicas=n)
        conn.link_model_to_app(opts.app, "noop")
        addrs = cm.get_query_addrs(refresh=True)
        if len(addrs) != n:
            raise RuntimeError(f"{n} frontend(s) asked for, {len(addrs)} running: {addrs}")
        wait_served(addrs, opts.app, opts.ready_timeout)
        log(f"N={n}: every frontend serves ({', '.join(addrs)}) after {time.monotonic() - t0:.1f} s")
        for run in range(1, opts.runs + 1):
            runs.append(measure(swarm, conn, opts, seeds, n, run))
    finally:
        log(f"N={n}: stopping the cluster")
        try:
            conn.stop_all()
        except Exception as e:  # noqa: BLE001 - the swarm goes down anyway
            log(f"N={n}: stop_all failed: {type(e).__name__}: {e}")
    return runs


# ---------------------------------------------------------------------------------------------- output


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_tables(runs: list[dict[str, Any]]) -> str:
    """One table per frontend count: a row per run (totals, µs per request per role), then each frontend."""
    lines = []
    for n in sorted({r["frontends"] for r in runs}):
        mine = [r for r in runs if r["frontends"] == n]
        lines.append(f"\nN = {n} frontend(s): CPU µs per request (all requests of the window)")
        lines.append(f"{'run':>3} {'req/s':>9} {'query fe':>8} {'replicas':>8} {'redis':>6} {'mgmt':>6} "
                     f"{'all ctr':>7} {'engines':>7} {'wrk':>6} {'machine':>7} {'softirq':>7} {'other':>6} {'busy':>5} "
                     f"{'non2xx':>6} {'errors':>6} {'defaults':>8}")
        for r in mine:
            cpu, role = r["cpu"], r["cpu"]["us_per_request"]
            lines.append(
                f"{r['run']:>3} {r['requests_per_s']:>9,.0f} {_num(role['query frontend'], '.2f'):>8} "
                f"{_num(role['model replica'], '.2f'):>8} {_num(role['redis'], '.2f'):>6} "
                f"{_num(role['management frontend'], '.2f'):>6} {_num(cpu['containers_us_per_request'], '.2f'):>7} "
                f"{_num(cpu['engines_us_per_request'], '.2f'):>7} {_num(cpu['wrk_us_per_request'], '.2f'):>6} "
                f"{_num(cpu['machine']['busy_us_per_request'], '.2f'):>7} "
                f"{_num(cpu['machine']['us_per_request'].get('softirq'), '.2f'):>7} "
                f"{_num(cpu['machine']['unaccounted_us_per_request'], '.2f'):>6} "
                f"{_num(cpu['machine']['busy_cores'], '.2f'):>5} {r['non_2xx']:>6} {r['socket_errors']:>6} "
                f"{_num(r['defaults'], 'd'):>8}")
        for r in mine:
            for f in r["per_frontend"]:
                threads = ", ".join(f"{k} {v}" for k, v in (f.get("busiest_threads_us_per_request") or {}).items())
                lines.append(f"    run {r['run']} {f['node'] or '?'} {f['addr']}: {f['requests_per_s']:,.0f} req/s, "
                             f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, mean batch {f['mean_batch']}, "
                             f"{_num(f.get('cpu_us_per_request'), '.2f')} µs/request ({threads})")
            replicas = [c for c in r["cpu"]["containers"] if c["role"] == "model replica"]
            for c in replicas:
                threads = ", ".join(f"{k} {v}" for k, v in c["busiest_threads_us_per_request"].items())
                lines.append(f"    run {r['run']} {c['node']} replica {c['name'][:40]}: "
                             f"{_num(c['us_per_request_of_all'], '.2f')} µs per request of all ({threads})")
            engines = "; ".join(f"{node}: " + ", ".join(f"{k} {v}" for k, v in list(e.items())[:3])
                                for node, e in r["cpu"]["engines"].items())
            lines.append(f"    run {r['run']} engines (µs/request): {engines}")
            others = ", ".join(f"{k} {v}" for k, v in r["cpu"]["machine"]["other_processes_us_per_request"].items())
            lines.append(f"    run {r['run']} other processes (µs/request): {others}")
    return "\n".join(lines)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per frontend count: median, min and max over the runs of req/s and of each role's µs per request."""
    out: dict[str, Any] = {}
    for n in sorted({r["frontends"] for r in runs}):
        mine = [r for r in runs if r["frontends"] == n]
        series: dict[str, list[float]] = {"requests_per_s": [r["requests_per_s"] for r in mine]}
        for role in ROLES:
            series[role] = [r["cpu"]["us_per_request"][role] for r in mine
                            if r["cpu"]["us_per_request"][role] is not None]
        series["engines"] = [r["cpu"]["engines_us_per_request"] for r in mine
                             if r["cpu"]["engines_us_per_request"] is not None]
        series["wrk"] = [r["cpu"]["wrk_us_per_request"] for r in mine if r["cpu"]["wrk_us_per_request"] is not None]
        out[str(n)] = {k: {"median": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}
                       for k, v in series.items() if v}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    lines = ["\nmedian [min - max] over the runs"]
    for n, s in summary.items():
        parts = [f"{k} {v['median']:,.2f} [{v['min']:,.2f} - {v['max']:,.2f}]" for k, v in s.items()]
        lines.append(f"N = {n}: " + "; ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main


def _terminate(_signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise KeyboardInterrupt


def run_swarm_cost(opts: Options) -> int:
    from tests import swarm_harness

    results = report.new_results("swarm-cost", asdict(opts))
    results["runs"] = []
    why = swarm_harness.problem()
    if why:
        log(f"cannot form a swarm here: {why}")
        return 2
    results["git_commit"] = git_commit()
    previous = signal.signal(signal.SIGTERM, _terminate)
    swarm = swarm_harness.Swarm(progress=lambda line: log(line))
    started = time.monotonic()
    try:
        results["images"] = pin_images()
        swarm.up(max(opts.frontends), lock_timeout=opts.lock_timeout)
        swarm.load_images(list(results["images"]))
        results["swarm_up_s"] = round(time.monotonic() - started, 1)
        seeds = Seeds()
        for n in opts.frontends:
            results["runs"] += run_cluster(swarm, opts, seeds, n)
    except KeyboardInterrupt:
        results["error"] = "interrupted"
        log("interrupted")
    except Exception as e:  # noqa: BLE001 - reported, the swarm still goes down
        results["error"] = f"{type(e).__name__}: {e}"
        log(f"ERROR: {results['error']}")
    finally:
        try:
            swarm.down()
        finally:
            unpin_images()
            signal.signal(signal.SIGTERM, previous)
    results["total_s"] = round(time.monotonic() - started, 1)
    if results["runs"]:
        results["summary"] = summarize(results["runs"])
        print(format_tables(results["runs"]))
        print(format_summary(results["summary"]))
    path = report.write_results(results)
    log(f"results written to {path}")
    return 0 if results["error"] is None else 1


def parse_args(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m benchmarks.swarm_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=d.duration, help="measured seconds per run")
    p.add_argument("--frontends", type=int, nargs="+", default=d.frontends, help="frontend counts (nodes = max)")
    p.add_argument("--connections", type=int, default=d.connections, help="wrk connections per frontend")
    p.add_argument("--runs", type=int, default=d.runs, help="measured runs per frontend count")
    p.add_argument("--warmup", type=int, default=d.warmup, help="unmeasured seconds before each run")
    p.add_argument("--ready-timeout", type=float, default=d.ready_timeout,
                   help="seconds for every frontend to answer a prediction")
    p.add_argument("--lock-timeout", type=float, default=d.lock_timeout,
                   help="seconds to wait for another process's harness swarm to go")
    a = p.parse_args(argv)
    if a.duration < 1 or a.runs < 1 or a.connections < 1 or any(n < 1 for n in a.frontends):
        p.error("--duration, --runs, --connections and --frontends must be >= 1")
    return Options(duration=a.duration, frontends=a.frontends, connections=a.connections, runs=a.runs,
                   warmup=a.warmup, ready_timeout=a.ready_timeout, lock_timeout=a.lock_timeout)


def main(argv: list[str] | None = None) -> int:
    return run_swarm_cost(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
