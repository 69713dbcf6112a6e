"""Measured points against a running :class:`~benchmarks.serving.Serving`, and the capacity search.

A point is one load level (open loop: a Poisson rate; closed loop: wrk connections) on one variant,
with latency, outcome counts, the model's batch sizes from ``GET /metrics`` and the frontend's RSS.
Capacity: the highest open-loop rate whose p99 stays under the SLO with at most ``max_default_ratio``
default answers, no non-2xx and no errors.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from benchmarks import openloop, wrkrun
from benchmarks.procs import (
    HOST,
    RssSampler,
    ThreadCpu,
    app_prediction_counts,
    log,
    model_batch_totals,
    model_summary,
    read_metrics,
)
from benchmarks.serving import Serving, Variant
from benchmarks.throughput import Seeds


@dataclass
class LoadOptions:
    """How each point is measured."""

    duration: float = 3.0
    warmup: float = 1.0
    connections: int = 256  # open loop: connection pool size
    max_default_ratio: float = 0.01
    start_rate: float = 1000.0
    max_rate: float = 40000.0
    growth: float = 2.0
    refine: int = 3  # bisection steps between the last passing and the first failing rate
    retries: int = 1  # a rate fails only if this many more tries fail too (the machine is shared)
    starved_retries: int = 2  # extra tries for points where the client itself was starved of CPU
    input_size: int = 4
    wrk_timeout: int = 2  # closed loop: wrk's per-request timeout, seconds


def meets_slo(row: dict, slo_ms: float, max_default_ratio: float) -> bool:
    """p99 under the SLO, few defaults, no non-2xx and no errors."""
    p99 = row["latency_ms"].get("p99")
    return (p99 is not None and p99 < slo_ms and row["default_ratio"] <= max_default_ratio
            and row["non_2xx"] == 0 and row["errors"] == 0 and row["throughput"] > 0)


def client_starved(row: dict, slo_ms: float) -> bool:
    """The load generator sent late (lag p99 over a quarter of the SLO): the machine, not the server,
    decided that point. Its latencies are still counted from the scheduled times."""
    lag = (row.get("lag_ms") or {}).get("p99")
    return lag is not None and lag > slo_ms / 4


def _model_figures(serving: Serving, v: Variant, totals_before: tuple[int, int] | None) -> dict:
    """Batch sizes and batch round trips (the frontend's window of recent batches; ``mean_batch``: exact
    mean over the point, warm-up included), and the app's (predictions, defaults) counters."""
    m = read_metrics(serving.port)
    lat = model_summary(m, v.name, "prediction_latency")
    after = model_batch_totals(serving.port, v.name)
    mean = None
    if totals_before and after and after[0] > totals_before[0]:
        mean = round((after[1] - totals_before[1]) / (after[0] - totals_before[0]), 2)
    return {"batch_size": model_summary(m, v.name, "batch_size"), "mean_batch": mean,
            "batch_latency_ms": {k: lat[k] / 1e3 for k in ("p50", "p99", "mean")} if lat else None,
            "_counts": app_prediction_counts(m, v.name)}


def open_point(serving: Serving, v: Variant, rate: float, opts: LoadOptions, seeds: Seeds) -> dict:
    """One open-loop run at ``rate``/s on variant ``v``."""
    totals = model_batch_totals(serving.port, v.name)
    with RssSampler(serving.frontend_pid, 0.5) as rss:
        r = openloop.run(serving.port, v.name, rate=rate, duration_s=opts.duration, warmup_s=opts.warmup,
                         connections=opts.connections, seed=seeds(), input_size=opts.input_size,
                         drain_s=v.slo_ms / 1e3 + 2.0)
    row = {"variant": v.name, "policy": v.policy, "load": "open", **r.to_dict(), **_model_figures(serving, v, totals),
           "rss": rss.summary()}
    row.pop("_counts")
    row["meets_slo"] = meets_slo(row, v.slo_ms, opts.max_default_ratio)
    row["client_starved"] = client_starved(row, v.slo_ms)
    _log_row(row)
    return row


