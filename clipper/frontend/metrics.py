"""`GET /metrics` in Clipper's JSON shape: every leaf value is a string.

Besides Clipper's names, the JSON has the totals a reader needs to compute windows from deltas (the
management frontend's status page does): `app:<a>:num_defaults` and `internal:prediction_cache_hits`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import orjson

from .. import rust_core

_TICK_SECONDS = 5.0


class Meter:
    """Event count with an overall rate and 1/5/15-minute EWMA rates, ticked every 5 s."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.count = 0
        self.ewma = {1: 0.0, 5: 0.0, 15: 0.0}
        self._ticked_count = 0
        self._primed = False

    def tick(self, count: int) -> None:
        """Feeds the current total count; call every 5 seconds."""
        self.count = count
        rate = (count - self._ticked_count) / _TICK_SECONDS
        self._ticked_count = count
        for minutes, value in self.ewma.items():
            alpha = 1 - math.exp(-_TICK_SECONDS / 60 / minutes)
            self.ewma[minutes] = rate if not self._primed else value + alpha * (rate - value)
        self._primed = True

    def report(self) -> dict[str, str]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "unit": "events per second",
            "rate": f"{self.count / elapsed:.6f}",
            "rate_1min": f"{self.ewma[1]:.6f}",
            "rate_5min": f"{self.ewma[5]:.6f}",
            "rate_15min": f"{self.ewma[15]:.6f}",
        }


def histogram(unit: str, values: Iterable[float]) -> dict[str, str]:
    """Clipper's histogram summary of a window of samples."""
    samples = sorted(values)
    n = len(samples)
    if n == 0:
        zeros = dict.fromkeys(("min", "max", "mean", "std_dev", "p50", "p95", "p99"), "0")
        return {"unit": unit, "size": "0", **zeros}
    mean = sum(samples) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in samples) / n)

    def percentile(p: float) -> float:
        rank = min(max(p * (n + 1), 1.0), float(n)) - 1
        lo = int(rank)
        hi = min(lo + 1, n - 1)
        return samples[lo] + (rank - lo) * (samples[hi] - samples[lo])

    return {
        "unit": unit,
        "size": str(n),
        "min": str(samples[0]),
        "max": str(samples[-1]),
        "mean": f"{mean:.6f}",
        "std_dev": f"{std:.6f}",
        "p50": f"{percentile(0.5):.6f}",
        "p95": f"{percentile(0.95):.6f}",
        "p99": f"{percentile(0.99):.6f}",
    }


def engine_histogram(unit: str, summary: dict) -> dict[str, str]:
    """Clipper's histogram shape from a summary computed by the engine."""
    out = {"unit": unit, "size": str(min(summary["count"], rust_core.SAMPLE_WINDOW))}
    for key in ("min", "max", "mean", "std_dev", "p50", "p95", "p99"):
        out[key] = str(summary[key])
    return out


def ratio(num: int, denom: int) -> dict[str, str]:
    return {"ratio": f"{num / denom:.6f}" if denom else "nan"}


class Metrics:
    """Builds the `/metrics` body from the app counters and the engine's statistics."""

    def __init__(self, server) -> None:
        self.server = server
        self.meters: dict[str, Meter] = {}

    def tick(self) -> None:
        for name, app in self.server.apps.items():
            self.meters.setdefault(name, Meter()).tick(app.predictions)

    def render(self) -> bytes:
        engine = self.server.engine
        apps = self.server.apps
        counters, ratios, meters, histograms = [], [], [], []
        lookups, hits = engine.cache_counts()
        stats = engine.stats()
        counters.append({"internal:aggregate_num_predictions": {"count": str(sum(s["predictions"] for s in stats))}})
        counters.append({"internal:prediction_cache_lookups": {"count": str(lookups)}})
        counters.append({"internal:prediction_cache_hits": {"count": str(hits)}})
        ratios.append({"internal:prediction_cache_hit_ratio": ratio(hits, lookups)})
        for name, app in sorted(apps.items()):
            counters.append({f"app:{name}:num_predictions": {"count": str(app.predictions)}})
            counters.append({f"app:{name}:num_defaults": {"count": str(app.defaults)}})
            ratios.append({f"app:{name}:default_prediction_ratio": ratio(app.defaults, app.predictions)})
            meter = self.meters.setdefault(name, Meter())
            meter.count = app.predictions
            meters.append({f"app:{name}:prediction_throughput": meter.report()})
            histograms.append({f"app:{name}:prediction_latency": histogram("microseconds", app.recent_latencies())})
        for model_id, s in enumerate(stats):
            model = engine.model_name(model_id)
            if model is None:
                continue
            prefix = f"model:{model[0]}:{model[1]}"
            counters.append({f"{prefix}:num_predictions": {"count": str(s["predictions"])}})
            counters.append({f"{prefix}:num_replicas": {"count": str(s["replicas"])}})
            counters.append({f"{prefix}:queue_length": {"count": str(s["queued"])}})
            histograms.append({f"{prefix}:prediction_latency": engine_histogram("microseconds", s["latency_micros"])})
            histograms.append({f"{prefix}:batch_size": engine_histogram("queries", s["batch_size"])})
        report = {"counters": counters, "ratio_counters": ratios, "meters": meters, "histograms": histograms}
        return orjson.dumps({k: v for k, v in report.items() if v}, option=orjson.OPT_INDENT_2)


