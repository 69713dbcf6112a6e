"""The status page's data: what Redis holds (apps, models, replicas, the query frontends' announcements) and
the live figures of every announced query frontend (its `GET /metrics`, JSON form), sampled every
`INTERVAL_S` seconds into a ring of `WINDOW_S` seconds.

Windows come from deltas of the frontends' totals between samples (answers, defaults, cache lookups and hits,
model predictions): the query frontend keeps totals since it started and no time windows (its meters are
EWMA rates, its latency histogram the latest `rust_core.SAMPLE_WINDOW` answers), so the management frontend
keeps the history. A frontend that restarted (a total went down) counts from zero again. Latency percentiles
and batch sizes are the frontends' own recent-sample summaries (the highest over the frontends), recorded
in the samples whose interval had answers; queue depths add up over the frontends.

`StatusMonitor.sample` blocks (Redis, HTTP with a short timeout): the server runs it in its thread pool.
`StatusMonitor.data` only reads what the last samples left, under a lock.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis

from ...state import StateStore

log = logging.getLogger("clipper.management.status")

#: Seconds between samples, seconds of history kept, and how long one frontend's `/metrics` may take.
INTERVAL_S = 2.0
WINDOW_S = 300.0
FETCH_TIMEOUT_S = 1.0
#: How long a replica or frontend that left stays listed (as gone).
GONE_KEEP_S = 300.0
#: The windows of the default and cache-hit ratios, and of the rates.
RATIO_WINDOWS_S = {"1m": 60.0, "5m": 300.0}
RATE_WINDOW_S = 10.0
#: Most apps whose time series the data carries (the busiest); the others have their figures only.
MAX_SERIES_APPS = 50

Fetch = Callable[[str, float], dict[str, Any]]


@dataclass
class AppFigures:
    """One app's figures in one frontend's `/metrics`."""

    answers: int
    defaults: int
    latency: dict[str, float] | None  # p50, p95, p99 of the recent answers (µs); None: none yet


@dataclass
class ModelFigures:
    """One model version's figures in one frontend's `/metrics`."""

    predictions: int
    queued: int
    replicas: int
    batch_size: dict[str, float] | None  # p50, p95, max, mean of the recent batches; None: none yet


@dataclass
class FrontendSample:
    """What one frontend's `/metrics` said."""

    apps: dict[str, AppFigures]
    models: dict[str, ModelFigures]  # "<m>:<v>"
    cache_lookups: int
    cache_hits: int


@dataclass
class Tick:
    """One sampling round over every frontend: deltas since the previous round, and gauges."""

    t: float
    dt: float
    answers: dict[str, int] = field(default_factory=dict)
    defaults: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # apps with answers in the interval
    predictions: dict[str, int] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)
    batch_size: dict[str, dict[str, float]] = field(default_factory=dict)
    cache_lookups: int = 0
    cache_hits: int = 0