def closed_point(serving: Serving, v: Variant, connections: int, opts: LoadOptions, seeds: Seeds, *,
                 mode: str = "unique", script_args: Sequence[str] = (), apps: Sequence[str] | None = None,
                 cpu_pids: dict[int, str] | None = None) -> dict:
    """One closed-loop wrk run with ``connections`` on variant ``v`` (4-double inputs, unique).

    ``mode`` and ``script_args``: predict.lua's mode and its arguments after the seed (e.g. ``"body"`` and a
    body file, or ``paths=...``); ``apps``: the apps whose predictions and defaults are counted (default
    ``v``'s); ``cpu_pids`` (pid -> name): each process's CPU µs per request over the measured run, and wrk's
    (``cpu_us_per_request``).
    """
    url = f"http://{HOST}:{serving.port}/{v.name}/predict"
    kw = {"connections": connections, "threads": 1, "mode": mode, "timeout_s": opts.wrk_timeout,
          "script_args": script_args}
    counted = list(apps or [v.name])
    if opts.warmup > 0:
        wrkrun.run(url, duration_s=max(1, round(opts.warmup)), seed=seeds(), **kw)
    totals = model_batch_totals(serving.port, v.name)
    before = _app_counts(serving.port, counted)
    wrk_before = _children_cpu_s()
    with RssSampler(serving.frontend_pid, 0.5) as rss, ThreadCpu(list(cpu_pids or {})) as cpu:
        res, _ = wrkrun.run(url, duration_s=max(1, round(opts.duration)), seed=seeds(), **kw)
    wrk_cpu_s = [a - b for a, b in zip(_children_cpu_s(), wrk_before, strict=True)]
    fig = _model_figures(serving, v, totals)
    fig.pop("_counts")
    after = _app_counts(serving.port, counted)
    defaults = after[1] - before[1] if before and after else 0
    answered = max(res.requests - res.non_2xx, 0)
    lat = res.latency_ms
    row = {"variant": v.name, "policy": v.policy, "load": "closed", "connections": connections,
           "rate": None, "duration_s": res.duration_s, "sent": res.requests, "predictions": answered - defaults,
           "defaults": defaults, "non_2xx": res.non_2xx, "errors": res.errors,
           "throughput": round(answered / res.duration_s, 1) if res.duration_s else 0.0,
           "default_ratio": round(defaults / answered, 5) if answered else 0.0,
           "latency_ms": {"p50": lat.get("50%"), "p95": None, "p99": lat.get("99%"), "p90": lat.get("90%")},
           **fig, "rss": rss.summary()}
    if cpu_pids is not None and res.requests > 0:
        row["cpu_us_per_request"] = {**cpu.micros_per_process(res.requests, cpu_pids),
                                     "wrk": round(sum(wrk_cpu_s) * 1e6 / res.requests, 2)}
        # on loopback, part of the kernel's work of delivering the request to the server is wrk's system time
        row["wrk_user_sys_us_per_request"] = [round(s * 1e6 / res.requests, 2) for s in wrk_cpu_s]
        row["cpu_threads_us_per_request"] = cpu.micros_per(res.requests)
    row["goodput"] = round(row["predictions"] / res.duration_s, 1) if res.duration_s else 0.0
    row["meets_slo"] = meets_slo(row, v.slo_ms, opts.max_default_ratio)
    _log_row(row)
    return row


def _app_counts(port: int, apps: list[str]) -> tuple[int, int] | None:
    """(predictions, defaults) summed over ``apps``; None if one is missing from the metrics."""
    m = read_metrics(port)
    counts = [app_prediction_counts(m, a) for a in apps]
    if any(c is None for c in counts):
        return None
    return sum(c[0] for c in counts if c), sum(c[1] for c in counts if c)


