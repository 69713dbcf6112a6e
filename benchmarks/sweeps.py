"""The ``sweep``, ``tune`` and ``aimd`` subcommands: load sweeps over batch policies, and what they recommend."""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import loadtest, report, serving
from benchmarks.loadtest import LoadOptions
from benchmarks.procs import log
from benchmarks.serving import Serving, Variant
from benchmarks.throughput import Seeds

SLEEP = "clipper.model_runtime.models:sleep"


@dataclass
class ServeOptions:
    """What to serve: the model, its environment and input type."""

    predict: str = SLEEP
    env: dict[str, str] = field(default_factory=dict)
    input_type: str = "doubles"
    ready_timeout: float = 90.0


def _run(name: str, options: dict, variants: list[Variant], sopts: ServeOptions,
         body: Callable[[Serving, dict], None]) -> int:
    """Start the variants, run ``body(serving, results)``, stop, write the results JSON; exit code."""
    results = report.new_results(name, options)
    log_dir = Path(tempfile.mkdtemp(prefix="clipper-bench-"))
    srv: Serving | None = None
    try:
        with report.recording_errors(results, log_dir):
            srv = serving.start(variants, sopts.predict, log_dir, env=sopts.env, input_type=sopts.input_type,
                                ready_timeout=sopts.ready_timeout)
            body(srv, results)
    finally:
        if srv is not None:
            srv.stop()
            log("stopped the serving processes")
    return report.finish(results, log_dir)


# sweep


@dataclass
class SweepOptions:
    batch_sizes: list[int]
    batch_waits_us: list[int]
    slos_ms: list[float]
    rates: list[float]  # open loop
    connections: list[int]  # closed loop (wrk), used when rates is empty
    load: LoadOptions
    serve: ServeOptions


def run_sweep(o: SweepOptions) -> int:
    """Every variant (batch size x batch wait x SLO) at every load level; table and plot."""
    variants = [Variant(b, w, s) for b, w, s in itertools.product(o.batch_sizes, o.batch_waits_us, o.slos_ms)]
    seeds = Seeds()

    def body(srv: Serving, results: dict) -> None:
        rows: list[dict] = []
        results["rows"] = rows
        for v in variants:
            log(f"sweeping {v.name} ({v.policy}, SLO {v.slo_ms:g} ms)")
            for level in o.rates or o.connections:
                if o.rates:
                    rows.append(loadtest.open_point(srv, v, level, o.load, seeds))
                else:
                    rows.append(loadtest.closed_point(srv, v, int(level), o.load, seeds))
        print(report.format_rows(rows))
        series = {v.policy + (f", SLO {v.slo_ms:g}" if len(o.slos_ms) > 1 else ""): [r for r in rows
                  if r["variant"] == v.name] for v in variants}
        png = report.results_path(results, ".png")
        kind = "open loop (Poisson)" if o.rates else "closed loop (wrk)"
        if report.plot_latency_vs_throughput(series, png, f"{o.serve.predict} {_env_text(o.serve.env)}: {kind}",
                                             o.slos_ms[0] if len(o.slos_ms) == 1 else None,
                                             ylabel="latency (ms)" + (" from scheduled send" if o.rates else ", wrk")):
            results["plot"] = str(png)
            log(f"plot written to {png}")

    return _run("sweep", _opts(o), variants, o.serve, body)


def _env_text(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())


def _opts(o: object) -> dict:
    return asdict(o)  # type: ignore[call-overload]


# capacity sweeps: tune and aimd


def _capacity_table(caps: list[dict]) -> str:
    lines = [f"{'variant':26} {'policy':22} {'repl':>4} {'capacity/s':>11} {'p99 ms':>8} {'default%':>8} "
             f"{'batch mean/p99':>14} {'batch ms p50':>12}"]
    for c in caps:
        b = c["best"] or {}
        bs = b.get("batch_size") or {}
        bl = b.get("batch_latency_ms") or {}
        p99 = (b.get("latency_ms") or {}).get("p99")
        lines.append(
            f"{c['name']:26} {c['policy']:22} {c['variant']['replicas']:>4} {c['capacity']:>11,.0f} "
            f"{'-' if p99 is None else f'{p99:.2f}':>8} {100 * b.get('default_ratio', 0):>8.2f} "
            f"{b.get('mean_batch') or 0:>7.1f}/{bs.get('p99', 0):<6.0f} {bl.get('p50', 0):>12.2f}"
            + (" (rate cap reached)" if c["limited_by_max_rate"] else ""))
    return "\n".join(lines)


