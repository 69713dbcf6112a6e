"""`clipper.state.StateStore` against a real redis-server: every mutation, Clipper's error texts, events, snapshot."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from clipper.frontend.selection_writer import SelectionStateWriter
from clipper.state import (
    CHANNEL,
    DEFAULT_POLICY,
    InvalidInputType,
    RedisServer,
    StateError,
    StateStore,
    parse_event,
    policy_allows_many,
    redis_server_binary,
)

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed "
                                "(Debian: apt-get install redis-server)")


class Events:
    """Collects events from `clipper:changes`."""

    def __init__(self, store: StateStore) -> None:
        self.pubsub = store.subscribe()

    def take(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next `n` events (fails if they do not come within `timeout`)."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"got {out}, expected {n} events"
            event = parse_event(self.pubsub.get_message(timeout=0.1))
            if event is not None:
                out.append(event)
        return out

    def none(self, wait: float = 0.2) -> None:
        """Asserts that no event arrives within `wait` seconds."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            event = parse_event(self.pubsub.get_message(timeout=0.05))
            assert event is None, f"unexpected event {event}"


@pytest.fixture
def events(store: StateStore) -> Iterator[Events]:
    e = Events(store)
    try:
        yield e
    finally:
        e.pubsub.close()


def error(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(StateError) as info:
        fn(*args, **kwargs)
    return info.value.message


def app_model(store: StateStore, app_type: str = "doubles", model_type: str = "doubles") -> None:
    store.add_app("a", app_type, "0.0", 100000)
    store.add_model("m", "1", model_type)


# ---------------------------------------------------------------------- applications

def test_add_and_get_app(store: StateStore) -> None:
    assert store.add_app("app", "ints", '{"y": 1}', 20000) == "integers"
    assert store.get_app("app") == {"name": "app", "input_type": "integers", "default_output": '{"y": 1}',
                                    "latency_slo_micros": 20000, "policy": DEFAULT_POLICY, "linked_models": []}
    assert store.get_app("other") is None
    store.add_app("b/c:d,e", "s", "", -1)  # app names are free strings, as in Clipper
    assert store.list_apps() == ["app", "b/c:d,e"]
    assert [a["name"] for a in store.get_apps()] == ["app", "b/c:d,e"]
    assert store.get_app("b/c:d,e")["input_type"] == "strings"


def test_number_of_apps_is_limited(store: StateStore) -> None:
    store.max_apps = 3
    for name in ("a", "b", "c"):
        store.add_app(name, "doubles", "0", 1000)
    assert error(store.add_app, "d", "doubles", "0", 1000) == \
        "the limit of 3 applications is reached; delete one first"
    store.delete_app("a")
    store.add_app("d", "doubles", "0", 1000)
    assert store.list_apps() == ["b", "c", "d"]


def test_duplicate_app_and_bad_input_type(store: StateStore) -> None:
    store.add_app("app", "doubles", "0", 1000)
    assert error(store.add_app, "app", "floats", "1", 5) == "application 'app' already exists"
    with pytest.raises(InvalidInputType, match="unknown input type 'tensor'"):
        store.add_app("x", "tensor", "0", 1000)
    assert store.list_apps() == ["app"]
    with pytest.raises(TypeError):
        store.add_app("y", "doubles", "0", 1.5)  # type: ignore[arg-type]


def test_delete_app_removes_links_and_selection_state(store: StateStore) -> None:
    app_model(store)
    store.add_links("a", ["m"])
    store.set_selection_state("a", '{"y_hat": "0.0"}')
    store.delete_app("a")
    assert store.get_app("a") is None and store.list_apps() == []
    assert error(store.delete_app, "a") == "Application 'a' does not exist"
    assert store.get_selection_state("a") is None
    store.add_app("a", "doubles", "0.0", 100000)
    assert store.get_app("a")["linked_models"] == []  # Clipper's re-created app inherited the old link
    # the reverse index forgot the app: a new version of another input type is no longer refused
    store.add_model("m", "2", "ints")
    assert not [k for k in store.redis.keys("clipper:linked_apps:*") if store.redis.scard(k)]


def test_get_state_and_selection_state(store: StateStore) -> None:
    store.add_app("a", "doubles", "default!", 1000)
    assert store.get_state("a") == "default!"
    assert store.get_state("a", uid=7) == "default!"
    assert store.get_state("missing") == ""
    assert store.get_selection_state("a") is None
    store.set_selection_state("a", "state-0")
    store.set_selection_state("a", "state-3", uid=3)
    assert store.get_selection_state("a") == "state-0" and store.get_selection_state("a", 3) == "state-3"
    assert error(store.set_selection_state, "missing", "s") == "No app with name 'missing' exists."


def counter_update(own: str | None, shared: str | None) -> str:
    """A state update for the tests: a JSON counter, started from the default user's when the user has none."""
    base = json.loads(own if own is not None else shared or '{"t": 0}')
    return json.dumps({"t": base["t"] + 1})


def test_update_selection_state_reads_modifies_writes_and_publishes(store: StateStore, events: Events) -> None:
    store.add_app("a", "doubles", "0", 1000)
    assert store.update_selection_state("a", 0, counter_update) == '{"t": 1}'
    assert store.update_selection_state("a", 0, counter_update) == '{"t": 2}'
    assert store.update_selection_state("a", 5, counter_update) == '{"t": 3}'  # a new user starts from uid 0's
    assert store.selection_states("a") == {0: '{"t": 2}', 5: '{"t": 3}'}
    assert [(e["kind"], e.get("uid")) for e in events.take(4)] == [
        ("app", None), ("selection_state", 0), ("selection_state", 0), ("selection_state", 5)]
    assert error(store.update_selection_state, "missing", 0, counter_update) == "No app with name 'missing' exists."
    with pytest.raises(TypeError):
        store.update_selection_state("a", 0, lambda own, shared: None)  # type: ignore[arg-type,return-value]
    assert store.get_selection_state("a") == '{"t": 2}'


def test_update_selection_state_starts_over_after_a_concurrent_write(store: StateStore, redis_server) -> None:
    store.add_app("a", "doubles", "0", 1000)
    other = StateStore.connect(redis_server.host, redis_server.port)
    seen: list[str | None] = []

    def update(own: str | None, shared: str | None) -> str:
        seen.append(own)
        if len(seen) == 1:  # another frontend writes between this read and this write
            other.set_selection_state("a", '{"t": 10}')
        return counter_update(own, shared)

    try:
        assert store.update_selection_state("a", 0, update) == '{"t": 11}'
    finally:
        other.close()
    assert seen == [None, '{"t": 10}'], "the update ran again over the state the other writer stored"


def test_concurrent_updates_of_selection_state_all_count(store: StateStore, redis_server) -> None:
    """Two writers (two frontends) updating one state at once: no update is lost."""
    store.add_app("a", "doubles", "0", 1000)
    n = 150

    def writer() -> None:
        mine = StateStore.connect(redis_server.host, redis_server.port)
        try:
            for _ in range(n):
                mine.update_selection_state("a", 0, counter_update)
        finally:
            mine.close()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert json.loads(store.get_selection_state("a") or "{}") == {"t": 2 * n}


def test_selection_writers_of_two_frontends_all_count(store: StateStore, redis_server) -> None:
    """The query frontend's writer: updates queued from two frontends at once all reach the stored state."""
    store.add_app("a", "doubles", "0", 1000)
    writers = [SelectionStateWriter(redis_server.host, redis_server.port) for _ in range(2)]
    n = 300
    for i in range(n):
        for w in writers:
            w.update("a", 0, counter_update)
        if i % 50 == 0:
            time.sleep(0.01)  # let some writes go out one by one, others together
    for w in writers:
        w.close()
    assert json.loads(store.get_selection_state("a") or "{}") == {"t": 2 * n}


def test_selection_writer_keeps_updates_while_redis_is_away(tmp_path: Path) -> None:
    server = RedisServer(log_path=tmp_path / "redis.log", extra_args=["--dir", str(tmp_path), "--appendonly", "yes"])
    with server:
        store = StateStore.connect(server.host, server.port)
        store.add_app("a", "doubles", "0", 1000)
    writer = SelectionStateWriter(server.host, server.port)
    try:
        for _ in range(5):  # while Redis is away
            writer.update("a", 0, counter_update)
        time.sleep(0.3)
        server.start()  # with the app, from its append-only file
        writer.update("deleted", 0, counter_update)  # an app that does not exist: dropped
        writer.update("a", 0, counter_update)
        deadline = time.monotonic() + 10
        while store.get_selection_state("a") != '{"t": 6}':
            assert time.monotonic() < deadline, store.get_selection_state("a")
            time.sleep(0.05)
        assert store.selection_states("deleted") == {}
    finally:
        writer.close()
        store.close()
        server.stop()


def test_policy_allows_many() -> None:
    assert policy_allows_many(DEFAULT_POLICY) is False
    assert policy_allows_many("Exp3Policy") is True


# ---------------------------------------------------------------------- models

def test_add_model_sets_current_version(store: StateStore) -> None:
    assert store.add_model("m", "1", "d", labels=["x", "y"], container_name="img:1", model_data_path="/p",
                           batch_size=8, batch_wait_micros=200) == "doubles"
    assert store.get_model("m", "1") == {
        "model_name": "m", "model_version": "1", "input_type": "doubles", "labels": ["x", "y"],
        "container_name": "img:1", "model_data_path": "/p", "batch_size": 8, "batch_wait_micros": 200,
        "is_current_version": True}
    store.add_model("m", "2", "doubles", labels=[])
    assert store.get_current_version("m") == "2"
    assert store.get_model("m", "1")["is_current_version"] is False
    assert store.get_model("m", "2")["labels"] == []  # Clipper returned [""]
    assert store.get_model("m", "2")["container_name"] == "NO_CONTAINER"
    assert store.get_model("m", "3") is None
    store.add_model("k", "10", "bytes")
    assert store.list_models() == ["k:10", "m:1", "m:2"]
    assert [(m["model_name"], m["model_version"]) for m in store.get_models()] == [("k", "10"), ("m", "1"), ("m", "2")]
    assert store.model_versions("m") == ["1", "2"]
    assert store.current_versions() == {"k": "10", "m": "2"}


def test_add_model_errors(store: StateStore) -> None:
    msg = "The batch size must be positive or DEFAULT_BATCH_SIZE, which is -1"
    assert error(store.add_model, "m", "1", "doubles", batch_size=0) == msg
    assert error(store.add_model, "m", "1", "doubles", batch_size=-2) == msg
    assert error(store.add_model, "a,b", "1", "doubles") == \
        "Invalid model name supplied: a,b. Contains one of: ',', ':'"
    assert error(store.add_model, "m", "1:2", "doubles") == \
        "Invalid model version supplied: 1:2. Contains one of: ',', ':'"
    assert error(store.add_model, "m", "1", "doubles", labels=["ok", "x:y"]) == \
        "Invalid label supplied: x:y. Contains one of: ',', ':'"
    # batch size is checked before names, as in Clipper
    assert error(store.add_model, "a,b", "1", "doubles", batch_size=0) == msg
    with pytest.raises(InvalidInputType):
        store.add_model("m", "1", "matrix")
    store.add_model("m", "1", "doubles", batch_size=1)
    assert error(store.add_model, "m", "1", "doubles") == "model with name 'm' and version '1' already exists"
    assert store.list_models() == ["m:1"]


def test_new_version_must_fit_linked_apps(store: StateStore) -> None:
    app_model(store)
    store.add_links("a", ["m"])
    assert error(store.add_model, "m", "2", "floats") == (
        "Model with name 'm' is already linked to app 'a' using input type 'doubles'. The input type you provided "
        "for a new version of the model, 'floats', is not compatible.")
    store.add_model("m", "2", "double")
    assert store.get_current_version("m") == "2"


def test_set_current_version(store: StateStore) -> None:
    assert error(store.set_current_version, "m", "1") == "Cannot set version for nonexistent model 'm'"
    store.add_model("m", "1", "doubles")
    store.add_model("m", "2", "ints")
    assert error(store.set_current_version, "m", "3") == "Cannot set non-existent version '3' for model with name 'm'"
    store.set_current_version("m", "1")
    assert store.get_current_version("m") == "1"
    store.add_app("a", "doubles", "0", 1000)
    store.add_links("a", ["m"])
    assert error(store.set_current_version, "m", "2") == (
        "Model with name 'm' is already linked to app 'a' using input type 'doubles'. The input type you provided "
        "for a new version of the model, 'integers', is not compatible.")
    assert store.get_current_version("m") == "1"


def test_delete_model_is_synchronous(store: StateStore) -> None:
    store.add_model("m", "1", "doubles")
    store.add_model("m", "2", "doubles")
    store.add_replica("m", "2", store.next_replica_id("m", "2"), "doubles")
    store.add_replica("m", "1", store.next_replica_id("m", "1"), "doubles")
    store.delete_model("m", "2")  # the current version
    assert store.get_model("m", "2") is None and store.list_models() == ["m:1"]
    assert store.get_current_version("m") is None  # Clipper left a dangling pointer
    assert store.list_replicas() == ["m:1:0"]
    assert error(store.delete_model, "m", "2") == "model with name 'm' and version '2' does not exist"
    store.set_current_version("m", "1")
    store.delete_model("m", "1")
    assert store.model_versions("m") == [] and store.current_versions() == {} and store.list_replicas() == []
    assert error(store.set_current_version, "m", "1") == "Cannot set version for nonexistent model 'm'"
    leftovers = [k for k in store.redis.keys("*") if k != "clipper:rev"]
    assert leftovers == []


def test_delete_other_version_keeps_current(store: StateStore) -> None:
    store.add_model("m", "1", "doubles")
    store.add_model("m", "2", "doubles")
    store.delete_model("m", "1")
    assert store.get_current_version("m") == "2"


# ---------------------------------------------------------------------- links

def test_add_links_checks_in_clipper_order(store: StateStore) -> None:
    assert error(store.add_links, "a", ["m"]) == "No app with name 'a' exists."
    store.add_app("a", "doubles", "0", 1000)
    assert error(store.add_links, "a", ["m"]) == "No model with name 'm' exists."
    store.add_model("m", "1", "ints")
    assert error(store.add_links, "a", ["m"]) == (
        "Model with name 'm' has incompatible input_type 'integers'. "
        "Requested app to link to has input_type 'doubles'.")
    store.add_model("m", "2", "doubles")
    store.add_model("n", "1", "doubles")
    assert error(store.add_links, "a", []) == \
        "Please provide the name of the model that you want to link to the application 'a'"
    assert error(store.add_links, "a", ["m", "n"]) == \
        "Applications must be linked with at most one model. Attempted to add links to 2 models."
    assert store.add_links("a", ["m"]) == ["m"]
    assert error(store.add_links, "a", ["m"]) == "The model with name 'm' is already linked to 'a'"
    assert error(store.add_links, "a", ["n"]) == "A model with name m is already linked to 'a'."
    assert store.get_linked_models("a") == ["m"]
    assert error(store.get_linked_models, "zz") == "No application with name 'zz' exists."


def test_many_models_when_the_policy_allows(store: StateStore) -> None:
    store.add_app("bandit", "doubles", "0", 1000, policy="Exp3Policy")
    for name in ("m", "n", "o"):
        store.add_model(name, "1", "doubles")
    assert store.add_links("bandit", ["m", "n"]) == ["m", "n"]
    assert store.add_links("bandit", ["o"]) == ["o"]
    assert error(store.add_links, "bandit", ["n"]) == "The model with name 'n' is already linked to 'bandit'"
    assert store.get_app("bandit")["linked_models"] == ["m", "n", "o"]
    assert store.get_app("bandit")["policy"] == "Exp3Policy"


def test_delete_links(store: StateStore) -> None:
    assert error(store.delete_links, "a", ["m"]) == "No app with name a exists."
    app_model(store)
    assert error(store.delete_links, "a", ["m"]) == "Cannot remove nonexistent link between app a and model m"
    store.add_links("a", ["m"])
    rev = store.revision()
    store.delete_links("a", [])  # no-op, no event, no revision
    assert store.revision() == rev
    store.delete_links("a", ["m"])
    assert store.get_linked_models("a") == []
    store.add_model("m", "2", "strings")  # nothing linked any more: any input type goes


# ---------------------------------------------------------------------- replicas

def test_replicas(store: StateStore) -> None:
    assert [store.next_replica_id("m", "1") for _ in range(3)] == [0, 1, 2]
    store.add_replica("m", "1", 0, "d", connection_id="f#1#0", frontend_id="f")
    store.add_replica("m", "1", 10, "doubles")
    store.add_replica("m", "1", 2, "doubles")
    assert store.get_replica("m", "1", 0) == {"model_id": "m:1", "model_name": "m", "model_version": "1",
                                              "model_replica_id": 0, "input_type": "doubles",
                                              "connection_id": "f#1#0", "frontend_id": "f"}
    assert store.get_replica("m", "1", 10)["frontend_id"] == ""
    assert store.get_replica("m", "1", 5) is None
    assert store.list_replicas() == ["m:1:0", "m:1:2", "m:1:10"]
    assert [r["model_replica_id"] for r in store.get_replicas()] == [0, 2, 10]
    assert store.delete_replica("m", "1", 2) is True
    assert store.delete_replica("m", "1", 2) is False
    assert store.list_replicas() == ["m:1:0", "m:1:10"]
    assert error(store.add_replica, "m:x", "1", 0, "doubles").startswith("Invalid model name supplied")


# ---------------------------------------------------------------------- events, snapshot, transactions

def test_events(store: StateStore, events: Events) -> None:
    app_model(store)
    store.add_links("a", ["m"])
    store.set_current_version("m", "1")
    store.add_replica("m", "1", 0, "doubles")
    store.delete_replica("m", "1", 0)
    store.delete_links("a", ["m"])
    store.delete_model("m", "1")
    store.delete_app("a")
    assert events.take(11) == [
        {"kind": "app", "op": "added", "name": "a", "rev": 1},
        {"kind": "model", "op": "added", "name": "m", "version": "1", "rev": 2},
        {"kind": "current_version", "model": "m", "version": "1", "rev": 2},
        {"kind": "links", "op": "added", "app": "a", "models": ["m"], "rev": 3},
        {"kind": "current_version", "model": "m", "version": "1", "rev": 4},
        {"kind": "replica", "op": "added", "name": "m", "version": "1", "replica_id": 0, "rev": 5},
        {"kind": "replica", "op": "deleted", "name": "m", "version": "1", "replica_id": 0, "rev": 6},
        {"kind": "links", "op": "deleted", "app": "a", "models": ["m"], "rev": 7},
        {"kind": "model", "op": "deleted", "name": "m", "version": "1", "rev": 8},
        {"kind": "current_version", "model": "m", "version": None, "rev": 8},
        {"kind": "app", "op": "deleted", "name": "a", "rev": 9},
    ]
    assert store.revision() == 9
    # selection state is not a config change: an event, but no revision
    store.add_app("b", "doubles", "0", 1)
    events.take(1)
    store.set_selection_state("b", "s", uid=4)
    assert events.take(1) == [{"kind": "selection_state", "app": "b", "uid": 4}]
    assert store.revision() == 10


def test_failed_mutation_publishes_nothing(store: StateStore, events: Events) -> None:
    store.add_app("a", "doubles", "0", 1)
    events.take(1)
    with pytest.raises(StateError):
        store.add_app("a", "doubles", "0", 1)
    with pytest.raises(StateError):
        store.add_links("a", ["nope"])
    events.none()
    assert store.revision() == 1


def test_event_arrives_after_the_change_is_visible(store: StateStore, redis_server: RedisServer) -> None:
    """A subscriber that re-reads on an event always finds the whole change (writes and PUBLISH are one EXEC)."""
    seen: list[Any] = []
    reader = StateStore.connect(redis_server.host, redis_server.port)
    pubsub = reader.subscribe()

    def listen() -> None:
        while len(seen) < 20:
            event = parse_event(pubsub.get_message(timeout=0.1))
            if event and event["kind"] == "model":
                seen.append((reader.get_model("m", event["version"]), reader.get_current_version("m")))

    t = threading.Thread(target=listen)
    t.start()
    for v in range(20):
        store.add_model("m", str(v), "doubles")
    t.join(timeout=10)
    pubsub.close()
    reader.close()
    assert len(seen) == 20
    for model, current in seen:
        assert model is not None and current is not None and int(current) >= int(model["model_version"])


def test_snapshot(store: StateStore) -> None:
    assert store.snapshot() == {"rev": 0, "apps": {}, "models": {}, "current_versions": {}, "replicas": {}}
    app_model(store)
    store.add_model("m", "2", "doubles")
    store.set_current_version("m", "1")
    store.add_links("a", ["m"])
    store.add_replica("m", "1", 0, "doubles")
    snap = store.snapshot()
    assert snap["rev"] == store.revision() == 6
    assert snap["apps"] == {"a": store.get_app("a")}
    assert snap["models"] == {"m:1": store.get_model("m", "1"), "m:2": store.get_model("m", "2")}
    assert snap["models"]["m:1"]["is_current_version"] is True
    assert snap["current_versions"] == {"m": "1"}
    assert snap["replicas"] == {"m:1:0": store.get_replica("m", "1", 0)}
    json.dumps(snap)  # plain data


def test_snapshot_is_consistent_under_writes(store: StateStore, redis_server: RedisServer) -> None:
    stop = threading.Event()
    writer = StateStore.connect(redis_server.host, redis_server.port)

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer.add_app(f"app{i}", "doubles", "0", 1)
            i += 1

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(30):
            snap = store.snapshot()
            assert len(snap["apps"]) == snap["rev"]  # one app per revision: never half a change
    finally:
        stop.set()
        t.join(timeout=10)
        writer.close()


def test_concurrent_mutations_keep_the_rules(store: StateStore, redis_server: RedisServer) -> None:
    store.add_app("a", "doubles", "0", 1)
    for i in range(8):
        store.add_model(f"m{i}", "1", "doubles")
    results: list[str] = []
    clients = [StateStore.connect(redis_server.host, redis_server.port) for _ in range(8)]
    barrier = threading.Barrier(8)

    def link(i: int) -> None:
        barrier.wait()
        try:
            clients[i].add_links("a", [f"m{i}"])
            results.append("ok")
        except StateError as e:
            results.append(e.message)

    threads = [threading.Thread(target=link, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    for c in clients:
        c.close()
    assert results.count("ok") == 1, results
    assert len(store.get_linked_models("a")) == 1


def test_subscribe_channel_and_client_checks(store: StateStore, redis_server: RedisServer) -> None:
    assert CHANNEL == "clipper:changes"
    with pytest.raises(ValueError, match="decode_responses"):
        StateStore(redis.Redis(host=redis_server.host, port=redis_server.port))
    assert store.ping() is True


def test_unreachable_redis_fails_fast(tmp_path: Path) -> None:
    server = RedisServer(log_path=tmp_path / "r.log").start()
    store = StateStore.connect(server.host, server.port)
    store.add_app("a", "doubles", "0", 1)
    server.stop()
    t0 = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.get_app("a")
    assert time.monotonic() - t0 < 3
    restarted = RedisServer(server.port, log_path=tmp_path / "r.log").start()
    try:
        assert store.get_app("a") is None  # a new, empty server; the client reconnected by itself
        store.add_app("a", "doubles", "0", 1)
        assert store.snapshot()["rev"] == 1  # the snapshot script is loaded again into the new server
    finally:
        store.close()
        restarted.stop()
