"""The query frontend process: REST predictions on :1337, model containers on :7000.

Wires apps and models, from Redis (following every change) or from a JSON file, into the compiled
request path (`clipper._core`) and the engine (`clipper.rust_core`), and serves on uvloop.

    python -m clipper.frontend.query --redis-host 127.0.0.1 --redis-port 6379
    python -m clipper.frontend.query --config apps.json
    python -m clipper.frontend.query --config apps.json --workers 2   # RPC ports 7000 and 7001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import uvloop

from .. import _core, rust_core, selection
from ..cmdline import ArgumentParser
from ..input_types import parse_input_type
from ..logs import configure_logging
from ..selection.selector import ModelSelector, StateUpdate
from .config import QueryFrontendConfig
from .metrics import Metrics, render_prometheus
from .selection_writer import SelectionStateWriter
from .watcher import StateWatcher
from .workers import run_workers

log = logging.getLogger("clipper.query")
#: One line per answer that is not a prediction (INFO; off at the default level, WARNING).
request_log = logging.getLogger("clipper.query.requests")


def _log_request(event: str, **fields: Any) -> None:
    request_log.info(event, extra=fields)


@dataclass
class ModelSpec:
    """A model version the frontend serves."""

    name: str
    version: str
    input_type: str = "doubles"
    batch_size: int = -1
    batch_wait_micros: int = 0


@dataclass
class AppSpec:
    """An application: its input type, latency objective, default output and linked models."""

    name: str
    input_type: str
    latency_slo_micros: int
    default_output: str = "None"
    models: list[str] = field(default_factory=list)
    selection_policy: str = selection.DEFAULT


class QueryFrontend:
    """The query frontend: an engine, the apps it serves, and the HTTP server in front."""

    def __init__(self, config: QueryFrontendConfig | None = None) -> None:
        self.config = config = config if config is not None else QueryFrontendConfig()
        self.host, self.port, self.reuse_port = config.host, config.port, config.reuse_port
        self.engine = rust_core.Engine(
            config.rpc_endpoint, cache_bytes=config.cache_size, heartbeat_timeout=config.heartbeat_timeout,
            max_queue=config.max_queue, spin=not config.no_spin,
        )
        self.metrics = Metrics(None)
        self.server = _core.QueryServer(
            self.engine,
            max_body_bytes=config.max_body_bytes,
            max_header_bytes=config.max_header_bytes,
            max_batch_inputs=config.max_batch_inputs,
            metrics_handler=self.metrics.render,
            prometheus_handler=lambda: render_prometheus(self.server.apps, self.engine),
            predict_token=config.predict_token,
        )
        self.metrics.server = self.server
        if request_log.isEnabledFor(logging.INFO):
            self.server.request_logger = _log_request
        self.models: dict[str, dict[str, ModelSpec]] = {}
        self.current_version: dict[str, str] = {}
        self.app_specs: dict[str, AppSpec] = {}
        self._http: asyncio.AbstractServer | None = None
        self.watcher: StateWatcher | None = None
        self.selection_writer: SelectionStateWriter | None = None

    @property
    def rpc_port(self) -> int:
        return int(self.engine.rpc_endpoint.rsplit(":", 1)[1])

    # configuration

    def add_model(self, spec: ModelSpec, *, current: bool = True) -> None:
        """Registers a model version; by default it becomes the model's current version."""
        parse_input_type(spec.input_type)
        if spec.batch_size != -1 and spec.batch_size < 1:
            raise ValueError("batch_size must be positive or -1 (adaptive)")
        if current or spec.name not in self.current_version:
            for app in self.app_specs.values():
                if spec.name in app.models:
                    self._check_link(app, spec.name, spec.version, spec)
        model_id = self.engine.model(spec.name, spec.version)
        self.engine.configure_model(model_id, spec.batch_size, spec.batch_wait_micros)
        self.models.setdefault(spec.name, {})[spec.version] = spec
        if current or spec.name not in self.current_version:
            self.current_version[spec.name] = spec.version
        self._refresh_apps()

    def add_app(self, spec: AppSpec) -> None:
        """Adds or replaces an application."""
        parse_input_type(spec.input_type)
        if spec.latency_slo_micros <= 0:
            raise ValueError("latency_slo_micros must be positive")
        spec.selection_policy = selection.canonical_name(spec.selection_policy)
        if len(spec.models) > 1 and not selection.policy_allows_many(spec.selection_policy):
            raise ValueError("an application with the default selection policy links at most one model")
        for model in spec.models:
            self._check_link(spec, model, self.current_version.get(model))
        self.app_specs[spec.name] = spec
        self._refresh_apps()

    def _check_link(self, app: AppSpec, model: str, version: str | None, spec: ModelSpec | None = None) -> None:
        """Refuses to serve an app through a model version of another input type."""
        spec = spec or (self.models.get(model, {}).get(version) if version else None)
        if spec is None:
            return
        if parse_input_type(spec.input_type)[0] != parse_input_type(app.input_type)[0]:
            raise ValueError(
                f"Model with name '{model}' has incompatible input_type '{parse_input_type(spec.input_type)[0]}'. "
                f"Requested app to link to has input_type '{parse_input_type(app.input_type)[0]}'."
            )

    def remove_app(self, name: str) -> None:
        self.app_specs.pop(name, None)
        self.server.apps.pop(name, None)

    def _refresh_apps(self) -> None:
        for spec in self.app_specs.values():
            _, code = parse_input_type(spec.input_type)
            model = spec.models[0] if spec.models else None
            versions = {v: self.engine.model(model, v) for v in self.models.get(model, {})} if model else {}
            current = self.current_version.get(model) if model else None
            model_id = versions.get(current, -1) if current else -1
            app = self.server.apps.get(spec.name)
            if app is None or app.input_code != code:
                app = _core.App(spec.name, code, spec.latency_slo_micros, _core.json_fragment(spec.default_output))
                self.server.apps[spec.name] = app
            app.slo_micros = spec.latency_slo_micros
            app.default_fragment = _core.json_fragment(spec.default_output)
            app.model_id, app.linked_model, app.versions = model_id, model, versions
            app.selector = self._selector(spec, app.selector)

    def _selector(self, spec: AppSpec, selector: ModelSelector | None) -> ModelSelector | None:
        """The app's policy selector (None for the default policy), keeping what it learned."""
        if spec.selection_policy == selection.DEFAULT:
            return None
        linked = {m: self.engine.model(m, self.current_version[m])
                  for m in spec.models if m in self.current_version}
        if selector is None or selector.policy.name != spec.selection_policy:
            return ModelSelector(spec.name, spec.selection_policy, linked, persist=self._persist_selection)
        selector.set_models(linked)
        return selector

    def _persist_selection(self, app: str, uid: int, update: StateUpdate) -> None:
        """Has the writer apply what a selector learned from a feedback to the state in Redis (never waits)."""
        if self.selection_writer is not None:
            self.selection_writer.update(app, uid, update)

    def load_selection_states(self, app: str, states: dict[int, str | None], *, replace: bool = False) -> None:
        """Policy states read from Redis (`replace`: they are all the app has; None: forgotten)."""
        served = self.server.apps.get(app)
        selector = served.selector if served is not None else None
        if selector is None:
            return
        if replace:
            selector.states.clear()
        for uid, text in states.items():
            selector.load(uid, text, newer_only=not replace)

    def apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Serves exactly the apps and models of a `StateStore.snapshot()`, replacing what was before.

        Redis is the source of truth here: the management API validated every change already.
        """
        models: dict[str, dict[str, ModelSpec]] = {}
        for m in snapshot["models"].values():
            spec = ModelSpec(m["model_name"], m["model_version"], m["input_type"], int(m["batch_size"]),
                             int(m.get("batch_wait_micros", 0)))
            models.setdefault(spec.name, {})[spec.version] = spec
            model_id = self.engine.model(spec.name, spec.version)
            self.engine.configure_model(model_id, spec.batch_size, spec.batch_wait_micros)
        self.models = models
        self.current_version = dict(snapshot["current_versions"])
        self.app_specs = {
            name: AppSpec(name, a["input_type"], int(a["latency_slo_micros"]), a["default_output"],
                          list(a["linked_models"]), selection.canonical_name(a.get("policy")))
            for name, a in snapshot["apps"].items()
        }
        for name in set(self.server.apps) - set(self.app_specs):
            del self.server.apps[name]
        self._refresh_apps()
        for app, states in snapshot.get("selection", {}).items():
            self.load_selection_states(app, states, replace=True)
        self.server.ready = True

    def load_config(self, config: dict[str, Any]) -> None:
        """Loads `{"models": [...], "apps": [...]}` (fields as in ModelSpec and AppSpec)."""
        for model in config.get("models", []):
            fields = dict(model)
            current = fields.pop("current", True)
            self.add_model(ModelSpec(**fields), current=current)
        for app in config.get("apps", []):
            self.add_app(AppSpec(**app))

    # serving

    def follow_redis(self, host: str, port: int) -> None:
        """Takes apps and models from Redis, following every change (call before `start`)."""
        self.watcher = StateWatcher(self.engine, host, port, apply_snapshot=self.apply_snapshot,
                                    load_selection_states=self.load_selection_states,
                                    announce_ttl=self.config.announce_ttl)
        self.selection_writer = SelectionStateWriter(host, port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server.attach(loop)
        if self.watcher is None:
            self.server.ready = True
        self._http = await loop.create_server(
            lambda: _core.HttpProtocol(self.server), self.host, self.port, reuse_address=True,
            reuse_port=self.reuse_port or None, backlog=2048,
        )
        self.port = self._http.sockets[0].getsockname()[1]
        if self.watcher is not None:
            # ready once the first snapshot from Redis is applied; the announcement needs the bound HTTP port
            self.watcher.start(loop, self.announcement())
        self._tick(loop)
        endpoints = {"http": f"{self.host}:{self.port}", "rpc": self.engine.rpc_endpoint}
        log.info("query frontend listening", extra=endpoints)

    def announcement(self) -> dict[str, Any]:
        """What this frontend announces in Redis (`StateStore.announce_frontend`): where its HTTP routes are
        reachable (`--advertise-address`, else the bound address), its RPC endpoint and pid. The id is the HTTP
        address and the RPC port: stable across restarts, distinct for workers sharing one HTTP port and for
        frontends on different hosts or containers (a wildcard --host announces the hostname). The replica
        records carry it (`frontend_id`; `connection_id` starts with `<id>#<pid>#`)."""
        http = self.config.advertised_http(self.port)
        return {"id": f"{http}/{self.rpc_port}", "http": http, "rpc": self.engine.rpc_endpoint, "pid": os.getpid()}

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.metrics.tick()
        loop.call_later(5.0, self._tick, loop)

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stops accepting connections, answers the requests in flight (for at most `drain_seconds`; requests
        read meanwhile get 503 and `Connection: close`), closes the connections, then stops the engine."""
        loop = asyncio.get_running_loop()
        if self._http is not None:
            self._http.close()
            self.server.start_draining()
        await loop.run_in_executor(None, self._stop_following)
        if self._http is not None:
            if unanswered := await self.server.drain(drain_seconds):
                log.warning("stopping with requests unanswered", extra={"requests": unanswered,
                                                                        "drain_seconds": drain_seconds})
            self.server.detach(loop)
        self.engine.close()

    def _stop_following(self) -> None:
        """Finishes the queued selection-state writes, then stops the watcher (which withdraws the replicas)."""
        if self.selection_writer is not None:
            self.selection_writer.close()
        if self.watcher is not None:
            self.watcher.stop()

    async def serve_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("query frontend stopping")
        await self.stop()


def build_parser() -> argparse.ArgumentParser:
    """``python -m clipper.frontend.query``'s parser, made from `QueryFrontendConfig`."""
    parser = ArgumentParser(prog="python -m clipper.frontend.query", description=__doc__.splitlines()[0])
    QueryFrontendConfig.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = QueryFrontendConfig.from_args(parser.parse_args(argv))
    configure_logging(config.log_level)
    try:
        config.validate()
    except ValueError as e:
        parser.error(str(e))
    if config.workers > 1:
        return run_workers(sys.argv[1:] if argv is None else list(argv), config.workers, config.rpc_port)
    uvloop.install()

    async def run() -> None:
        frontend = QueryFrontend(config)
        if config.config_file:
            with open(config.config_file) as f:
                frontend.load_config(json.load(f))
        else:
            frontend.follow_redis(config.redis_host, config.redis_port)
        await frontend.serve_forever()

    try:
        asyncio.run(run())
    except (OSError, ValueError, TypeError) as e:
        print(f"query frontend: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
