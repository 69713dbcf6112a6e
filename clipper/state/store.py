"""The control plane's state in Redis: the only module that knows Redis keys and change events.

Meaning follows Clipper's schema (`docs/compatibility.md`): applications, versioned models, the current
version of each model name, app -> model links, container replicas and selection state. Unlike
Clipper (seven databases, `KEYS *` scans, keyspace notifications) everything lives in ONE Redis
database under the `clipper:` prefix, with index sets instead of scans, and every mutation is one
MULTI/EXEC transaction that also publishes a JSON event, so readers never see half a change.

Schema (all strings UTF-8; `<m>` model name, `<v>` version, `<a>` app name, `<id>` replica id)::

    clipper:rev                       string  config revision, +1 per mutation (also in its events)
    clipper:apps                      set     app names
    clipper:app:<a>                   hash    name, input_type (canonical), default_output,
                                              latency_slo_micros (decimal), policy
    clipper:links:<a>                 set     model names linked to app <a>
    clipper:linked_apps:<m>           set     apps linking model name <m> (reverse index of links)
    clipper:selection:<a>             hash    uid (decimal) -> selection-policy state (opaque string)
    clipper:models                    set     "<m>:<v>" of every registered model version
    clipper:model_names               set     model names with at least one version
    clipper:versions:<m>              set     versions of model <m>
    clipper:model:<m>:<v>             hash    model_name, model_version, input_type, labels (JSON
                                              list), container_name, model_data_path, batch_size
                                              (decimal, -1 = adaptive), batch_wait_micros (decimal)
    clipper:current:<m>               string  current version of model <m> (absent: none)
    clipper:replicas                  set     "<m>:<v>:<id>" of every registered replica
    clipper:replicas:<m>:<v>          set     replica ids of model version <m>:<v>
    clipper:replica:<m>:<v>:<id>      hash    model_id ("<m>:<v>"), model_name, model_version,
                                              model_replica_id, input_type, connection_id, frontend_id
                                              (the id of the query frontend that wrote it, as it
                                              announces itself; absent in records of older versions)
    clipper:replica_seq:<m>:<v>       string  counter behind `next_replica_id`
    clipper:frontends                 set     ids of the query frontends that announced themselves
    clipper:frontend:<f>              string  JSON {"id", "http", "rpc", "pid"} of query frontend <f>, with a
                                              TTL: it expires unless the frontend renews it (not config: no
                                              event, no `rev`; readers drop ids whose record expired)

Model names and versions cannot contain `,` or `:` (checked as Clipper does), so `<m>:<v>` keys
and ids are unambiguous; app names are free strings and always the last part of their keys.

Change events: every mutation PUBLISHes, inside its transaction, one or more JSON objects on the
channel `clipper:changes`::

    {"kind": "app", "op": "added" | "deleted", "name": a, "rev": n}
    {"kind": "links", "op": "added" | "deleted", "app": a, "models": [m, ...], "rev": n}
    {"kind": "model", "op": "added" | "deleted", "name": m, "version": v, "rev": n}
    {"kind": "current_version", "model": m, "version": v | null, "rev": n}
    {"kind": "replica", "op": "added" | "deleted", "name": m, "version": v, "replica_id": i, "rev": n}
    {"kind": "selection_state", "app": a, "uid": u}           (not a config change: no rev)

A query frontend (`clipper.frontend.watcher`) subscribes, then takes a `snapshot()` (one Lua script,
so it is consistent) and serves exactly that. It does not apply events one by one: after every
burst of config events (any kind but "replica" and "selection_state") it takes a whole new
snapshot, and after losing its subscription (Redis restarted or unreachable) it resubscribes and
takes one again. A "selection_state" event makes it reread that app's state alone (every user's
when `uid` is null). Nothing compares `rev`: it is there for readers that want to order events.

Deleting an app deletes its links and selection state (one "app" event says so). Deleting a model
version is done here, synchronously: its hash, its replicas, index entries, and the current-version
pointer when it pointed at that version ("current_version" event with version null).

Concurrency: every config mutation WATCHes `clipper:rev`, validates with plain reads, then writes
in MULTI/EXEC; a concurrent mutation makes EXEC fail and the whole operation is retried, so the
checks (duplicates, input-type compatibility, one-model-per-app) hold under concurrent admins.
Query frontends change a selection state by read-modify-write (`update_selection_state`: WATCH the
app's state hash, read, compute, MULTI/EXEC, retry), so the feedback of every frontend counts.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline, PubSub
from redis.retry import Retry

from .. import selection
from ..image_names import CONTAINERLESS_MODEL_IMAGE
from ..input_types import parse_input_type

CHANNEL = "clipper:changes"
DEFAULT_POLICY = "DefaultOutputSelectionPolicy"
NO_CONTAINER = CONTAINERLESS_MODEL_IMAGE
DEFAULT_BATCH_SIZE = -1
DEFAULT_USER_ID = 0
#: Characters Clipper forbids in model names, versions and labels (its ITEM_DELIMITER and ITEM_PART_CONCATENATOR).
PROHIBITED_GROUP_STRINGS = (",", ":")
#: Attempts of one mutation when concurrent mutations keep invalidating its WATCH.
MAX_ATTEMPTS = 64

K_REV = "clipper:rev"
K_APPS = "clipper:apps"
K_MODELS = "clipper:models"
K_MODEL_NAMES = "clipper:model_names"
K_REPLICAS = "clipper:replicas"
K_FRONTENDS = "clipper:frontends"


def k_app(app: str) -> str:
    return f"clipper:app:{app}"


def k_links(app: str) -> str:
    return f"clipper:links:{app}"


def k_linked_apps(model: str) -> str:
    return f"clipper:linked_apps:{model}"


def k_selection(app: str) -> str:
    return f"clipper:selection:{app}"


def k_model(model: str, version: str) -> str:
    return f"clipper:model:{model}:{version}"


def k_versions(model: str) -> str:
    return f"clipper:versions:{model}"


def k_current(model: str) -> str:
    return f"clipper:current:{model}"


def k_model_replicas(model: str, version: str) -> str:
    return f"clipper:replicas:{model}:{version}"


def k_replica(model: str, version: str, replica_id: int) -> str:
    return f"clipper:replica:{model}:{version}:{replica_id}"


def k_replica_seq(model: str, version: str) -> str:
    return f"clipper:replica_seq:{model}:{version}"


def k_frontend(frontend_id: str) -> str:
    return f"clipper:frontend:{frontend_id}"


class StateError(Exception):
    """A business-rule failure; `message` is Clipper's exact text where Clipper has one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputType(StateError):
    """An input type that is neither a canonical name nor one of Clipper's aliases."""