def _children_cpu_s() -> tuple[float, float]:
    """User and system CPU seconds of this process's finished children (wrk, once it has been waited for)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def _log_row(row: dict) -> None:
    lat, bs = row["latency_ms"], row.get("batch_size") or {}
    load = f"{row['rate']:.0f}/s" if row["load"] == "open" else f"{row['connections']} connections"
    lag = row.get("lag_ms", {}).get("p99")
    log(f"  {row['variant']} @ {load}: {row['throughput']:,.0f} answers/s, p50 {lat.get('p50')} p99 "
        f"{lat.get('p99')} ms, defaults {100 * row['default_ratio']:.2f}%, non-2xx {row['non_2xx']}, "
        f"errors {row['errors']}, batch mean {row['mean_batch']} p99 {bs.get('p99')}, "
        f"RSS {row['rss']['max_mb']} MB" + (f", client lag p99 {lag} ms" if lag is not None else "")
        + (" [meets SLO]" if row["meets_slo"] else " [misses SLO]")
        + (" [client starved]" if row.get("client_starved") else ""))


class _Search:
    """Capacity search state of one variant.

    Grow the rate geometrically until two rates in a row fail (one failure may be a spell of noise
    from other work on the machine); if the first rates fail, halve instead until one passes. Then
    bisect ``refine`` times between the highest passing rate and the lowest failing rate above it.
    """

    def __init__(self, v: Variant, opts: LoadOptions) -> None:
        self.v, self.opts = v, opts
        self.points: list[dict] = []
        self.good: dict | None = None
        self.failed: list[float] = []
        self.rate: float | None = opts.start_rate
        self.phase = "grow"
        self.refined = 0
        self._last_failed = False

    def record(self, row: dict) -> None:
        """Feed the outcome at ``self.rate``; sets the next rate (None: done)."""
        o, rate = self.opts, self.rate
        assert rate is not None
        passed = bool(row["meets_slo"])
        if passed and (self.good is None or rate > self.good["rate"]):
            self.good = row
        if not passed:
            self.failed.append(rate)
        if self.phase == "grow":
            if passed or not self._last_failed:
                self._last_failed = not passed
                if rate < o.max_rate:
                    self.rate = min(rate * o.growth, o.max_rate)
                    return
            self.phase = "shrink" if self.good is None else "bisect"
            if self.phase == "shrink":
                self.rate = min(self.failed) / o.growth
                return
        elif self.phase == "shrink":
            if not passed:
                self.rate = rate / o.growth if rate >= o.start_rate / 16 else None
                return
            self.phase = "bisect"
        above = [f for f in self.failed if self.good is not None and f > self.good["rate"]]
        if self.refined < o.refine and above:
            self.refined += 1
            self.rate = (self.good["rate"] + min(above)) / 2  # type: ignore[index]
        else:
            self.rate = None

    def result(self) -> dict:
        g, v = self.good, self.v
        cap = g["throughput"] if g else 0.0
        log(f"{v.name}: capacity {cap:,.0f} answers/s" + (f" (p99 {g['latency_ms']['p99']} ms)" if g else ""))
        return {"variant": asdict(v), "name": v.name, "policy": v.policy, "capacity": cap,
                "capacity_rate": g["rate"] if g else 0.0, "best": g, "points": self.points,
                "limited_by_max_rate": g is not None and g["rate"] >= self.opts.max_rate}


def find_capacities(serving: Serving, variants: list[Variant], opts: LoadOptions, seeds: Seeds) -> list[dict]:
    """Highest sustainable open-loop rate of each variant (see :class:`_Search`).

    The searches are interleaved, one point of each variant per round, so that noise from other work
    on the machine (it comes in spells) falls on all variants alike rather than on one. A rate
    fails only if ``1 + retries`` tries all miss the SLO; a try in which the client was starved
    (:func:`client_starved`) is repeated, up to ``starved_retries`` times per rate.
    """
    searches = [_Search(v, opts) for v in variants]
    round_ = 0
    while any(s.rate is not None for s in searches):
        round_ += 1
        active = [s for s in searches if s.rate is not None]
        log(f"capacity search round {round_}: " + ", ".join(f"{s.v.name} @ {s.rate:,.0f}/s" for s in active))
        for s in active:
            assert s.rate is not None
            tries, starved = 0, 0
            while True:
                row = open_point(serving, s.v, s.rate, opts, seeds)
                s.points.append(row)
                if row["meets_slo"]:
                    break
                if row["client_starved"] and starved < opts.starved_retries:
                    starved += 1
                    continue
                tries += 1
                if tries > opts.retries:
                    break
            s.record(row)
    return [s.result() for s in searches]
