"""Membership: a model replica serves every query frontend a DNS name resolves to, and each query frontend
keeps its own replica records in Redis (swept once its announcement has expired).

The runtime's side runs over real ZeroMQ: bare ROUTER frontends (`test_container_runtime.Frontend`) bound to
different loopback addresses on one port, and a resolver the test controls; and a real query frontend for
``CLIPPER_IP=localhost``. The records' side runs real redis-server, management and query frontend processes.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import requests
import zmq
from conftest import Cluster, Frontend, free_ports
from test_container_runtime import HEARTBEAT, TIMEOUT_S, f64, outputs_of
from test_container_runtime import Frontend as Router
from test_query_redis import Admin, add_model
from zmq.utils.monitor import recv_monitor_message

from clipper import management_client, rust_core
from clipper.frontend.replicas import ReplicaPublisher
from clipper.managers.base import wait_frontend_replicas
from clipper.model_runtime import runtime, serve
from clipper.state import StateStore
from clipper.state.redis_server import RedisServer, redis_server_binary


def wait_until(check: Callable[[], Any], what: str, timeout: float = TIMEOUT_S, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)
    return value


class Names:
    """A resolver the test sets: `addresses` (None: the name does not resolve), and the calls it answered."""

    def __init__(self, *addresses: str) -> None:
        self.addresses: list[str] | None = list(addresses)
        self.calls = 0

    def __call__(self, host: str) -> Sequence[str]:
        assert host == "frontends.test"
        self.calls += 1
        if self.addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.addresses)


def total(xs: Any) -> list[str]:
    return [str(float(x.sum())) for x in xs]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[runtime._Container]]:
    """Every `_Container` made during the test (to read its sessions and whether it spins)."""
    made: list[runtime._Container] = []
    original = runtime._Container.__init__

    def init(self: runtime._Container, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(runtime._Container, "__init__", init)
    yield made


@pytest.fixture
def run_serve() -> Iterator[Callable[..., threading.Thread]]:
    """Runs `serve(total, ...)` on a thread; stops it afterwards and checks that it returned."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(**kwargs: Any) -> threading.Thread:
        t = threading.Thread(target=serve, args=(total,), daemon=True,
                             kwargs={"name": "m", "version": "1", "stop_event": stop, **kwargs})
        t.start()
        threads.append(t)
        return t

    yield start
    stop.set()
    for t in threads:
        t.join(TIMEOUT_S)
        assert not t.is_alive(), "serve() did not stop"


def heartbeats_from(fe: Router, ident: bytes, n: int = 3) -> None:
    """`n` heartbeats of session `ident` arrive (the session is alive)."""
    seen = 0
    while seen < n:
        who, *frames = fe.recv(timeout=2.0)
        if who == ident and frames == HEARTBEAT:
            seen += 1


def goes_quiet(fe: Router, quiet_s: float, within: float) -> float:
    """Waits until nothing at all arrives for `quiet_s`; returns when the last message came (monotonic)."""
    deadline = time.monotonic() + within
    last = time.monotonic()
    while time.monotonic() < deadline:
        if not fe.sock.poll(quiet_s * 1000):
            return last
        fe.sock.recv_multipart()
        last = time.monotonic()
    raise AssertionError(f"the frontend at {fe.host} still hears from the container after {within} s")


# ---------------------------------------------------------------------- the runtime follows a name

def test_resolve_ipv4_and_localhost() -> None:
    assert runtime.resolve_ipv4("localhost") == ["127.0.0.1"]
    assert runtime.resolve_ipv4("127.0.0.2") == ["127.0.0.2"]
    with pytest.raises(OSError):
        runtime.resolve_ipv4("no-such-host.invalid")
    assert runtime.is_ip_literal("10.0.0.1") and runtime.is_ip_literal("::1") and runtime.is_ip_literal("[::1]")
    assert not runtime.is_ip_literal("localhost") and not runtime.is_ip_literal("tasks.query-frontend")


