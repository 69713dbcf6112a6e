"""Stores what a query frontend's selection policies learn in Redis, off the event loop."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import redis

from ..state import StateError, StateStore

#: The logger of the frontend's Redis side (as the state watcher's lines).
log = logging.getLogger("clipper.query.watcher")


class SelectionStateWriter:
    """Writes policy states to the Redis at `host:port` for every frontend, one at a time on its own thread
    (last write wins); a write that fails is logged and dropped."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipper-state-writer")
        self._store: StateStore | None = None

    def save(self, app: str, uid: int, state: str) -> Future[None]:
        """Queues the write of user `uid`'s state of `app`."""
        return self._writer.submit(self._write, app, uid, state)

    def _write(self, app: str, uid: int, state: str) -> None:
        try:
            if self._store is None:
                self._store = StateStore.connect(self.host, self.port)
            self._store.set_selection_state(app, state, uid)
        except (redis.RedisError, OSError, StateError) as e:
            log.warning("selection state not saved", extra={"app": app, "uid": uid, "error": str(e)})

    def close(self) -> None:
        """Finishes the queued writes, then disconnects."""
        self._writer.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
            self._store = None
