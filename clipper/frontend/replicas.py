"""Publishes the model replicas connected to a query frontend's engine as Clipper's container records.

Each record (`StateStore.add_replica`) belongs to the query frontend that wrote it: its ``frontend_id`` is
the frontend's announcement id (`StateStore.announce_frontend`; ``<advertised http address>/<rpc port>``,
unique per frontend: per host, container or pod, and per worker), and its ``connection_id`` is
``<frontend id>#<pid>#<engine replica id>``. Several query frontends (a cluster) share one Redis, each
with its own records:

- `clear_stale`: when a frontend first reaches Redis, the records of its own id are an earlier
  process's (the frontend restarted in place: same host and ports) and are removed.
- `sweep`: records whose frontend's announcement has expired (it was killed, or its node lost, and
  never withdrew) are removed by whichever live frontend sweeps first; every frontend sweeps when it
  renews its announcement, and it announces before it publishes, so a live frontend's records always
  have a live announcement (one that lapsed, e.g. while Redis was away, is renewed and the records that
  were swept meanwhile are published again).
- Records written by an older version carry no ``frontend_id`` (their ``connection_id`` starts with the
  RPC endpoint): no sweep touches them; `clear_stale` removes those of its own RPC endpoint, as older
  versions did (an upgrade in place).

The management API's ``get_all_containers`` and the container managers read these records.
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
    """Keeps the replica records in Redis of the frontend `frontend_id` in step with the replicas connected to
    `engine`.

    Not thread-safe: one thread (the state watcher's) calls every method, each with a connected store.
    """

    def __init__(self, engine: rust_core.Engine, frontend_id: str) -> None:
        self.engine = engine
        self.frontend_id = frontend_id
        self.pid = os.getpid()
        # engine replica (model id, replica id) -> the replica's key in Redis (name, version, id)
        self._published: dict[tuple[int, int], tuple[str, str, int]] = {}

    @property
    def _prefix(self) -> str:
        """Prefix of the connection ids of this frontend's records."""
        return f"{self.frontend_id}#"

    def _stale(self, replica: dict) -> bool:
        """A record of this frontend (or, without a frontend id, of its RPC endpoint)."""
        if replica.get("frontend_id"):
            return replica["frontend_id"] == self.frontend_id
        return replica.get("connection_id", "").startswith(self.engine.rpc_endpoint + "#")  # an older version's

    def clear_stale(self, store: StateStore) -> int:
        """Removes the records of this frontend that an earlier process left; returns how many. Call it once,
        before `publish`: then every record of this frontend's id is an earlier process's, even one with this
        process's pid (a restarted container runs its frontend under the same pid and hostname)."""
        removed = 0
        for replica in store.get_replicas():
            if self._stale(replica):
                removed += store.delete_replica(replica["model_name"], replica["model_version"],
                                                replica["model_replica_id"])
        return removed

    @staticmethod
    def sweep(store: StateStore) -> int:
        """Removes the records of frontends whose announcement has expired (any frontend may call it, several
        at once); returns how many it removed. The records are read before the announcements: a record was
        written after its frontend announced itself, so a frontend that is live at the second read is not
        mistaken for a gone one."""
        records = [r for r in store.get_replicas() if r.get("frontend_id")]
        if not records:
            return 0
        live = {f.get("id") for f in store.get_frontends()}
        removed = 0
        for r in records:
            if r["frontend_id"] not in live:
                removed += store.delete_replica(r["model_name"], r["model_version"], r["model_replica_id"])
        if removed:
            log.info("removed the records of frontends that are gone", extra={"replicas": removed})
        return removed

    def forget_lost(self, store: StateStore) -> None:
        """After a reconnect, or after this frontend's announcement had lapsed: the records that Redis lost
        (restarted without persistence), or that a sweep removed, are published again; those it kept stay as
        they are, under the same replica ids."""
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
                                  connection_id=f"{self._prefix}{self.pid}#{key[1]}", frontend_id=self.frontend_id)
            except StateError as e:
                log.warning("replica not recorded", extra={"model": f"{name}:{version}", "error": str(e)})
            self._published[key] = (name, version, replica_id)

    def withdraw(self, store: StateStore) -> None:
        """Removes every record this publisher wrote (the frontend is stopping)."""
        for name, version, replica_id in self._published.values():
            store.delete_replica(name, version, replica_id)