def policy_allows_many(policy: str) -> bool:
    """Whether an app with this selection policy may link more than one model.

    The default-output policy (Clipper's only one) serves exactly one model; every other policy
    chooses among several (see `clipper.selection`).
    """
    return selection.policy_allows_many(policy)


def canonical_input_type(input_type: str) -> str:
    """The canonical name of an input type or alias; InvalidInputType otherwise."""
    try:
        return parse_input_type(input_type)[0]
    except ValueError as e:
        raise InvalidInputType(str(e)) from None


def model_id(model: str, version: str) -> str:
    """Clipper's serialized model id `<m>:<v>`."""
    return f"{model}:{version}"


def _check_group_str(value: str, label: str) -> None:
    if any(s in value for s in PROHIBITED_GROUP_STRINGS):
        quoted = ", ".join(f"'{s}'" for s in PROHIBITED_GROUP_STRINGS)
        raise StateError(f"Invalid {label} supplied: {value}. Contains one of: {quoted}")


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _app_from_hash(name: str, h: dict[str, str], links: Iterable[str]) -> dict[str, Any]:
    return {
        "name": name,
        "input_type": h["input_type"],
        "default_output": h["default_output"],
        "latency_slo_micros": int(h["latency_slo_micros"]),
        "policy": h.get("policy", DEFAULT_POLICY),
        "linked_models": sorted(links),
    }


def _model_from_hash(h: dict[str, str], current: str | None) -> dict[str, Any]:
    return {
        "model_name": h["model_name"],
        "model_version": h["model_version"],
        "input_type": h["input_type"],
        "labels": json.loads(h["labels"]),
        "container_name": h["container_name"],
        "model_data_path": h["model_data_path"],
        "batch_size": int(h["batch_size"]),
        "batch_wait_micros": int(h.get("batch_wait_micros", "0")),
        "is_current_version": current == h["model_version"],
    }


def _replica_from_hash(h: dict[str, str]) -> dict[str, Any]:
    return {
        "model_id": h["model_id"],
        "model_name": h["model_name"],
        "model_version": h["model_version"],
        "model_replica_id": int(h["model_replica_id"]),
        "input_type": h["input_type"],
        "connection_id": h.get("connection_id", ""),
        "frontend_id": h.get("frontend_id", ""),
    }


def _split_model_id(mid: str) -> tuple[str, str]:
    name, _, version = mid.partition(":")
    return name, version


