"""Applies what a query frontend's selection policies learn to the state in Redis, off the event loop."""

from __future__ import annotations

import logging
import queue
import threading
import time

import redis

from ..selection.selector import StateUpdate
from ..state import StateError, StateStore

#: The logger of the frontend's Redis side (as the state watcher's lines).
log = logging.getLogger("clipper.query.watcher")

#: Seconds between attempts while Redis is unreachable.
_RETRY_SECONDS = 1.0
#: Updates kept while Redis is unreachable; past it new ones are dropped (and counted).
MAX_PENDING = 10_000

_Key = tuple[str, int]
_NOTHING = object()


def _compose(updates: list[StateUpdate]) -> StateUpdate:
    """One update that applies `updates` in turn."""

    def update(own: str | None, shared: str | None) -> str:
        for u in updates:
            own = u(own, shared)
        assert own is not None
        return own

    return update


class SelectionStateWriter:
    """Applies state updates (`clipper.selection.selector.StateUpdate`) to the Redis at `host:port`, in order,
    on its own thread: each is a read-modify-write of the stored state (`StateStore.update_selection_state`),
    atomic against every other frontend's, so that the feedback given through every frontend counts.

    The updates of one (app, uid) that queued up meanwhile go to Redis in one write. While Redis is
    unreachable they are kept (at most `MAX_PENDING`; later ones are dropped and counted) and retried every
    second; the updates of an app that no longer exists are dropped.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._queue: queue.SimpleQueue[tuple[str, int, StateUpdate] | None] = queue.SimpleQueue()
        self._pending: dict[_Key, list[StateUpdate]] = {}
        self._count = 0  # updates in _pending
        self._dropped = 0  # updates dropped because too many were pending
        self._retry_at = 0.0
        self._store: StateStore | None = None
        self._thread = threading.Thread(target=self._run, name="clipper-state-writer", daemon=True)
        self._thread.start()

    def update(self, app: str, uid: int, update: StateUpdate) -> None:
        """Queues `update` of user `uid`'s state of `app` (returns at once)."""
        self._queue.put((app, uid, update))

    def close(self) -> None:
        """Applies the queued updates (one attempt for those Redis refuses), then disconnects."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        closing = False
        while not closing:
            timeout = max(0.0, self._retry_at - time.monotonic()) if self._pending else None
            try:
                item: object = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _NOTHING
            while item is not _NOTHING:  # take everything queued, so that one write carries it
                if item is None:
                    closing = True
                else:
                    self._add(*item)  # type: ignore[misc]
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = _NOTHING
            if closing or time.monotonic() >= self._retry_at:
                self._write_pending()
        if self._count:
            log.warning("selection state updates not saved", extra={"updates": self._count})
        if self._store is not None:
            self._store.close()

    def _add(self, app: str, uid: int, update: StateUpdate) -> None:
        if self._count >= MAX_PENDING:
            self._dropped += 1
            return
        self._pending.setdefault((app, uid), []).append(update)
        self._count += 1

    def _write_pending(self) -> None:
        for key in list(self._pending):
            app, uid = key
            updates = self._pending[key]
            try:
                if self._store is None:
                    self._store = StateStore.connect(self.host, self.port)
                self._store.update_selection_state(app, uid, _compose(updates))
            except StateError as e:
                if self._app_exists(app):  # too many concurrent writes: try again later
                    log.warning("selection state not saved yet", extra={"app": app, "uid": uid, "error": str(e)})
                    self._retry_at = time.monotonic() + _RETRY_SECONDS
                    continue
                log.info("selection state updates of a deleted app dropped",
                         extra={"app": app, "uid": uid, "updates": len(updates)})
            except (redis.RedisError, OSError) as e:
                log.warning("selection state not saved yet; retrying",
                            extra={"app": app, "uid": uid, "updates": self._count, "error": str(e)})
                self._retry_at = time.monotonic() + _RETRY_SECONDS
                return
            del self._pending[key]
            self._count -= len(updates)
        if self._dropped and not self._pending:
            log.warning("selection state updates dropped while Redis was away", extra={"updates": self._dropped})
            self._dropped = 0

    def _app_exists(self, app: str) -> bool:
        try:
            return self._store is not None and self._store.get_app(app) is not None
        except (redis.RedisError, OSError):
            return True