def _flat(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section in report.values():
        if isinstance(section, list):
            for entry in section:
                if isinstance(entry, dict):
                    out.update(entry)
    return out


def _count(flat: dict[str, dict[str, str]], name: str) -> int | None:
    try:
        return int(flat[name]["count"])
    except (KeyError, TypeError, ValueError):
        return None


def _ratio(flat: dict[str, dict[str, str]], name: str) -> float:
    try:
        value = float(flat[name]["ratio"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return 0.0 if value != value else value  # "nan": nothing counted yet


def _summary(flat: dict[str, dict[str, str]], name: str, keys: tuple[str, ...]) -> dict[str, float] | None:
    h = flat.get(name)
    try:
        if not h or int(h["size"]) == 0:
            return None
        return {k: float(h[k]) for k in keys}
    except (KeyError, TypeError, ValueError):
        return None


def parse_metrics(report: dict[str, Any]) -> FrontendSample:
    """A query frontend's `/metrics` JSON as figures. Totals a frontend of an older version lacks
    (`num_defaults`, `prediction_cache_hits`) are derived from its ratios."""
    flat = _flat(report)
    apps: dict[str, AppFigures] = {}
    models: dict[str, ModelFigures] = {}
    for name in flat:
        if name.startswith("app:") and name.endswith(":num_predictions"):
            app = name[4:-len(":num_predictions")]
            answers = _count(flat, name) or 0
            defaults = _count(flat, f"app:{app}:num_defaults")
            if defaults is None:
                defaults = round(_ratio(flat, f"app:{app}:default_prediction_ratio") * answers)
            latency = _summary(flat, f"app:{app}:prediction_latency", ("p50", "p95", "p99"))
            apps[app] = AppFigures(answers, defaults, latency)
        elif name.startswith("model:") and name.endswith(":num_predictions"):
            mv = name[6:-len(":num_predictions")]
            models[mv] = ModelFigures(
                _count(flat, name) or 0, _count(flat, f"model:{mv}:queue_length") or 0,
                _count(flat, f"model:{mv}:num_replicas") or 0,
                _summary(flat, f"model:{mv}:batch_size", ("p50", "p95", "max", "mean")))
    lookups = _count(flat, "internal:prediction_cache_lookups") or 0
    hits = _count(flat, "internal:prediction_cache_hits")
    if hits is None:
        hits = round(_ratio(flat, "internal:prediction_cache_hit_ratio") * lookups)
    return FrontendSample(apps, models, lookups, hits)


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) as (host, port)."""
    parts = urlsplit(f"http://{address}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"not host:port: {address!r}")
    return parts.hostname, parts.port


def fetch_metrics(address: str, timeout: float) -> dict[str, Any]:
    """`GET http://<address>/metrics` (JSON) within `timeout` seconds; OSError or ValueError otherwise."""
    host, port = split_address(address)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise ValueError(f"/metrics answered {response.status}")
        return orjson.loads(body)
    except http.client.HTTPException as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    finally:
        conn.close()


def _delta(new: int, old: int | None) -> int:
    """The increase of a total; a total that went down belongs to a restarted process, counting from 0."""
    if old is None:
        return 0
    return new - old if new >= old else new


def _max_summary(a: dict[str, float] | None, b: dict[str, float] | None) -> dict[str, float] | None:
    if a is None or b is None:
        return a or b
    return {k: max(a[k], b[k]) for k in a}


class StatusMonitor:
    """Samples the state in Redis and every announced query frontend; `data()` is the status page's JSON."""

    def __init__(self, store: StateStore, *, interval_s: float = INTERVAL_S, window_s: float = WINDOW_S,
                 timeout_s: float = FETCH_TIMEOUT_S, fetch: Fetch = fetch_metrics) -> None:
        self.store = store
        self.interval_s, self.window_s, self.timeout_s = interval_s, window_s, timeout_s
        self.fetch = fetch
        self._lock = threading.Lock()
        self._ticks: deque[Tick] = deque(maxlen=int(window_s / max(interval_s, 0.1)) + 1)
        self._last: dict[str, FrontendSample] = {}  # frontend id -> its last sample
        self._latest: dict[str, FrontendSample] = {}  # frontend id -> this round's sample (answered ones)
        self._frontends: dict[str, dict[str, Any]] = {}  # id -> record + state, error, seen
        self._replicas: dict[str, dict[str, Any]] = {}  # "<m>:<v>:<id>" -> record + seen
        self._config: dict[str, Any] = {"apps": {}, "models": {}, "current_versions": {}, "replicas": {}}
        self._redis_error: str | None = None
        self._sampled_at: float | None = None
        self._previous_t: float | None = None

    # ------------------------------------------------------------------ sampling (a worker thread)

    def sample(self) -> None:
        """One round: the state in Redis, then every announced frontend's `/metrics`. Never raises for an
        unreachable Redis or frontend: they are shown as such."""
        now = time.time()
        redis_error = None
        try:
            config = self.store.snapshot()
            announced = {f["id"]: f for f in self.store.get_frontends() if isinstance(f.get("id"), str)}
        except (redis.RedisError, OSError) as e:
            redis_error = str(e) or type(e).__name__
            config = None
            with self._lock:  # keep asking the frontends known so far
                announced = {i: f for i, f in self._frontends.items() if f["state"] != "gone"}
        samples: dict[str, FrontendSample] = {}
        errors: dict[str, str] = {}
        for frontend_id, record in announced.items():
            try:
                samples[frontend_id] = parse_metrics(self.fetch(str(record.get("http")), self.timeout_s))
            except (OSError, ValueError) as e:
                errors[frontend_id] = str(e) or type(e).__name__
        tick = self._tick(now, samples)
        with self._lock:
            self._redis_error = redis_error
            if config is not None:
                self._config = config
                self._track_replicas(now, config["replicas"])
            self._track_frontends(now, announced, samples, errors)
            self._ticks.append(tick)
            self._latest = samples
            self._sampled_at = now

    def _tick(self, now: float, samples: dict[str, FrontendSample]) -> Tick:
        dt = now - self._previous_t if self._previous_t is not None else self.interval_s
        self._previous_t = now
        tick = Tick(now, max(dt, 1e-3))
        for frontend_id, s in samples.items():
            old = self._last.get(frontend_id)
            for app, f in s.apps.items():
                was = old.apps.get(app) if old else None
                answers = _delta(f.answers, was.answers if was else (0 if old else None))
                defaults = _delta(f.defaults, was.defaults if was else (0 if old else None))
                if was is not None and f.answers < was.answers:  # restarted: its totals start again
                    defaults = f.defaults
                tick.answers[app] = tick.answers.get(app, 0) + answers
                tick.defaults[app] = tick.defaults.get(app, 0) + defaults
                if answers > 0 and f.latency is not None:
                    tick.latency[app] = _max_summary(tick.latency.get(app), f.latency) or f.latency
            for mv, m in s.models.items():
                was_m = old.models.get(mv) if old else None
                predictions = _delta(m.predictions, was_m.predictions if was_m else (0 if old else None))
                tick.predictions[mv] = tick.predictions.get(mv, 0) + predictions
                tick.queued[mv] = tick.queued.get(mv, 0) + m.queued
                if m.batch_size is not None and predictions > 0:
                    tick.batch_size[mv] = _max_summary(tick.batch_size.get(mv), m.batch_size) or m.batch_size
            if old is not None:
                restarted = s.cache_lookups < old.cache_lookups
                tick.cache_lookups += s.cache_lookups if restarted else s.cache_lookups - old.cache_lookups
                tick.cache_hits += s.cache_hits if restarted else max(0, s.cache_hits - old.cache_hits)
            self._last[frontend_id] = s
        return tick

    def _track_frontends(self, now: float, announced: dict[str, dict[str, Any]],
                         samples: dict[str, FrontendSample], errors: dict[str, str]) -> None:
        for frontend_id, record in announced.items():
            entry = self._frontends.setdefault(frontend_id, {"since": now})
            entry.update(record=record, seen=now)
            state = "up" if frontend_id in samples else "down"
            if entry.get("state") != state:
                entry.update(state=state, since=now)
            entry["error"] = errors.get(frontend_id)
        for frontend_id, entry in list(self._frontends.items()):
            if frontend_id in announced:
                continue
            if entry["state"] != "gone":
                entry.update(state="gone", since=now, error="its announcement expired or was withdrawn")
                self._last.pop(frontend_id, None)
            elif now - entry["since"] > GONE_KEEP_S:
                del self._frontends[frontend_id]

    def _track_replicas(self, now: float, replicas: dict[str, dict[str, Any]]) -> None:
        for key, record in replicas.items():
            entry = self._replicas.get(key)
            if entry is None or entry.get("gone_since") is not None:
                entry = self._replicas[key] = {"since": now}
            entry.update(record=record, seen=now, gone_since=None)
        for key, entry in list(self._replicas.items()):
            if key in replicas:
                continue
            if entry["gone_since"] is None:
                entry["gone_since"] = now
            elif now - entry["gone_since"] > GONE_KEEP_S:
                del self._replicas[key]

    # ------------------------------------------------------------------ the page's JSON

    def data(self) -> dict[str, Any]:
        """The status page's JSON (`GET /status/data`)."""
        with self._lock:
            ticks = list(self._ticks)
            latest = dict(self._latest)
            frontends = {i: dict(e) for i, e in self._frontends.items()}
            replicas = {k: dict(e) for k, e in self._replicas.items()}
            config = self._config
            redis_error, sampled_at = self._redis_error, self._sampled_at
        now = time.time()
        return {
            "generated_at": round(now, 3),
            "sampled_at": round(sampled_at, 3) if sampled_at else None,
            "interval_s": self.interval_s,
            "window_s": self.window_s,
            "redis": {"ok": redis_error is None, "error": redis_error},
            "frontends": self._frontends_json(now, frontends),
            "apps": self._apps_json(now, ticks, latest, config),
            "models": self._models_json(now, ticks, latest, config),
            "replicas": self._replicas_json(now, replicas, frontends),
            "cache": self._cache_json(now, ticks, latest),
        }

    @staticmethod
    def _frontends_json(now: float, frontends: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for frontend_id, e in sorted(frontends.items()):
            record = e["record"]
            out.append({"id": frontend_id, "http": record.get("http"), "rpc": record.get("rpc"),
                        "state": e["state"], "for_s": round(now - e["since"], 1), "error": e.get("error")})
        return out

    @staticmethod
    def _window(ticks: list[Tick], now: float, seconds: float) -> list[Tick]:
        # a tick covers (t - dt, t]: it belongs to the window when most of it does
        return [t for t in ticks if t.t - t.dt / 2 >= now - seconds]

    def _apps_json(self, now: float, ticks: list[Tick], latest: dict[str, FrontendSample],
                   config: dict[str, Any]) -> list[dict[str, Any]]:
        names = sorted(set(config["apps"]) | {a for t in ticks for a in t.answers})
        recent = self._window(ticks, now, RATE_WINDOW_S)
        span = sum(t.dt for t in recent)

        def rate(app: str) -> float:
            return sum(t.answers.get(app, 0) for t in recent) / span if span else 0.0

        busiest = set(sorted(names, key=lambda a: -sum(t.answers.get(a, 0) for t in ticks))[:MAX_SERIES_APPS])
        out = []
        for name in names:
            app = config["apps"].get(name) or {}
            entry: dict[str, Any] = {
                "name": name, "registered": bool(app), "input_type": app.get("input_type"),
                "slo_micros": app.get("latency_slo_micros"), "default_output": app.get("default_output"),
                "policy": app.get("policy"), "linked_models": app.get("linked_models", []),
                "rate": round(rate(name), 3),
            }
            for label, seconds in RATIO_WINDOWS_S.items():
                window = self._window(ticks, now, seconds)
                answers = sum(t.answers.get(name, 0) for t in window)
                defaults = sum(t.defaults.get(name, 0) for t in window)
                entry[f"answers_{label}"] = answers
                entry[f"default_ratio_{label}"] = round(defaults / answers, 4) if answers else None
            last = next((t.latency[name] for t in reversed(ticks) if name in t.latency), None)
            for s in latest.values():  # no answers in the window: the frontends' last recent answers
                if last is None and name in s.apps:
                    last = s.apps[name].latency
            entry["latency_micros"] = {k: round(v, 1) for k, v in last.items()} if last else None
            if name in busiest:
                entry["series"] = {
                    "t": [round(t.t - now, 1) for t in ticks],
                    "rate": [round(t.answers.get(name, 0) / t.dt, 2) for t in ticks],
                    "default_ratio": [round(t.defaults.get(name, 0) / t.answers[name], 4)
                                      if t.answers.get(name) else None for t in ticks],
                    "p99": [round(t.latency[name]["p99"], 1) if name in t.latency else None for t in ticks],
                }
            out.append(entry)
        return out

    def _models_json(self, now: float, ticks: list[Tick], latest: dict[str, FrontendSample],
                     config: dict[str, Any]) -> list[dict[str, Any]]:
        keys = set(config["models"]) | {mv for s in latest.values() for mv in s.models}
        recent = self._window(ticks, now, RATE_WINDOW_S)
        span = sum(t.dt for t in recent)
        out = []
        for mv in sorted(keys, key=lambda k: k.split(":", 1)):
            model = config["models"].get(mv) or {}
            name, _, version = mv.partition(":")
            figures = [s.models[mv] for s in latest.values() if mv in s.models]
            batch = next((t.batch_size[mv] for t in reversed(ticks) if mv in t.batch_size), None)
            for f in figures:  # no batches in the window: the frontends' last recent batches
                batch = batch or f.batch_size
            setting = model.get("batch_size")
            out.append({
                "name": model.get("model_name", name), "version": model.get("model_version", version),
                "registered": bool(model), "current": config["current_versions"].get(name) == version,
                "batch_size_setting": int(setting) if setting is not None else None,
                "batch_size": {k: round(v, 2) for k, v in batch.items()} if batch else None,
                "queue": sum(f.queued for f in figures) if figures else None,
                "connected_replicas": sum(f.replicas for f in figures) if figures else None,
                "rate": round(sum(t.predictions.get(mv, 0) for t in recent) / span, 3) if span else 0.0,
                "series": {
                    "t": [round(t.t - now, 1) for t in ticks],
                    "queue": [t.queued.get(mv) for t in ticks],
                    "batch_size": [round(t.batch_size[mv]["p50"], 2) if mv in t.batch_size else None
                                   for t in ticks],
                },
            })
        return out

    @staticmethod
    def _replicas_json(now: float, replicas: dict[str, dict[str, Any]],
                       frontends: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        # A record names its frontend (`frontend_id`, and `connection_id` = `<id>#<pid>#...`); one written by an
        # older version only by its connection id (`<rpc endpoint>#<pid>#...`).
        by_connection = {f"{e['record'].get('rpc')}#{e['record'].get('pid')}#": (i, e) for i, e in frontends.items()}
        by_connection |= {f"{i}#{e['record'].get('pid')}#": (i, e) for i, e in frontends.items()}
        out = []
        for _key, e in replicas.items():
            record = e["record"]
            frontend_id, state = None, "registered"
            connection = record.get("connection_id") or ""
            for prefix, (fid, fe) in by_connection.items():
                if connection.startswith(prefix):
                    frontend_id = fid
                    state = {"up": "up", "down": "frontend down", "gone": "frontend gone"}[fe["state"]]
            if e["gone_since"] is not None:
                state, since = "gone", e["gone_since"]
            else:
                since = e["since"]
            out.append({"model": record["model_name"], "version": record["model_version"],
                        "replica_id": int(record["model_replica_id"]), "frontend": frontend_id, "state": state,
                        "for_s": round(now - since, 1)})
        out.sort(key=lambda r: (r["model"], r["version"], r["replica_id"]))
        return out

    def _cache_json(self, now: float, ticks: list[Tick], latest: dict[str, FrontendSample]) -> dict[str, Any]:
        out: dict[str, Any] = {"lookups": sum(s.cache_lookups for s in latest.values()),
                               "hits": sum(s.cache_hits for s in latest.values())}
        for label, seconds in RATIO_WINDOWS_S.items():
            window = self._window(ticks, now, seconds)
            lookups = sum(t.cache_lookups for t in window)
            out[f"lookups_{label}"] = lookups
            out[f"hit_ratio_{label}"] = round(sum(t.cache_hits for t in window) / lookups, 4) if lookups else None
        out["series"] = {"t": [round(t.t - now, 1) for t in ticks],
                         "hit_ratio": [round(t.cache_hits / t.cache_lookups, 4) if t.cache_lookups else None
                                       for t in ticks]}
        return out

    def data_bytes(self) -> bytes:
        return orjson.dumps(self.data())
