"""User metrics from model code, exported on the container's Prometheus endpoint (Clipper's metrics API).

    from clipper import metrics              # Clipper: import clipper_admin.metrics as metrics
    metrics.add_metric("custom_words", "Histogram", "Words per input", [10, 50, 100])
    metrics.report_metric("custom_words", 42)

Semantics are Clipper's (``clipper_admin.metrics``): `metric_type` is "Counter", "Gauge", "Histogram" or
"Summary"; `report_metric` adds to a Counter, sets a Gauge, observes a Histogram or Summary; adding a name
again with the same type does nothing. Names are exported as given, no prefix; a Counter gets ``_total``
appended unless its name ends with it (as Clipper's ``prometheus_client`` did). A model container run by
``python -m clipper.model_runtime`` with ``CLIPPER_METRICS_PORT`` set serves these on ``GET /metrics`` next
to its ``clipper_mc_*`` metrics; anywhere else the calls record in-process and nothing is served (see
`render`). Mistakes raise `MetricError` (a `ClipperException` and a `ValueError`) naming the problem.

This module imports only the standard library, so model code and tests can use it anywhere.
"""

from __future__ import annotations

import math
import re
import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from .exceptions import ClipperException

__all__ = ["DEFAULT_BUCKETS", "METRIC_TYPES", "MetricError", "add_metric", "render", "report_metric"]

#: Clipper's metric types (``clipper_admin.metrics.schema.Prom_Type``).
METRIC_TYPES = ("Gauge", "Counter", "Histogram", "Summary")

#: Clipper's default Histogram buckets (``clipper_admin.metrics.config.DEFAULT_BUCKETS``), +Inf implied.
DEFAULT_BUCKETS: tuple[float, ...] = (5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500)

#: The prefix of the container's own metrics (``clipper.model_runtime.metrics``), not for user metrics.
RESERVED_PREFIX = "clipper_mc_"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


class MetricError(ClipperException, ValueError):
    """A user-metric call that cannot be honoured (bad name, type, buckets or value; report before add)."""


