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
from typing import TYPE_CHECKING, Any

import redis

from ..input_types import INPUT_TYPE_NAMES
from ..state import StateError, StateStore, parse_event

if TYPE_CHECKING:
    from .query import QueryFrontend

log = logging.getLogger("clipper.query.watcher")

#: Events that do not change what the query path serves.
_IGNORED_KINDS = {"replica", "selection_state"}
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
                self._published.clear()  # republish everything once Redis is back
                self._stop.wait(_RETRY_SECONDS)
            finally:
                store.close()

    def _follow(self, store: StateStore) -> None:
        pubsub = store.subscribe()
        try:
            self._apply(store.snapshot())
            while not self._stop.is_set():
                # One new snapshot per burst of changes, however many events it has.
                events = [parse_event(pubsub.get_message(timeout=_REPLICA_POLL_SECONDS))]
                while events[-1] is not None:
                    events.append(parse_event(pubsub.get_message(timeout=0)))
                if any(e is not None and e.get("kind") not in _IGNORED_KINDS for e in events):
                    self._apply(store.snapshot())
                self._publish_replicas(store)
            for name, version, replica_id in self._published.values():
                store.delete_replica(name, version, replica_id)
        finally:
            pubsub.close()

    def _apply(self, snapshot: dict[str, Any]) -> None:
        done = threading.Event()

        def apply() -> None:
            try:
                self.frontend.apply_snapshot(snapshot)
            finally:
                done.set()

        assert self._loop is not None
        self._loop.call_soon_threadsafe(apply)
        done.wait(timeout=5)
        self.synced.set()

    def _clear_stale_replicas(self, store: StateStore) -> None:
        for replica in store.get_replicas():
            if replica.get("connection_id", "").startswith(self._endpoint):
                store.delete_replica(replica["model_name"], replica["model_version"], replica["model_replica_id"])

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