def _plot_capacities(caps: list[dict], results: dict, title: str, slo_ms: float) -> None:
    label = {c["name"]: f"{c['policy']}, {c['variant']['replicas']}r" for c in caps}
    series = {label[c["name"]]: c["points"] for c in caps}
    png = report.results_path(results, ".png")
    if report.plot_latency_vs_throughput(series, png, title + " (p99; star: capacity)", slo_ms, p50=False,
                                         marks={label[c["name"]]: c["best"] for c in caps}):
        results["plot"] = str(png)
        log(f"plot written to {png}")


@dataclass
class TuneOptions:
    slo_ms: float
    batch_sizes: list[int]
    batch_waits_us: list[int]
    replicas: list[int]
    target_rate: float | None
    load: LoadOptions
    serve: ServeOptions


def recommend(caps: list[dict], slo_ms: float, target_rate: float | None) -> tuple[str, dict]:
    """Best batch policy per replica count, and how many replicas a target rate needs."""
    best: dict[int, dict] = {}
    for c in caps:
        r = c["variant"]["replicas"]
        if c["capacity"] > 0 and (r not in best or c["capacity"] > best[r]["capacity"]):
            best[r] = c
    if not best:
        return f"no setting met p99 < {slo_ms:g} ms at any rate tried", {}
    lines = []
    for r, c in sorted(best.items()):
        p99 = c["best"]["latency_ms"]["p99"]
        lines.append(f"{r} replica(s): {c['policy']}: {c['capacity']:,.0f} req/s with p99 {p99:.2f} ms")
    one = best.get(1) or best[min(best)]
    per_replica = one["capacity"] / one["variant"]["replicas"]
    rec = {"batch_size": one["variant"]["batch_size"], "batch_wait_micros": one["variant"]["batch_wait_us"],
           "capacity_per_replica": per_replica, "by_replicas": {r: c["capacity"] for r, c in best.items()}}
    if 1 in best and 2 in best:
        rec["scaling_1_to_2"] = best[2]["capacity"] / best[1]["capacity"]
        lines.append(f"scaling from 1 to 2 replicas: x{rec['scaling_1_to_2']:.2f} "
                     "(on this machine; the query frontend and the load generator share its cores)")
    lines.insert(0, f"recommended batch policy for SLO {slo_ms:g} ms: {one['policy']} "
                    f"(batch_size={rec['batch_size']}, batch_wait_micros={rec['batch_wait_micros']})")
    if target_rate:
        eff = min(rec.get("scaling_1_to_2", 2.0) / 2, 1.0)  # per-replica efficiency seen from 1 to 2
        n = max(1, math.ceil(target_rate / (per_replica * (eff if target_rate > per_replica else 1.0))))
        rec["replicas_for_target"] = n
        lines.append(f"for {target_rate:,.0f} req/s: {n} replica(s) "
                     f"({per_replica:,.0f} req/s per replica, {eff:.0%} efficiency past one)")
    return "\n".join(lines), rec


def run_tune(o: TuneOptions) -> int:
    """Capacity of each batch policy with each replica count; print a recommendation."""
    variants = [Variant(b, w, o.slo_ms, r)
                for r, b, w in itertools.product(o.replicas, o.batch_sizes, o.batch_waits_us)]
    seeds = Seeds()

    def body(srv: Serving, results: dict) -> None:
        caps = loadtest.find_capacities(srv, variants, o.load, seeds)
        results["capacities"] = caps
        print(_capacity_table(caps))
        text, rec = recommend(caps, o.slo_ms, o.target_rate)
        results["recommendation"] = rec
        print(text)
        title = f"tune {o.serve.predict} {_env_text(o.serve.env)}, SLO {o.slo_ms:g} ms"
        _plot_capacities(caps, results, title, o.slo_ms)

    return _run("tune", _opts(o), variants, o.serve, body)