def test_an_ip_address_is_static_and_never_resolved(ctx: zmq.Context, run_serve, containers) -> None:
    fe = Router(ctx)
    try:
        def refuse(host: str) -> list[str]:
            raise AssertionError("an IP literal was resolved")

        run_serve(host="127.0.0.1", port=fe.port, resolver=refuse, resolve_interval=0.05)
        ident, _ = fe.register()
        assert outputs_of(fe.predict(ident, 1, 3, [f64(1.0, 2.0)]), 1) == [b"3.0"]
        (container,) = containers
        assert container.spin and not container.members
        assert not [t for t in threading.enumerate() if t.name.startswith("resolve ")]
    finally:
        fe.close()


@pytest.mark.parametrize("spin", [True, False])
def test_after_a_small_batch_the_container_polls_for_the_next_unless_spin_is_off(
        ctx: zmq.Context, run_serve, containers, monkeypatch: pytest.MonkeyPatch, spin: bool) -> None:
    polls: list[float] = []

    class RecordingDealer:
        """`rust_core.Dealer`, recording the spin of each wait that polls before it sleeps."""

        def __init__(self, address: str) -> None:
            self.dealer = rust_core.Dealer(address)

        def recv_request(self, timeout: float, spin: float = 0.0) -> Any:
            if spin:
                polls.append(spin)
            return self.dealer.recv_request(timeout, spin)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.dealer, name)

    monkeypatch.setattr(runtime, "rust_core", types.SimpleNamespace(Dealer=RecordingDealer))
    fe = Router(ctx)
    try:
        run_serve(host="127.0.0.1", port=fe.port, spin=spin)
        ident, _ = fe.register()
        polls.clear()
        assert outputs_of(fe.predict(ident, 1, 3, [f64(1.0, 2.0)]), 1) == [b"3.0"]
        # Batches of 3 are not small; by its answer to the second, the container has decided on the first.
        for msg_id in (2, 3):
            assert outputs_of(fe.predict(ident, msg_id, 3, [f64(1.0)] * 3), msg_id) == [b"1.0"] * 3
        assert polls == ([runtime._SPIN_S] if spin else [])
        (container,) = containers
        assert container.spin is spin
    finally:
        fe.close()


def test_clipper_spin_0_turns_the_poll_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipper.model_runtime.__main__ import build_parser

    assert build_parser().parse_args([]).spin is True
    assert build_parser().parse_args(["--no-spin"]).spin is False
    monkeypatch.setenv("CLIPPER_SPIN", "0")
    assert build_parser().parse_args([]).spin is False
    assert build_parser().parse_args(["--spin"]).spin is True


def test_a_name_gets_a_session_per_address_and_follows_it(ctx: zmq.Context, run_serve, containers) -> None:
    """The name resolves to 127.0.0.1, then to 127.0.0.1 and 127.0.0.2, then to 127.0.0.2 only: the replica
    registers with both frontends, then its session with the first ends (its socket closes: the frontend sees
    the connection drop and hears nothing more) while the second keeps answering."""
    first = Router(ctx)
    second = Router(ctx, first.port, host="127.0.0.2")
    monitor = first.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    names = Names("127.0.0.1")
    try:
        run_serve(host="frontends.test", port=first.port, resolver=names, resolve_interval=0.1,
                  heartbeat_interval=0.1)
        a, _ = first.register()
        assert outputs_of(first.predict(a, 1, 3, [f64(1.0, 2.0)]), 1) == [b"3.0"]
        (container,) = containers
        assert container.spin, "one session: spins as with one address"
        assert not second.sock.poll(300), "nothing for an address the name does not resolve to"

        names.addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.1"]  # duplicates count once
        b, registration = second.register()
        assert registration == [b"", b"\x00\x00\x00\x00", b"m", b"1", b"3", b"\x03\x00\x00\x00"]
        assert outputs_of(second.predict(b, 2, 3, [f64(4.0)]), 2) == [b"4.0"]
        assert outputs_of(first.predict(a, 3, 3, [f64(5.0)]), 3) == [b"5.0"]
        assert not container.spin, "two sessions: no spinning"
        assert sorted(s.address for s in container.sessions) == [f"tcp://127.0.0.1:{first.port}",
                                                                 f"tcp://127.0.0.2:{first.port}"]
        heartbeats_from(first, a)

        names.addresses = ["127.0.0.2"]
        changed = time.monotonic()
        event = monitor.poll(TIMEOUT_S * 1000)
        assert event, "the first frontend did not see the connection drop"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        assert time.monotonic() - changed < 2.0, "the session ended promptly"
        goes_quiet(first, quiet_s=0.5, within=3.0)
        assert outputs_of(second.predict(b, 4, 3, [f64(6.0, 1.0)]), 4) == [b"7.0"]
        heartbeats_from(second, b)
        wait_until(lambda: container.spin, "one session left: spinning again")
        assert [s.address for s in container.sessions] == [f"tcp://127.0.0.2:{first.port}"]
        assert sorted(container.members) == [f"tcp://127.0.0.2:{first.port}"] and not container.leaving
    finally:
        monitor.close(linger=0)
        first.close()
        second.close()


