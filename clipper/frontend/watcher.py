"""Keeps a query frontend in step with Redis.

A background thread takes a snapshot of the configuration when it connects, takes a new one after
every burst of change events on `clipper:changes`, and hands it to the event loop, which applies
it. The same thread publishes the replicas that register with the engine (Clipper's container
records). When Redis is unreachable the frontend keeps serving with what it knows, and the thread
reconnects, resubscribes and resynchronises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import redis

from .. import selection
from ..input_types import INPUT_TYPE_NAMES
from ..state import StateError, StateStore, parse_event

if TYPE_CHECKING:
    from .query import QueryFrontend

log = logging.getLogger("clipper.query.watcher")

#: Events that do not change the configuration the query path serves.
_NOT_CONFIG = {"replica", "selection_state"}
_REPLICA_POLL_SECONDS = 0.25
_RETRY_SECONDS = 1.0


class StateWatcher:
    """Follows the configuration in Redis and publishes this frontend's replicas there."""

    def __init__(self, frontend: QueryFrontend, host: str, port: int) -> None:
        self.frontend = frontend
        self.host, self.port = host, port
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # engine replica (model id, replica id) -> the replica's key in Redis (name, version, id)
        self._published: dict[tuple[int, int], tuple[str, str, int]] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipper-state-writer")
        self._write_store: StateStore | None = None

    @property
    def _endpoint(self) -> str:
        """Replica records of this RPC endpoint that another process wrote are stale: a restarted frontend."""
        return self.frontend.engine.rpc_endpoint + "#"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="clipper-state-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._writer.shutdown(wait=True)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            store = StateStore.connect(self.host, self.port)
            try:
                if first:
                    self._clear_stale_replicas(store)
                    first = False
                self._follow(store)
            except (redis.RedisError, OSError) as e:
                log.warning("redis unreachable; serving with the last known configuration",
                            extra={"redis": f"{self.host}:{self.port}", "error": str(e)})
                self._stop.wait(_RETRY_SECONDS)
            finally:
                store.close()

    def _follow(self, store: StateStore) -> None:
        pubsub = store.subscribe()
        try:
            self._apply(self._snapshot(store))
            self._forget_lost_replicas(store)
            while not self._stop.is_set():
                # One new snapshot per burst of changes, however many events it has.
                events = [parse_event(pubsub.get_message(timeout=_REPLICA_POLL_SECONDS))]
                while events[-1] is not None:
                    events.append(parse_event(pubsub.get_message(timeout=0)))
                events.pop()
                if any(e.get("kind") not in _NOT_CONFIG for e in events):
                    self._apply(self._snapshot(store))
                else:
                    for e in events:
                        if e.get("kind") == "selection_state":
                            self._load_selection_state(store, e["app"], e.get("uid"))
                self._publish_replicas(store)
            for name, version, replica_id in self._published.values():
                store.delete_replica(name, version, replica_id)
        finally:
            pubsub.close()

    @staticmethod
    def _snapshot(store: StateStore) -> dict[str, Any]:
        """The configuration, with the learned state of every app that has a selection policy."""
        snapshot = store.snapshot()
        snapshot["selection"] = {name: store.selection_states(name) for name, app in snapshot["apps"].items()
                                 if selection.policy_allows_many(app.get("policy"))}
        return snapshot

    def _apply(self, snapshot: dict[str, Any]) -> None:
        self._on_loop(self.frontend.apply_snapshot, snapshot)
        self.synced.set()

    def _load_selection_state(self, store: StateStore, app: str, uid: int | None) -> None:
        if uid is None:  # reset of every user
            self._on_loop(self.frontend.load_selection_states, app, store.selection_states(app), replace=True)
        else:
            self._on_loop(self.frontend.load_selection_states, app, {uid: store.get_selection_state(app, uid)})

    def _on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Runs `fn` on the event loop, which owns the frontend's state, and waits for it."""
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args, **kwargs)
            finally:
                done.set()

        assert self._loop is not None
        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=5)

    def save_selection_state(self, app: str, uid: int, state: str) -> Future[None]:
        """Stores a policy state in Redis for every frontend, off the event loop (last write wins)."""
        return self._writer.submit(self._write_selection_state, app, uid, state)

    def _write_selection_state(self, app: str, uid: int, state: str) -> None:
        try:
            if self._write_store is None:
                self._write_store = StateStore.connect(self.host, self.port)
            self._write_store.set_selection_state(app, state, uid)
        except (redis.RedisError, OSError, StateError) as e:
            log.warning("selection state not saved", extra={"app": app, "uid": uid, "error": str(e)})

    def _clear_stale_replicas(self, store: StateStore) -> None:
        for replica in store.get_replicas():
            if replica.get("connection_id", "").startswith(self._endpoint):
                store.delete_replica(replica["model_name"], replica["model_version"], replica["model_replica_id"])

    def _forget_lost_replicas(self, store: StateStore) -> None:
        """After a reconnect: the records that Redis lost (restarted without persistence) are published again;
        those it kept stay as they are, under the same replica ids."""
        for key, (name, version, replica_id) in list(self._published.items()):
            if store.get_replica(name, version, replica_id) is None:
                del self._published[key]

    def _publish_replicas(self, store: StateStore) -> None:
        engine = self.frontend.engine
        connected = {(model, replica): code for model, replica, code in engine.replicas()}
        for key in set(self._published) - set(connected):
            name, version, replica_id = self._published.pop(key)
            store.delete_replica(name, version, replica_id)
        for key, code in connected.items():
            if key in self._published:
                continue
            names = engine.model_name(key[0])
            if names is None:
                continue
            name, version = names
            replica_id = store.next_replica_id(name, version)
            try:
                store.add_replica(name, version, replica_id, INPUT_TYPE_NAMES[code],
                                  connection_id=f"{self._endpoint}{os.getpid()}#{key[1]}")
            except StateError as e:
                log.warning("replica not recorded", extra={"model": f"{name}:{version}", "error": str(e)})
            self._published[key] = (name, version, replica_id)