@dataclass
class AimdOptions:
    slo_ms: float = 20.0
    fixed_ms: float = 1.0
    per_item_us: float = 20.0
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32, 128, 256, 512])
    load_fraction: float = 0.8
    check_duration: float = 10.0
    target_ratio: float = 0.9
    load: LoadOptions = field(default_factory=LoadOptions)


def run_aimd(o: AimdOptions) -> int:
    """Best fixed batch size vs. AIMD for ``sleep`` (fixed + per-item cost), then open loop at a fraction."""
    fixed = [Variant(b, 0, o.slo_ms) for b in o.batch_sizes if b != -1]
    adaptive = Variant(-1, 0, o.slo_ms)
    sopts = ServeOptions(env={"CLIPPER_SLEEP_FIXED_MS": f"{o.fixed_ms:g}", "CLIPPER_SLEEP_PER_ITEM_US":
                              f"{o.per_item_us:g}"})
    seeds = Seeds()

    def body(srv: Serving, results: dict) -> None:
        caps = loadtest.find_capacities(srv, [*fixed, adaptive], o.load, seeds)
        results["capacities"] = caps
        print(_capacity_table(caps))
        best = max(caps[:-1], key=lambda c: c["capacity"])
        aimd = caps[-1]
        ratio = aimd["capacity"] / best["capacity"] if best["capacity"] else None
        rate = o.load_fraction * aimd["capacity"]
        log(f"open loop at {o.load_fraction:.0%} of AIMD's capacity: {rate:,.0f}/s for {o.check_duration:g}s")
        check_opts = LoadOptions(**{**asdict(o.load), "duration": o.check_duration, "warmup": 2.0})
        check = loadtest.open_point(srv, adaptive, rate, check_opts, seeds) if rate > 0 else None
        summary = {
            "best_fixed": best["name"], "best_fixed_capacity": best["capacity"],
            "aimd_capacity": aimd["capacity"], "ratio": ratio, "ratio_target": o.target_ratio,
            "ratio_met": ratio is not None and ratio >= o.target_ratio,
            "aimd_batch_size": (aimd["best"] or {}).get("batch_size"),
            "aimd_batch_latency_ms": (aimd["best"] or {}).get("batch_latency_ms"),
            "check": check, "check_p99_ms": check["latency_ms"]["p99"] if check else None,
            "check_met": bool(check and check["meets_slo"]),
            "check_client_starved": bool(check and check["client_starved"]),
            # the batch AIMD aims at: round trip = 0.5 x SLO (rust_core/src/aimd.rs)
            "aimd_rule_batch": int(max(0.0, (0.5 * o.slo_ms - o.fixed_ms) * 1e3 / o.per_item_us)),
            "model_batch_ms": {b: o.fixed_ms + o.per_item_us * b / 1e3 for b in o.batch_sizes if b > 0},
        }
        results["summary"] = summary
        bs = summary["aimd_batch_size"] or {}
        print(f"best fixed batch size: {best['policy']} at {best['capacity']:,.0f}/s; AIMD {aimd['capacity']:,.0f}/s; "
              f"ratio {'-' if ratio is None else f'{ratio:.3f}'} (target >= {o.target_ratio})")
        print(f"AIMD batch sizes at its capacity (recent batches): p50 {bs.get('p50')} p95 {bs.get('p95')} "
              f"p99 {bs.get('p99')} max {bs.get('max')}; batch round trip ms {summary['aimd_batch_latency_ms']}; "
              f"AIMD's rule aims at batches of {summary['aimd_rule_batch']} (model time = 0.5 x SLO)")
        if check:
            print(f"open loop at {rate:,.0f}/s ({o.load_fraction:.0%}): p50 {check['latency_ms']['p50']} p99 "
                  f"{check['latency_ms']['p99']} ms (SLO {o.slo_ms:g}), defaults {100 * check['default_ratio']:.2f}%,"
                  f" batch mean {check['mean_batch']}, client lag p99 {check['lag_ms']['p99']} ms"
                  f"{' (client starved)' if check['client_starved'] else ''}, RSS max {check['rss']['max_mb']} MB")
        _plot_capacities(caps, results, f"sleep {o.fixed_ms:g} ms + {o.per_item_us:g} us/item, SLO {o.slo_ms:g} ms: "
                                        "fixed batch sizes vs AIMD (open loop)", o.slo_ms)

    return _run("aimd", _opts(o), [*fixed, adaptive], sopts, body)