def test_each_address_times_each_port(ctx: zmq.Context, run_serve) -> None:
    """Two addresses and two ports (a frontend run with --workers 2 on each of two hosts): four sessions."""
    ones = [Router(ctx), Router(ctx)]
    twos = [Router(ctx, f.port, host="127.0.0.2") for f in ones]
    try:
        run_serve(host="frontends.test", port=[f.port for f in ones], resolver=Names("127.0.0.1", "127.0.0.2"),
                  resolve_interval=0.1)
        for fe in ones + twos:
            fe.register()
    finally:
        for fe in ones + twos:
            fe.close()


def test_a_name_that_does_not_resolve_yet_is_retried(ctx: zmq.Context, run_serve, containers,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """At start nothing resolves: the container waits (warning once) and connects once the name resolves;
    later failures keep the session there is."""
    fe = Router(ctx)
    names = Names()
    names.addresses = None
    caplog.set_level(logging.WARNING, logger="clipper.model_runtime")
    try:
        t = run_serve(host="frontends.test", port=fe.port, resolver=names, resolve_interval=0.05,
                      heartbeat_interval=0.1)
        wait_until(lambda: names.calls >= 5, "retries while the name does not resolve")
        assert t.is_alive() and not fe.sock.poll(0)
        names.addresses = ["127.0.0.1"]
        ident, _ = fe.register()
        names.addresses = None  # the resolver fails again: the session stays
        calls = names.calls
        wait_until(lambda: names.calls >= calls + 5, "retries")
        assert outputs_of(fe.predict(ident, 1, 3, [f64(2.0)]), 1) == [b"2.0"]
        heartbeats_from(fe, ident)
        (container,) = containers
        assert len(container.sessions) == 1
        names.addresses = ["127.0.0.1"]
        calls = names.calls
        wait_until(lambda: names.calls >= calls + 2, "resolves again")
        names.addresses = []  # resolving to nothing counts as a failure too
        calls = names.calls
        wait_until(lambda: names.calls >= calls + 3, "retries")
        assert outputs_of(fe.predict(ident, 2, 3, [f64(3.0)]), 2) == [b"3.0"]
        warnings = [r.getMessage() for r in caplog.records if "cannot resolve frontends.test" in r.getMessage()]
        assert len(warnings) == 3, warnings  # once per streak of failures: at start, then twice later
        assert "no frontend yet" in warnings[0] and "keeping the 1 session(s)" in warnings[1]
        assert "no IPv4 address" in warnings[2]
        assert len(container.sessions) == 1
    finally:
        fe.close()


def test_stop_ends_serve_with_a_name(ctx: zmq.Context) -> None:
    fe = Router(ctx)
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(total,), daemon=True, kwargs={
        "name": "m", "version": "1", "host": "frontends.test", "port": fe.port, "stop_event": stop,
        "resolver": Names("127.0.0.1"), "resolve_interval": 5.0})
    try:
        t.start()
        fe.register()
        stop.set()
        t.join(2.0)
        assert not t.is_alive()
    finally:
        fe.close()