#: The Prometheus `outcome` label of each engine status (`App.counters()["by_status"]` is indexed by status).
OUTCOMES: dict[int, str] = {
    rust_core.STATUS_OK: "prediction",
    rust_core.STATUS_TIMEOUT: "default_slo",
    rust_core.STATUS_NO_MODEL: "default_no_model",
    rust_core.STATUS_MODEL_ERROR: "default_model_error",
    rust_core.STATUS_OVERLOADED: "overloaded",
}
if sorted(OUTCOMES) != list(range(len(rust_core.STATUS_NAMES))):
    raise ImportError(f"OUTCOMES does not name every engine status {rust_core.STATUS_NAMES}")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(apps: dict, engine) -> bytes:
    """Prometheus text format (0.0.4): per app outcomes and a latency histogram with buckets derived
    from its SLO; per model predictions, batches, batch sizes, queue depth and replicas; the cache."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("clipper_app_requests_total", "counter", "Answers per application, by outcome.")
    for name, app in sorted(apps.items()):
        for status, count in enumerate(app.counters()["by_status"]):
            outcome = OUTCOMES[status]
            out.append(f'clipper_app_requests_total{{app="{_label(name)}",outcome="{outcome}"}} {count}')
    family("clipper_app_latency_seconds", "histogram",
           "Response latency per application; buckets are fractions of its SLO (0.01 to 3).")
    for name, app in sorted(apps.items()):
        counters = app.counters()
        label = f'app="{_label(name)}"'
        for bound, count in counters["buckets"]:
            le = "+Inf" if bound is None else repr(bound / 1e6)
            out.append(f'clipper_app_latency_seconds_bucket{{{label},le="{le}"}} {count}')
        out.append(f"clipper_app_latency_seconds_sum{{{label}}} {counters['latency_sum_micros'] / 1e6}")
        out.append(f"clipper_app_latency_seconds_count{{{label}}} {counters['buckets'][-1][1]}")
    family("clipper_app_slo_seconds", "gauge", "Latency objective per application.")
    for name, app in sorted(apps.items()):
        out.append(f'clipper_app_slo_seconds{{app="{_label(name)}"}} {app.slo_micros / 1e6}')

    models = []
    for model_id, stats in enumerate(engine.stats()):
        names = engine.model_name(model_id)
        if names is not None:
            models.append((f'model="{_label(names[0])}",version="{_label(names[1])}"', stats))
    family("clipper_model_predictions_total", "counter", "Inputs a model version answered.")
    out += [f"clipper_model_predictions_total{{{m}}} {s['predictions']}" for m, s in models]
    family("clipper_model_batch_size", "summary", "Batch sizes sent to a model version (recent quantiles).")
    for m, s in models:
        for q in ("p50", "p95", "p99"):
            out.append(f'clipper_model_batch_size{{{m},quantile="0.{q[1:]}"}} {s["batch_size"][q]}')
        out.append(f"clipper_model_batch_size_sum{{{m}}} {s['predictions']}")
        out.append(f"clipper_model_batch_size_count{{{m}}} {s['batches']}")
    family("clipper_model_batch_latency_seconds", "summary", "Batch round trips to a model version (recent).")
    for m, s in models:
        for q in ("p50", "p95", "p99"):
            out.append(f'clipper_model_batch_latency_seconds{{{m},quantile="0.{q[1:]}"}} '
                       f'{s["latency_micros"][q] / 1e6}')
    family("clipper_model_queue_depth", "gauge", "Inputs waiting for a replica of a model version.")
    out += [f"clipper_model_queue_depth{{{m}}} {s['queued']}" for m, s in models]
    family("clipper_model_replicas", "gauge", "Connected replicas of a model version.")
    out += [f"clipper_model_replicas{{{m}}} {s['replicas']}" for m, s in models]
    lookups, hits = engine.cache_counts()
    family("clipper_cache_lookups_total", "counter", "Prediction cache lookups.")
    out.append(f"clipper_cache_lookups_total {lookups}")
    family("clipper_cache_hits_total", "counter", "Prediction cache hits.")
    out.append(f"clipper_cache_hits_total {hits}")
    return ("\n".join(out) + "\n").encode()