def _split_replica_id(rid: str) -> tuple[str, str, int]:
    name, version, replica = rid.split(":")
    return name, version, int(replica)


@dataclass
class _Change:
    """What a validated mutation writes: `apply` queues the writes; `events` are published with the new rev."""

    apply: Callable[[Pipeline], None]
    events: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None


def _pairs(flat: list[str]) -> dict[str, str]:
    """HGETALL's reply inside a Lua script (a flat field, value list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


#: Reads the whole config in one atomic script (no WATCH retries, so writers cannot starve it). It spells
#: the keys of the schema above: k_app(a) == "clipper:app:" .. a, k_model(m, v) == "clipper:model:" .. "<m>:<v>", ...
_SNAPSHOT_LUA = """
local apps, models, currents, replicas = {}, {}, {}, {}
for _, a in ipairs(redis.call('SMEMBERS', 'clipper:apps')) do
  apps[#apps + 1] = {a, redis.call('HGETALL', 'clipper:app:' .. a), redis.call('SMEMBERS', 'clipper:links:' .. a)}
end
for _, mid in ipairs(redis.call('SMEMBERS', 'clipper:models')) do
  models[#models + 1] = {mid, redis.call('HGETALL', 'clipper:model:' .. mid)}
end
for _, m in ipairs(redis.call('SMEMBERS', 'clipper:model_names')) do
  currents[#currents + 1] = {m, redis.call('GET', 'clipper:current:' .. m) or ''}
end
for _, rid in ipairs(redis.call('SMEMBERS', 'clipper:replicas')) do
  replicas[#replicas + 1] = {rid, redis.call('HGETALL', 'clipper:replica:' .. rid)}
end
return {redis.call('GET', 'clipper:rev') or '0', apps, models, currents, replicas}
"""


def parse_event(message: dict[str, Any] | None) -> dict[str, Any] | None:
    """The event carried by a PubSub message (`PubSub.get_message()`), or None for other messages."""
    if not message or message.get("type") != "message":
        return None
    data = message["data"]
    return json.loads(data)


class StateStore:
    """Apps, models, versions, links, replicas and selection state in one Redis database.

    `client` must be created with `decode_responses=True` (`StateStore.connect` does so). Methods
    are synchronous and thread-safe (each call takes its own pooled connection); call them from a
    thread executor in asyncio code. Business-rule failures raise `StateError`; Redis failures
    raise `redis.ConnectionError` / `redis.TimeoutError` unchanged.
    """

    #: Most applications `add_app` accepts (each one costs every query frontend an app entry).
    max_apps: int = 1000

    def __init__(self, client: redis.Redis) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("StateStore needs a redis.Redis created with decode_responses=True")
        self.redis = client
        self._snapshot_script = client.register_script(_SNAPSHOT_LUA)

    @classmethod
    def connect(cls, host: str = "127.0.0.1", port: int = 6379, db: int = 0, *,
                connect_timeout: float = 1.0, timeout: float = 5.0, **kwargs: Any) -> StateStore:
        """A store over a new client with short timeouts and one immediate reconnect attempt per command.

        The client connects lazily, so this succeeds while Redis is down; commands then raise
        `redis.ConnectionError` quickly until it is back.
        """
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        client = redis.Redis(host=host, port=port, db=db, decode_responses=True, socket_connect_timeout=connect_timeout,
                             socket_timeout=timeout, **kwargs)
        return cls(client)

    def close(self) -> None:
        self.redis.close()

    def ping(self) -> bool:
        return bool(self.redis.ping())

    # ------------------------------------------------------------------ machinery

    def _mutate(self, plan: Callable[[Pipeline], _Change]) -> Any:
        """Runs `plan` (reads and checks) under WATCH of the revision, then its writes and events in MULTI/EXEC."""
        with self.redis.pipeline() as pipe:
            for attempt in range(MAX_ATTEMPTS):
                if attempt >= 2:  # contention: step aside for a moment so that one writer wins
                    time.sleep(random.uniform(0, 0.0005 * attempt))
                try:
                    pipe.watch(K_REV)
                    rev = int(pipe.get(K_REV) or 0) + 1
                    change = plan(pipe)
                    if not change.events:  # nothing to change
                        return change.result
                    pipe.multi()
                    change.apply(pipe)
                    pipe.set(K_REV, rev)
                    for event in change.events:
                        pipe.publish(CHANNEL, json.dumps({**event, "rev": rev}))
                    pipe.execute()
                    return change.result
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
        raise StateError("Too many concurrent changes; try again")

    def revision(self) -> int:
        """The config revision: the `rev` of the last mutation (0 for an empty store)."""
        return int(self.redis.get(K_REV) or 0)

    def subscribe(self, timeout: float = 5.0) -> PubSub:
        """A PubSub subscribed to `clipper:changes`, returned once Redis confirmed the subscription.

        Read events with `parse_event(pubsub.get_message(timeout=...))`; close it when done.
        """
        pubsub = self.redis.pubsub()
        try:
            pubsub.subscribe(CHANNEL)
            message = pubsub.get_message(timeout=timeout)
            if not message or message.get("type") != "subscribe":
                raise redis.TimeoutError(f"no subscription confirmation for {CHANNEL} within {timeout} s")
            pubsub.ignore_subscribe_messages = True
        except BaseException:
            pubsub.close()
            raise
        return pubsub

    # ------------------------------------------------------------------ applications

    def add_app(self, name: str, input_type: str, default_output: str, latency_slo_micros: int,
                policy: str = DEFAULT_POLICY) -> str:
        """Registers an application; returns its canonical input type."""
        _check_str(name, "name")
        canonical = canonical_input_type(input_type)
        _check_str(default_output, "default_output")
        _check_int(latency_slo_micros, "latency_slo_micros")
        _check_str(policy, "policy")

        def plan(pipe: Pipeline) -> _Change:
            if pipe.exists(k_app(name)):
                raise StateError(f"application '{name}' already exists")
            if pipe.scard(K_APPS) >= self.max_apps:
                raise StateError(f"the limit of {self.max_apps} applications is reached; delete one first")

            def apply(p: Pipeline) -> None:
                p.hset(k_app(name), mapping={"name": name, "input_type": canonical, "default_output": default_output,
                                             "latency_slo_micros": str(latency_slo_micros), "policy": policy})
                p.sadd(K_APPS, name)

            return _Change(apply, [{"kind": "app", "op": "added", "name": name}], canonical)

        return self._mutate(plan)

    def delete_app(self, name: str) -> None:
        """Deletes an application, its links and its selection state."""
        _check_str(name, "name")

        def plan(pipe: Pipeline) -> _Change:
            if not pipe.exists(k_app(name)):
                raise StateError(f"Application '{name}' does not exist")
            links = pipe.smembers(k_links(name))

            def apply(p: Pipeline) -> None:
                p.delete(k_app(name), k_links(name), k_selection(name))
                p.srem(K_APPS, name)
                for model in links:
                    p.srem(k_linked_apps(model), name)

            return _Change(apply, [{"kind": "app", "op": "deleted", "name": name}])

        self._mutate(plan)

    def get_app(self, name: str) -> dict[str, Any] | None:
        """{name, input_type, default_output, latency_slo_micros, policy, linked_models} or None."""
        with self.redis.pipeline() as p:
            p.hgetall(k_app(name))
            p.smembers(k_links(name))
            h, links = p.execute()
        return _app_from_hash(name, h, links) if h else None

    def list_apps(self) -> list[str]:
        """All app names, sorted."""
        return sorted(self.redis.smembers(K_APPS))

    def get_apps(self) -> list[dict[str, Any]]:
        """Every app as `get_app` describes it, sorted by name."""
        names = self.list_apps()
        if not names:
            return []
        with self.redis.pipeline() as p:
            for name in names:
                p.hgetall(k_app(name))
                p.smembers(k_links(name))
            replies = p.execute()
        return [_app_from_hash(name, h, links)
                for name, h, links in zip(names, replies[::2], replies[1::2], strict=True) if h]

    def get_linked_models(self, app: str) -> list[str]:
        """Model names linked to `app` (sorted); StateError if the app does not exist."""
        found = self.get_app(app)
        if found is None:
            raise StateError(f"No application with name '{app}' exists.")
        return found["linked_models"]

    def get_state(self, app: str, uid: int = DEFAULT_USER_ID) -> str:
        """What Clipper's `get_state` returns: the app's default output ("" if the app is absent)."""
        return self.redis.hget(k_app(app), "default_output") or ""

    # ------------------------------------------------------------------ selection-policy state

    def get_selection_state(self, app: str, uid: int = DEFAULT_USER_ID) -> str | None:
        """The policy state stored for (app, uid), or None."""
        return self.redis.hget(k_selection(app), str(uid))

    def selection_states(self, app: str) -> dict[int, str]:
        """Every policy state stored for an app, by user id."""
        return {int(uid): state for uid, state in self.redis.hgetall(k_selection(app)).items()}

    def reset_selection_state(self, app: str, uid: int | None = None) -> None:
        """Forgets what an app's policy learned, for one user id or (None) for all."""
        if not self.redis.exists(k_app(app)):
            raise StateError(f"No app with name '{app}' exists.")
        with self.redis.pipeline(transaction=True) as pipe:
            if uid is None:
                pipe.delete(k_selection(app))
            else:
                pipe.hdel(k_selection(app), str(uid))
            pipe.publish(CHANNEL, json.dumps({"kind": "selection_state", "app": app, "uid": uid}))
            pipe.execute()

    def set_selection_state(self, app: str, state: str, uid: int = DEFAULT_USER_ID) -> None:
        """Stores policy state for (app, uid) and publishes a `selection_state` event (no config revision)."""
        _check_str(state, "state")
        with self.redis.pipeline() as pipe:
            for _ in range(MAX_ATTEMPTS):
                try:
                    pipe.watch(k_app(app))
                    if not pipe.exists(k_app(app)):
                        raise StateError(f"No app with name '{app}' exists.")
                    pipe.multi()
                    pipe.hset(k_selection(app), str(uid), state)
                    pipe.publish(CHANNEL, json.dumps({"kind": "selection_state", "app": app, "uid": uid}))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
        raise StateError("Too many concurrent changes; try again")

    def update_selection_state(self, app: str, uid: int, update: Callable[[str | None, str | None], str]) -> str:
        """Read-modify-write of the policy state of (app, uid), atomic against every other writer.

        `update` gets the state stored for `uid` and the one stored for the default user (uid 0; what
        a new user starts from), each None when absent, and returns the state to store. The reads are
        WATCHed and the write (with a `selection_state` event) is one MULTI/EXEC, so a concurrent
        write of the app's states makes it start over with fresh reads: `update` may run more than
        once, and must be pure. Returns the state stored. StateError if the app does not exist.
        """
        key = k_selection(app)
        with self.redis.pipeline() as pipe:
            for attempt in range(MAX_ATTEMPTS):
                if attempt >= 2:  # contention: step aside for a moment so that one writer wins
                    time.sleep(random.uniform(0, 0.0005 * attempt))
                try:
                    pipe.watch(k_app(app), key)
                    if not pipe.exists(k_app(app)):
                        raise StateError(f"No app with name '{app}' exists.")
                    own, shared = pipe.hmget(key, str(uid), str(DEFAULT_USER_ID))
                    state = _check_str(update(own, shared), "state")
                    pipe.multi()
                    pipe.hset(key, str(uid), state)
                    pipe.publish(CHANNEL, json.dumps({"kind": "selection_state", "app": app, "uid": uid}))
                    pipe.execute()
                    return state
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
        raise StateError("Too many concurrent changes; try again")

    # ------------------------------------------------------------------ models and versions

    def _check_links_compatible(self, pipe: Pipeline, model: str, input_type: str) -> None:
        """Clipper's check that a (new or newly current) version fits every app the model name is linked to."""
        for app in sorted(pipe.smembers(k_linked_apps(model))):
            app_type = pipe.hget(k_app(app), "input_type")
            if app_type is not None and app_type != input_type:
                raise StateError(
                    f"Model with name '{model}' is already linked to app '{app}' using input type '{app_type}'. "
                    f"The input type you provided for a new version of the model, '{input_type}', is not compatible.")

    def add_model(self, name: str, version: str, input_type: str, labels: Iterable[str] = (),
                  container_name: str = NO_CONTAINER, model_data_path: str = "DEPRECATED",
                  batch_size: int = DEFAULT_BATCH_SIZE, batch_wait_micros: int = 0) -> str:
        """Registers model version `name:version` and makes it the current version; returns the canonical input type."""
        _check_str(name, "model_name")
        _check_str(version, "model_version")
        labels = [_check_str(label, "label") for label in labels]
        canonical = canonical_input_type(input_type)
        _check_str(container_name, "container_name")
        _check_str(model_data_path, "model_data_path")
        _check_int(batch_size, "batch_size")
        _check_int(batch_wait_micros, "batch_wait_micros")
        if batch_size <= 0 and batch_size != DEFAULT_BATCH_SIZE:
            raise StateError("The batch size must be positive or DEFAULT_BATCH_SIZE, which is -1")
        if batch_wait_micros < 0:
            raise StateError("The batch wait must not be negative")
        _check_group_str(name, "model name")
        _check_group_str(version, "model version")
        for label in labels:
            _check_group_str(label, "label")

        def plan(pipe: Pipeline) -> _Change:
            if pipe.exists(k_model(name, version)):
                raise StateError(f"model with name '{name}' and version '{version}' already exists")
            self._check_links_compatible(pipe, name, canonical)

            def apply(p: Pipeline) -> None:
                p.hset(k_model(name, version), mapping={
                    "model_name": name, "model_version": version, "input_type": canonical,
                    "labels": json.dumps(labels), "container_name": container_name,
                    "model_data_path": model_data_path, "batch_size": str(batch_size),
                    "batch_wait_micros": str(batch_wait_micros)})
                p.sadd(K_MODELS, model_id(name, version))
                p.sadd(K_MODEL_NAMES, name)
                p.sadd(k_versions(name), version)
                p.set(k_current(name), version)

            return _Change(apply, [{"kind": "model", "op": "added", "name": name, "version": version},
                                   {"kind": "current_version", "model": name, "version": version}], canonical)

        return self._mutate(plan)

    def delete_model(self, name: str, version: str) -> None:
        """Deletes model version `name:version` with its replicas; clears the current version if it was this one."""
        _check_str(name, "model_name")
        _check_str(version, "model_version")

        def plan(pipe: Pipeline) -> _Change:
            if not pipe.exists(k_model(name, version)):
                raise StateError(f"model with name '{name}' and version '{version}' does not exist")
            versions = pipe.smembers(k_versions(name))
            current = pipe.get(k_current(name))
            replica_ids = pipe.smembers(k_model_replicas(name, version))
            events: list[dict[str, Any]] = [{"kind": "model", "op": "deleted", "name": name, "version": version}]
            if current == version:
                events.append({"kind": "current_version", "model": name, "version": None})

            def apply(p: Pipeline) -> None:
                p.delete(k_model(name, version), k_model_replicas(name, version), k_replica_seq(name, version))
                p.srem(K_MODELS, model_id(name, version))
                p.srem(k_versions(name), version)
                if versions <= {version}:
                    p.srem(K_MODEL_NAMES, name)
                if current == version:
                    p.delete(k_current(name))
                for rid in replica_ids:
                    p.delete(k_replica(name, version, int(rid)))
                    p.srem(K_REPLICAS, f"{name}:{version}:{rid}")

            return _Change(apply, events)

        self._mutate(plan)

    def get_model(self, name: str, version: str) -> dict[str, Any] | None:
        """{model_name, model_version, input_type, labels, container_name, model_data_path, batch_size,
        batch_wait_micros, is_current_version} or None."""
        with self.redis.pipeline() as p:
            p.hgetall(k_model(name, version))
            p.get(k_current(name))
            h, current = p.execute()
        return _model_from_hash(h, current) if h else None

    def list_models(self) -> list[str]:
        """Every model version as `<m>:<v>`, sorted by (name, version)."""
        return sorted(self.redis.smembers(K_MODELS), key=_split_model_id)

    def get_models(self) -> list[dict[str, Any]]:
        """Every model version as `get_model` describes it, sorted by (name, version)."""
        ids = [_split_model_id(mid) for mid in self.list_models()]
        if not ids:
            return []
        with self.redis.pipeline() as p:
            for name, version in ids:
                p.hgetall(k_model(name, version))
                p.get(k_current(name))
            replies = p.execute()
        return [_model_from_hash(h, current) for h, current in zip(replies[::2], replies[1::2], strict=True) if h]

    def model_versions(self, name: str) -> list[str]:
        """The registered versions of model `name`, sorted."""
        return sorted(self.redis.smembers(k_versions(name)))

    def get_current_version(self, name: str) -> str | None:
        return self.redis.get(k_current(name))

    def current_versions(self) -> dict[str, str]:
        """Model name -> current version, for every model name with one."""
        names = sorted(self.redis.smembers(K_MODEL_NAMES))
        if not names:
            return {}
        currents = self.redis.mget([k_current(n) for n in names])
        return {n: v for n, v in zip(names, currents, strict=True) if v is not None}

    def set_current_version(self, name: str, version: str) -> None:
        """Makes `version` the current version of model `name` (roll forward or back)."""
        _check_str(name, "model_name")
        _check_str(version, "model_version")

        def plan(pipe: Pipeline) -> _Change:
            versions = pipe.smembers(k_versions(name))
            if not versions:
                raise StateError(f"Cannot set version for nonexistent model '{name}'")
            if version not in versions:
                raise StateError(f"Cannot set non-existent version '{version}' for model with name '{name}'")
            self._check_links_compatible(pipe, name, pipe.hget(k_model(name, version), "input_type"))

            def apply(p: Pipeline) -> None:
                p.set(k_current(name), version)

            return _Change(apply, [{"kind": "current_version", "model": name, "version": version}])

        self._mutate(plan)

    # ------------------------------------------------------------------ links

    def add_links(self, app: str, model_names: list[str]) -> list[str]:
        """Links models (by name) to an app, with Clipper's checks in Clipper's order; returns the names linked.

        Apps whose policy does not `policy_allows_many` keep Clipper's rule of at most one model.
        """
        _check_str(app, "app_name")
        model_names = [_check_str(m, "model name") for m in model_names]

        def plan(pipe: Pipeline) -> _Change:
            app_h = pipe.hgetall(k_app(app))
            if not app_h:
                raise StateError(f"No app with name '{app}' exists.")
            app_type = app_h["input_type"]
            for model in model_names:
                current = pipe.get(k_current(model))
                if current is None:
                    raise StateError(f"No model with name '{model}' exists.")
                model_type = pipe.hget(k_model(model, current), "input_type")
                if model_type != app_type:
                    raise StateError(f"Model with name '{model}' has incompatible input_type '{model_type}'. "
                                     f"Requested app to link to has input_type '{app_type}'.")
            if not model_names:
                raise StateError(f"Please provide the name of the model that you want to link to the application "
                                 f"'{app}'")
            many = policy_allows_many(app_h.get("policy", DEFAULT_POLICY))
            if len(model_names) > 1 and not many:
                raise StateError(f"Applications must be linked with at most one model. "
                                 f"Attempted to add links to {len(model_names)} models.")
            existing = pipe.smembers(k_links(app))
            for model in model_names:
                if model in existing:
                    raise StateError(f"The model with name '{model}' is already linked to '{app}'")
            if existing and not many:
                raise StateError(f"A model with name {sorted(existing)[0]} is already linked to '{app}'.")
            added = list(dict.fromkeys(model_names))

            def apply(p: Pipeline) -> None:
                p.sadd(k_links(app), *added)
                for model in added:
                    p.sadd(k_linked_apps(model), app)

            return _Change(apply, [{"kind": "links", "op": "added", "app": app, "models": added}], added)

        return self._mutate(plan)

    def delete_links(self, app: str, model_names: list[str]) -> None:
        """Removes links between an app and models (Clipper's messages; an empty list is a no-op)."""
        _check_str(app, "app_name")
        model_names = [_check_str(m, "model name") for m in model_names]

        def plan(pipe: Pipeline) -> _Change:
            if not pipe.exists(k_app(app)):
                raise StateError(f"No app with name {app} exists.")
            existing = pipe.smembers(k_links(app))
            for model in model_names:
                if model not in existing:
                    raise StateError(f"Cannot remove nonexistent link between app {app} and model {model}")
            removed = list(dict.fromkeys(model_names))

            def apply(p: Pipeline) -> None:
                for model in removed:
                    p.srem(k_links(app), model)
                    p.srem(k_linked_apps(model), app)

            events = [{"kind": "links", "op": "deleted", "app": app, "models": removed}] if removed else []
            return _Change(apply, events)

        self._mutate(plan)

    # ------------------------------------------------------------------ replicas

    def next_replica_id(self, name: str, version: str) -> int:
        """A fresh replica id for `name:version` (0, 1, 2, ...; never reused while the version exists)."""
        return int(self.redis.incr(k_replica_seq(name, version))) - 1

    def add_replica(self, name: str, version: str, replica_id: int, input_type: str, connection_id: str = "",
                    frontend_id: str = "") -> None:
        """Records a connected replica (overwrites a record with the same id); `frontend_id`: the announcement id
        of the query frontend it is connected to (`announce_frontend`)."""
        _check_str(name, "model_name")
        _check_str(version, "model_version")
        _check_int(replica_id, "replica_id")
        canonical = canonical_input_type(input_type)
        _check_group_str(name, "model name")
        _check_group_str(version, "model version")

        def plan(pipe: Pipeline) -> _Change:
            def apply(p: Pipeline) -> None:
                p.hset(k_replica(name, version, replica_id), mapping={
                    "model_id": model_id(name, version), "model_name": name, "model_version": version,
                    "model_replica_id": str(replica_id), "input_type": canonical, "connection_id": connection_id,
                    "frontend_id": frontend_id})
                p.sadd(k_model_replicas(name, version), replica_id)
                p.sadd(K_REPLICAS, f"{name}:{version}:{replica_id}")

            return _Change(apply, [{"kind": "replica", "op": "added", "name": name, "version": version,
                                    "replica_id": replica_id}])

        self._mutate(plan)

    def delete_replica(self, name: str, version: str, replica_id: int) -> bool:
        """Removes a replica record; False if there was none."""

        def plan(pipe: Pipeline) -> _Change:
            if not pipe.exists(k_replica(name, version, replica_id)):
                return _Change(lambda p: None, [], False)  # no events: nothing is written

            def apply(p: Pipeline) -> None:
                p.delete(k_replica(name, version, replica_id))
                p.srem(k_model_replicas(name, version), replica_id)
                p.srem(K_REPLICAS, f"{name}:{version}:{replica_id}")

            return _Change(apply, [{"kind": "replica", "op": "deleted", "name": name, "version": version,
                                    "replica_id": replica_id}], True)

        return self._mutate(plan)

    def get_replica(self, name: str, version: str, replica_id: int) -> dict[str, Any] | None:
        """{model_id, model_name, model_version, model_replica_id, input_type, connection_id, frontend_id} or None
        (`frontend_id` "" for a record written without one)."""
        h = self.redis.hgetall(k_replica(name, version, replica_id))
        return _replica_from_hash(h) if h else None

    def list_replicas(self) -> list[str]:
        """Every replica as `<m>:<v>:<id>`, sorted by (name, version, id)."""
        return sorted(self.redis.smembers(K_REPLICAS), key=_split_replica_id)

    def get_replicas(self) -> list[dict[str, Any]]:
        """Every replica as `get_replica` describes it, sorted by (name, version, id)."""
        ids = self.list_replicas()
        if not ids:
            return []
        with self.redis.pipeline() as p:
            for rid in ids:
                p.hgetall(k_replica(*_split_replica_id(rid)))
            replies = p.execute()
        return [_replica_from_hash(h) for h in replies if h]

    # ------------------------------------------------------------------ query frontends

    def announce_frontend(self, record: dict[str, Any], ttl_s: float) -> bool:
        """Records (or renews) a query frontend's announcement `record` (`id`, `http`: the address its HTTP
        routes are reachable at, `rpc`, `pid`); it expires `ttl_s` seconds later unless announced again.
        Returns whether an announcement of that id was live (False: a first one, or one that had expired)."""
        frontend_id = _check_str(record.get("id"), "id")
        with self.redis.pipeline(transaction=True) as p:
            p.exists(k_frontend(frontend_id))
            p.set(k_frontend(frontend_id), json.dumps(record), px=max(1, int(ttl_s * 1000)))
            p.sadd(K_FRONTENDS, frontend_id)
            live, *_ = p.execute()
        return bool(live)

    def withdraw_frontend(self, frontend_id: str) -> None:
        """Removes a query frontend's announcement (it is stopping)."""
        with self.redis.pipeline(transaction=True) as p:
            p.delete(k_frontend(frontend_id))
            p.srem(K_FRONTENDS, frontend_id)
            p.execute()

    def get_frontends(self) -> list[dict[str, Any]]:
        """The announcements that have not expired, sorted by id; ids whose record expired are dropped."""
        ids = sorted(self.redis.smembers(K_FRONTENDS))
        if not ids:
            return []
        records = self.redis.mget([k_frontend(i) for i in ids])
        if expired := [i for i, r in zip(ids, records, strict=True) if r is None]:
            self.redis.srem(K_FRONTENDS, *expired)
        out = []
        for r in records:
            if r is not None:
                try:
                    out.append(json.loads(r))
                except ValueError:
                    continue
        return out

    # ------------------------------------------------------------------ everything at once

    def snapshot(self) -> dict[str, Any]:
        """A consistent view of the whole config, for a frontend that starts or lost its subscription::

            {"rev": int,
             "apps": {name: get_app(name)},
             "models": {"<m>:<v>": get_model(m, v)},
             "current_versions": {m: v},
             "replicas": {"<m>:<v>:<id>": get_replica(m, v, id)}}
        """
        rev, apps, models, currents, replicas = self._snapshot_script()
        current = {name: v for name, v in sorted(currents) if v}
        app_views = {a: _app_from_hash(a, _pairs(h), links) for a, h, links in sorted(apps) if h}
        model_views = {}
        for mid, h in sorted(models, key=lambda x: _split_model_id(x[0])):
            if h:
                model = _pairs(h)
                model_views[mid] = _model_from_hash(model, current.get(model["model_name"]))
        replica_views = {rid: _replica_from_hash(_pairs(h))
                         for rid, h in sorted(replicas, key=lambda x: _split_replica_id(x[0])) if h}
        return {"rev": int(rev), "apps": app_views, "models": model_views, "current_versions": current,
                "replicas": replica_views}