def test_localhost_through_a_real_query_frontend(cluster: Cluster) -> None:
    """``CLIPPER_IP=localhost`` (a name) still gives exactly one session, with a real query frontend."""
    fe = cluster.frontend({"apps": [{"name": "a", "input_type": "doubles", "latency_slo_micros": 2_000_000,
                                     "models": ["m"]}],
                           "models": [{"name": "m", "version": "1", "input_type": "doubles"}]})
    cluster.container(fe, "m", "sum", env={"CLIPPER_IP": "localhost", "CLIPPER_RESOLVE_INTERVAL": "0.2"})
    fe.wait_replicas("m", 1)
    assert fe.predict("a", [1.0, 2.5])["output"] == 3.5
    time.sleep(0.6)  # a few resolutions later: still one replica
    assert fe.replicas("m") == 1
    assert fe.predict("a", [2.0])["output"] == 2.0


# ---------------------------------------------------------------------- replica records, per query frontend

needs_redis = pytest.mark.skipif(redis_server_binary() is None,
                                 reason="redis-server is not installed (apt-get install redis-server)")
#: The query frontends' announcement TTL in the tests that kill one (renewed, and swept, every third of it).
SHORT_TTL_S = 1.5


class Stack:
    """redis-server, a management frontend and the query frontends a test starts, all real processes."""

    def __init__(self, cluster: Cluster, redis_server: RedisServer, admin: Admin) -> None:
        self.cluster, self.redis, self.admin = cluster, redis_server, admin
        self.admin_addr = admin.url.removeprefix("http://").removesuffix("/admin")
        self.store = StateStore.connect("127.0.0.1", redis_server.port)

    def frontend(self, ttl: float = SHORT_TTL_S, ports: tuple[int, int] | None = None) -> Frontend:
        return self.cluster.frontend(redis_port=self.redis.port, ports=ports, heartbeat_timeout=2,
                                     extra_args=("--announce-ttl", str(ttl)))

    def replica(self, *frontends: Frontend | int) -> Any:
        """A replica of m:1 connected to each of `frontends` (or RPC ports): one session per RPC port."""
        ports = [fe if isinstance(fe, int) else fe.rpc_port for fe in frontends]
        return self.cluster.container(types.SimpleNamespace(rpc_port=ports[0]), "m", "sum",  # type: ignore[arg-type]
                                      env={"CLIPPER_PORT": ",".join(map(str, ports))})

    def records(self) -> list[dict[str, Any]]:
        return self.admin("get_all_containers", verbose=True)

    def by_frontend(self) -> dict[str | None, list[int]]:
        out: dict[str | None, list[int]] = {}
        for r in self.records():
            out.setdefault(r["frontend_id"], []).append(r["model_replica_id"])
        return {f: sorted(ids) for f, ids in out.items()}


def frontend_id(fe: Frontend) -> str:
    return f"127.0.0.1:{fe.port}/{fe.rpc_port}"


@pytest.fixture
def stack(cluster: Cluster) -> Iterator[Stack]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer(log_path=cluster.workdir / "redis.log") as redis_server:
        (port,) = free_ports(1)
        argv = [sys.executable, "-m", "clipper.frontend.management", "--redis-port", str(redis_server.port),
                "--port", str(port)]
        cluster._spawn(argv, cluster._log_file("management"))
        admin = Admin(port)
        wait_until(lambda: _up(admin), "the management frontend", timeout=15, every=0.05)
        s = Stack(cluster, redis_server, admin)
        add_model(admin, "m", "1")
        try:
            yield s
        finally:
            s.store.close()
            cluster.close()


def _up(admin: Admin) -> bool:
    try:
        return admin.http.get(f"{admin.url}/ping", timeout=1).status_code == 200
    except requests.RequestException:
        return False


class Publisher(ReplicaPublisher):
    """A `ReplicaPublisher` without an engine (its RPC endpoint only), for `clear_stale` and `sweep`."""

    def __init__(self, frontend: str, rpc_endpoint: str) -> None:
        super().__init__(types.SimpleNamespace(rpc_endpoint=rpc_endpoint), frontend)  # type: ignore[arg-type]