def fmt(value: float) -> str:
    """A sample value in Prometheus text: integers as integers, ``+Inf``/``-Inf``/``NaN``."""
    if type(value) is int:
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Histogram:
    """Cumulative-bucket histogram. `observe` is not locked: callers serialize it (or accept a rare lost add)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = [float(b) for b in bounds if not math.isinf(b)]  # +Inf is the last count
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        counts = list(self.counts)  # one C call: a consistent copy under the GIL
        total, out = 0, []
        for bound, count in zip([*self.bounds, math.inf], counts, strict=True):
            total += count
            out.append(f'{name}_bucket{{le="{fmt(bound)}"}} {total}')
        out.append(f"{name}_sum {fmt(self.sum)}")
        out.append(f"{name}_count {total}")
        return out


def family(name: str, kind: str, help_text: str, lines: Sequence[str]) -> list[str]:
    """One metric family in Prometheus text format 0.0.4."""
    return [f"# HELP {name} {_help(help_text)}", f"# TYPE {name} {kind}", *lines]


class _UserMetric:
    __slots__ = ("description", "exported", "hist", "kind", "name", "value")

    def __init__(self, name: str, kind: str, description: str, buckets: Sequence[float] | None) -> None:
        self.name, self.kind, self.description = name, kind, description
        self.exported = name if kind != "Counter" or name.endswith("_total") else name + "_total"
        self.value = 0.0
        self.hist = Histogram(buckets) if kind == "Histogram" and buckets is not None else None
        if kind == "Summary":
            self.hist = Histogram(())

    def report(self, value: float) -> None:
        if self.kind == "Counter":
            if value < 0:
                raise MetricError(f"Counter {self.name!r} can only be increased; got {value!r}")
            self.value += value
        elif self.kind == "Gauge":
            self.value = value
        else:
            assert self.hist is not None
            self.hist.observe(value)

    def lines(self) -> list[str]:
        name = self.exported
        if self.kind == "Counter":
            return family(name, "counter", self.description, [f"{name} {fmt(self.value)}"])
        if self.kind == "Gauge":
            return family(name, "gauge", self.description, [f"{name} {fmt(self.value)}"])
        assert self.hist is not None
        if self.kind == "Summary":
            body = [f"{name}_sum {fmt(self.hist.sum)}", f"{name}_count {sum(self.hist.counts)}"]
            return family(name, "summary", self.description, body)
        return family(name, "histogram", self.description, self.hist.lines(name))


def _buckets(name: str, buckets: Iterable[float] | None) -> list[float]:
    try:
        bounds = [float(b) for b in (DEFAULT_BUCKETS if buckets is None else buckets)]
    except (TypeError, ValueError):
        raise MetricError(f"buckets of Histogram {name!r} must be numbers; got {buckets!r}") from None
    finite = bounds[:-1] if bounds and bounds[-1] == math.inf else bounds  # +Inf is implied anyway
    if any(not math.isfinite(b) for b in finite) or any(a >= b for a, b in zip(finite, finite[1:], strict=False)):
        raise MetricError(f"buckets of Histogram {name!r} must be strictly increasing numbers; got {buckets!r}")
    return finite


class Registry:
    """User metrics of one process: `add_metric` and `report_metric` on the module use `REGISTRY`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _UserMetric] = {}

    def add_metric(self, name: str, metric_type: str, description: str,
                   buckets: Sequence[float] | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise MetricError(f"metric name {name!r} is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        if name.startswith(RESERVED_PREFIX):
            raise MetricError(f"metric name {name!r}: the prefix {RESERVED_PREFIX!r} is the container's own")
        if metric_type not in METRIC_TYPES:
            raise MetricError(f"metric type of {name!r} needs to be one of {list(METRIC_TYPES)}; got {metric_type!r}")
        bounds = _buckets(name, buckets) if metric_type == "Histogram" else None  # others: ignored, as in Clipper
        metric = _UserMetric(name, metric_type, str(description), bounds)
        with self._lock:
            old = self._metrics.get(name)
            if old is not None:
                if old.kind != metric_type:
                    raise MetricError(f"metric {name!r} was already added as a {old.kind}, not a {metric_type}")
                return  # Clipper: adding a name again is ignored
            clash = [m.name for m in self._metrics.values() if m.exported == metric.exported]
            if clash:
                raise MetricError(f"metric {name!r} would be exported as {metric.exported!r}, like {clash[0]!r}")
            self._metrics[name] = metric

    def report_metric(self, name: str, value: float) -> None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MetricError(f"value of metric {name!r} must be a number; got {value!r}") from None
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                raise MetricError(f"metric {name!r} has not been added; call clipper.metrics.add_metric first")
            metric.report(number)

    def lines(self) -> list[str]:
        with self._lock:
            out: list[str] = []
            for metric in self._metrics.values():
                out += metric.lines()
            return out

    def clear(self) -> None:
        """Forget every metric (for tests)."""
        with self._lock:
            self._metrics.clear()


#: This process's user metrics.
REGISTRY = Registry()


def add_metric(name: str, metric_type: str, description: str, buckets: Sequence[float] | None = None) -> None:
    """Add a metric. `metric_type`: "Counter", "Gauge", "Histogram" or "Summary"; `buckets` (Histogram
    only; default `DEFAULT_BUCKETS`): increasing upper bounds, +Inf implied. Adding a name again with the
    same type does nothing; with another type raises `MetricError`."""
    REGISTRY.add_metric(name, metric_type, description, buckets)


def report_metric(name: str, value: float) -> None:
    """Report `value` to an added metric: added to a Counter (never negative), set on a Gauge, observed by a
    Histogram or Summary. Raises `MetricError` if the metric was not added or `value` is not a number."""
    REGISTRY.report_metric(name, value)


def render() -> str:
    """The user metrics in Prometheus text format (what the container's endpoint adds to its own)."""
    lines = REGISTRY.lines()
    return "\n".join(lines) + "\n" if lines else ""
