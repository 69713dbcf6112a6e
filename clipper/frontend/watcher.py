"""Keeps a query frontend in step with Redis.

A background thread takes a snapshot of the configuration when it connects, takes a new one after
every burst of change events on `clipper:changes`, and hands it to the event loop (the
`apply_snapshot` callback); a change of one app's learned selection state is handed over alone
(`load_selection_states`). Between bursts, at least every 0.25 s, the same thread publishes the
replicas connected to the engine (`ReplicaPublisher`), and every third of the announcement's TTL
(`ANNOUNCE_TTL_SECONDS` unless told otherwise: `--announce-ttl`) renews the frontend's announcement
(`announcement`: its id, which the replica records carry, and where its HTTP routes are, so that the
management frontend's status page finds its `/metrics`) and sweeps the replica records of frontends whose
announcement has expired. It announces before it publishes anything. When Redis is unreachable the
frontend keeps serving with what it knows, and the thread reconnects, resubscribes and resynchronises.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from .. import rust_core, selection
from ..state import StateStore, parse_event
from .config import DEFAULT_ANNOUNCE_TTL_S
from .replicas import ReplicaPublisher

log = logging.getLogger("clipper.query.watcher")

#: Events that do not change the configuration the query path serves.
_NOT_CONFIG = {"replica", "selection_state"}
_REPLICA_POLL_SECONDS = 0.25
_RETRY_SECONDS = 1.0
#: How long a frontend's announcement lasts without renewal (default); it is renewed every third of that.
ANNOUNCE_TTL_SECONDS = DEFAULT_ANNOUNCE_TTL_S


class StateWatcher:
    """Follows the configuration in Redis (`host:port`) and publishes the replicas of `engine` there.

    `apply_snapshot` gets every new snapshot (`StateStore.snapshot()` plus ``"selection"``: the learned
    state of each app with a selection policy); `load_selection_states` gets one app's states when only
    they changed (``(app, {uid: state or None}, replace=...)``, as `QueryFrontend.load_selection_states`).
    Both run on the event loop passed to `start`.
    """

    def __init__(self, engine: rust_core.Engine, host: str, port: int, *,
                 apply_snapshot: Callable[[dict[str, Any]], None],
                 load_selection_states: Callable[..., None],
                 announce_ttl: float = ANNOUNCE_TTL_SECONDS) -> None:
        if announce_ttl <= 0:
            raise ValueError("announce_ttl must be positive")
        self.engine = engine
        self.host, self.port = host, port
        self.apply_snapshot = apply_snapshot
        self.load_selection_states = load_selection_states
        self.announce_ttl = announce_ttl
        #: This frontend's announcement (`StateStore.announce_frontend`), given to `start`.
        self.announcement: dict[str, Any] | None = None
        self.replicas: ReplicaPublisher | None = None
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._cleared = False  # clear_stale done (once per process)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, announcement: dict[str, Any]) -> None:
        """Follows Redis on a thread; `announcement` (with its unique ``id``) is announced there, renewed, and
        owns the replica records this frontend publishes."""
        self.announcement = announcement
        self.replicas = ReplicaPublisher(self.engine, announcement["id"])
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="clipper-state-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            store = StateStore.connect(self.host, self.port)
            try:
                self._follow(store)
            except (redis.RedisError, OSError) as e:
                log.warning("redis unreachable; serving with the last known configuration",
                            extra={"redis": f"{self.host}:{self.port}", "error": str(e)})
                self._stop.wait(_RETRY_SECONDS)
            finally:
                store.close()

    def _follow(self, store: StateStore) -> None:
        assert self.announcement is not None and self.replicas is not None, "start() first"
        replicas = self.replicas
        pubsub = store.subscribe()
        try:
            self._apply(self._snapshot(store))
            # Announce before publishing: another frontend's sweep takes records without a live announcement.
            recheck = not self._announce(store) and self._cleared
            announced = time.monotonic()
            if not self._cleared:
                replicas.clear_stale(store)
                self._cleared = True
            replicas.forget_lost(store)
            replicas.sweep(store)
            while not self._stop.is_set():
                # One new snapshot per burst of changes, however many events it has.
                events = [parse_event(pubsub.get_message(timeout=_REPLICA_POLL_SECONDS))]
                while events[-1] is not None:
                    events.append(parse_event(pubsub.get_message(timeout=0)))
                events.pop()
                if any(e.get("kind") not in _NOT_CONFIG for e in events):
                    self._apply(self._snapshot(store))
                else:
                    self._load_selection_states(store, [e for e in events if e.get("kind") == "selection_state"])
                if time.monotonic() - announced >= self.announce_ttl / 3:
                    # An announcement that had lapsed: others may have swept our records, now or in a sweep
                    # that read the announcements just before we renewed ours (so look again next time too).
                    lapsed = not self._announce(store)
                    if lapsed or recheck:
                        replicas.forget_lost(store)
                    recheck = lapsed
                    announced = time.monotonic()
                    replicas.sweep(store)
                replicas.publish(store)
            replicas.withdraw(store)
            store.withdraw_frontend(self.announcement["id"])
        finally:
            pubsub.close()

    def _announce(self, store: StateStore) -> bool:
        """Announces (renews) this frontend; False when its announcement was not live (first, or lapsed)."""
        assert self.announcement is not None
        live = store.announce_frontend(self.announcement, self.announce_ttl)
        if not live and self._cleared:
            log.warning("the frontend's announcement had expired; announced again, republishing its replicas",
                        extra={"frontend": self.announcement["id"]})
        return live

    @staticmethod
    def _snapshot(store: StateStore) -> dict[str, Any]:
        """The configuration, with the learned state of every app that has a selection policy."""
        snapshot = store.snapshot()
        snapshot["selection"] = {name: store.selection_states(name) for name, app in snapshot["apps"].items()
                                 if selection.policy_allows_many(app.get("policy"))}
        return snapshot

    def _apply(self, snapshot: dict[str, Any]) -> None:
        self._on_loop(self.apply_snapshot, snapshot)
        self.synced.set()

    def _load_selection_states(self, store: StateStore, events: list[dict[str, Any]]) -> None:
        """Reads the states a burst of `selection_state` events changed, each once, and hands each app's over
        in one call (a busy app's state changes with every feedback given through any frontend)."""
        changed: dict[str, set[int] | None] = {}  # app -> uids, None: every user (a reset)
        for e in events:
            app, uid = e["app"], e.get("uid")
            uids = changed.setdefault(app, set())
            if uid is None:
                changed[app] = None
            elif uids is not None:
                uids.add(int(uid))
        for app, uids in changed.items():
            if uids is None:
                self._on_loop(self.load_selection_states, app, store.selection_states(app), replace=True)
            else:
                self._on_loop(self.load_selection_states, app,
                              {uid: store.get_selection_state(app, uid) for uid in sorted(uids)})

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