@needs_redis
def test_sweep_and_clear_stale_in_the_store(store: StateStore) -> None:
    """`sweep` removes the records of frontends without a live announcement, and nothing else, however many
    sweep at once; `clear_stale` removes one frontend's own records (any pid) and the records without a
    frontend id (older versions) of its RPC endpoint."""
    store.announce_frontend({"id": "a:1337/7000", "http": "a:1337", "rpc": "tcp://0.0.0.0:7000", "pid": 7},
                            ttl_s=60)
    store.add_replica("m", "1", 0, "doubles", connection_id="a:1337/7000#7#0", frontend_id="a:1337/7000")
    store.add_replica("m", "1", 1, "doubles", connection_id="b:1337/7000#7#0", frontend_id="b:1337/7000")
    store.add_replica("m", "1", 2, "doubles", connection_id="b:1337/7000#7#1", frontend_id="b:1337/7000")
    store.add_replica("m", "1", 3, "doubles", connection_id="tcp://0.0.0.0:7000#9#0")  # an older version's
    store.add_replica("m", "1", 4, "doubles", connection_id="tcp://0.0.0.0:7001#9#0")  # an older version's
    removed = []
    sweepers = [threading.Thread(target=lambda: removed.append(ReplicaPublisher.sweep(store))) for _ in range(3)]
    for t in sweepers:
        t.start()
    for t in sweepers:
        t.join()
    assert sum(removed) == 2
    assert [r["model_replica_id"] for r in store.get_replicas()] == [0, 3, 4]
    assert ReplicaPublisher.sweep(store) == 0

    # Another frontend, in another container: the same RPC endpoint string, and the same pid.
    store.announce_frontend({"id": "d:1337/7000", "http": "d:1337", "rpc": "tcp://0.0.0.0:7000", "pid": 7},
                            ttl_s=60)
    store.add_replica("m", "1", 5, "doubles", connection_id="d:1337/7000#7#0", frontend_id="d:1337/7000")

    # "a" restarted in place (same id; a container keeps its pid too): its records and the older version's
    # records of its RPC endpoint go; those of another endpoint, and the other frontend's, stay.
    assert Publisher("a:1337/7000", "tcp://0.0.0.0:7000").clear_stale(store) == 2
    assert [r["model_replica_id"] for r in store.get_replicas()] == [4, 5]
    assert Publisher("c:1337/7000", "tcp://0.0.0.0:7002").clear_stale(store) == 0


@needs_redis
def test_two_frontends_each_record_the_replica_and_a_dead_ones_records_are_swept(stack: Stack) -> None:
    first, second = stack.frontend(), stack.frontend()
    ids = sorted([frontend_id(first), frontend_id(second)])
    # A frontend answers HTTP before its watcher thread has announced it: wait for both announcements.
    wait_until(lambda: stack.admin("get_all_frontends", verbose=False) == ids, "both frontends announced",
               timeout=5)
    stack.replica(first, second)
    first.wait_replicas("m", 1)
    second.wait_replicas("m", 1)
    records = wait_until(lambda: len(r := stack.records()) == 2 and r, "two records", timeout=5)
    assert sorted(r["frontend_id"] for r in records) == ids
    assert management_client.count_replicas_per_frontend(stack.admin_addr, "m", "1") == dict.fromkeys(ids, 1)
    assert management_client.count_replicas(stack.admin_addr, "m", "1") == 2
    verbose = stack.admin("get_all_frontends", verbose=True)
    assert [(f["id"], f["pid"]) for f in verbose] == sorted([(frontend_id(first), first.proc.pid),
                                                             (frontend_id(second), second.proc.pid)])

    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait(timeout=5)
    killed = time.monotonic()
    # Nobody withdrew its records: they stay until its announcement expires, then the other frontend sweeps them.
    assert sorted(stack.by_frontend()) == ids
    wait_until(lambda: list(stack.by_frontend()) == [frontend_id(first)], "the dead frontend's records swept",
               timeout=SHORT_TTL_S * 3 + 5)
    assert time.monotonic() - killed >= SHORT_TTL_S / 3, "swept before its announcement could expire"
    assert stack.admin("get_all_frontends", verbose=False) == [frontend_id(first)]
    assert management_client.count_replicas_per_frontend(stack.admin_addr, "m", "1") == {frontend_id(first): 1}
    time.sleep(SHORT_TTL_S)  # the live frontend's own record stays, its announcement renewed
    assert list(stack.by_frontend()) == [frontend_id(first)]


