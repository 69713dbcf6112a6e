"""Publishes the model replicas connected to a query frontend's engine as Clipper's container records.

Each record (`StateStore.add_replica`) carries a ``connection_id`` of ``<rpc endpoint>#<pid>#<engine
replica id>``: records of this RPC endpoint that another process wrote are stale (a restarted
frontend) and are removed when the publisher first reaches Redis. The management API's
``get_all_containers`` and the container managers read these records.
"""

from __future__ import annotations

import logging
import os

from .. import rust_core
from ..input_types import INPUT_TYPE_NAMES
from ..state import StateError, StateStore

#: The state watcher's logger: these lines come from its thread.
log = logging.getLogger("clipper.query.watcher")


class ReplicaPublisher:
    """Keeps the replica records in Redis in step with the replicas connected to `engine`.

    Not thread-safe: one thread (the state watcher's) calls every method, each with a connected store.
    """

    def __init__(self, engine: rust_core.Engine) -> None:
        self.engine = engine
        # engine replica (model id, replica id) -> the replica's key in Redis (name, version, id)
        self._published: dict[tuple[int, int], tuple[str, str, int]] = {}

    @property
    def _endpoint(self) -> str:
        """Prefix of the connection ids of this RPC endpoint's records."""
        return self.engine.rpc_endpoint + "#"

    def clear_stale(self, store: StateStore) -> None:
        """Removes the records of this RPC endpoint that an earlier process left (call once, before `publish`)."""
        for replica in store.get_replicas():
            if replica.get("connection_id", "").startswith(self._endpoint):
                store.delete_replica(replica["model_name"], replica["model_version"], replica["model_replica_id"])

    def forget_lost(self, store: StateStore) -> None:
        """After a reconnect: the records that Redis lost (restarted without persistence) are published again;
        those it kept stay as they are, under the same replica ids."""
        for key, (name, version, replica_id) in list(self._published.items()):
            if store.get_replica(name, version, replica_id) is None:
                del self._published[key]

    def publish(self, store: StateStore) -> None:
        """Records the replicas that connected since the last call and removes those that left."""
        engine = self.engine
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

    def withdraw(self, store: StateStore) -> None:
        """Removes every record this publisher wrote (the frontend is stopping)."""
        for name, version, replica_id in self._published.values():
            store.delete_replica(name, version, replica_id)