@needs_redis
def test_a_frontend_restarted_in_place_replaces_its_records(stack: Stack) -> None:
    """Frontend B starts after A has published, then is killed and restarted on the same ports before its
    announcement expires: A's record is never touched, B's stale record is replaced by one new record."""
    first = stack.frontend(ttl=60)
    ports = tuple(free_ports(2))
    stack.replica(first, ports[1])  # the second frontend's RPC port: nobody listens there yet
    first.wait_replicas("m", 1)
    mine = wait_until(lambda: stack.by_frontend().get(frontend_id(first)), "the first frontend's record")
    second = stack.frontend(ttl=60, ports=ports)
    second.wait_replicas("m", 1)
    wait_until(lambda: len(stack.by_frontend().get(frontend_id(second), [])) == 1, "the second one's record")
    assert stack.by_frontend()[frontend_id(first)] == mine, "the second frontend left the first one's records"

    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait(timeout=5)
    (stale,) = stack.by_frontend()[frontend_id(second)]
    restarted = stack.frontend(ttl=60, ports=ports)
    restarted.wait_replicas("m", 1)

    def replaced() -> bool:
        theirs = [r for r in stack.records() if r["frontend_id"] == frontend_id(second)]
        return len(theirs) == 1 and theirs[0]["model_replica_id"] != stale

    wait_until(replaced, "the restarted frontend's one record", timeout=15)
    time.sleep(0.5)  # and no second one comes
    assert len(stack.by_frontend()[frontend_id(second)]) == 1
    assert stack.by_frontend()[frontend_id(first)] == mine
    (record,) = [r for r in stack.store.get_replicas() if r["frontend_id"] == frontend_id(second)]
    assert record["connection_id"].startswith(f"{frontend_id(second)}#{restarted.proc.pid}#")


@needs_redis
def test_wait_frontend_replicas_waits_for_every_frontend(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    first, second = stack.frontend(ttl=60), stack.frontend(ttl=60)
    logger = logging.getLogger("test.membership")
    stack.replica(first)  # connected to the first frontend only
    first.wait_replicas("m", 1)
    wait_until(lambda: management_client.count_replicas_per_frontend(stack.admin_addr, "m", "1")
               == {frontend_id(first): 1, frontend_id(second): 0}, "the counts")
    assert management_client.count_replicas(stack.admin_addr, "m", "1") == 1  # all frontends together
    with caplog.at_level(logging.WARNING, logger="test.membership"):
        wait_frontend_replicas(stack.admin_addr, "m", "1", 1, logger, timeout=0.5)
    assert [r.getMessage() for r in caplog.records] == [
        f"The query frontend does not report 1 replica(s) of m:1 yet ({frontend_id(second)}: 0)"]

    caplog.clear()
    stack.replica(first, second)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="test.membership"):
        wait_frontend_replicas(stack.admin_addr, "m", "1", 1, logger, timeout=10)
    assert not caplog.records and time.monotonic() - started < 10
    assert management_client.count_replicas_per_frontend(stack.admin_addr, "m", "1")[frontend_id(second)] == 1
    wait_until(lambda: management_client.count_replicas_per_frontend(stack.admin_addr, "m", "1")
               == {frontend_id(first): 2, frontend_id(second): 1}, "the counts")
    assert management_client.count_replicas_per_frontend("127.0.0.1:1", "m", "1") is None  # no management API


@needs_redis
def test_a_frontend_whose_announcement_lapsed_publishes_its_records_again(stack: Stack) -> None:
    """As if the frontend had stalled past its TTL and another had swept its records: at its next renewal it
    announces again and publishes the records again (under new replica ids)."""
    fe = stack.frontend()
    stack.replica(fe)
    fe.wait_replicas("m", 1)
    (before,) = wait_until(lambda: stack.by_frontend().get(frontend_id(fe)), "the record")
    stack.store.withdraw_frontend(frontend_id(fe))
    assert stack.store.delete_replica("m", "1", before)  # as a sweep would (even one that raced the renewal)
    (after,) = wait_until(lambda: stack.by_frontend().get(frontend_id(fe)), "the record published again",
                          timeout=SHORT_TTL_S * 2)
    assert after != before
    assert stack.admin("get_all_frontends", verbose=False) == [frontend_id(fe)]
    assert "announced again" in fe.log_tail()
