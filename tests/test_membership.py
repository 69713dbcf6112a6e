"""Membership: a model replica serves every query frontend a DNS name resolves to, and each query frontend
keeps its own replica records in Redis (swept once its announcement has expired).

The runtime's side runs over real ZeroMQ: bare ROUTER frontends (`test_container_runtime.Frontend`) bound to
different loopback addresses on one port, and a resolver the test controls; and a real query frontend for
``CLIPPER_IP=localhost``. The records' side runs real redis-server, management and query frontend processes.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import zmq
from conftest import Cluster
from test_container_runtime import HEARTBEAT, TIMEOUT_S, Frontend, f64, outputs_of
from zmq.utils.monitor import recv_monitor_message

from clipper.model_runtime import runtime, serve


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


def heartbeats_from(fe: Frontend, ident: bytes, n: int = 3) -> None:
    """`n` heartbeats of session `ident` arrive (the session is alive)."""
    seen = 0
    while seen < n:
        who, *frames = fe.recv(timeout=2.0)
        if who == ident and frames == HEARTBEAT:
            seen += 1


def goes_quiet(fe: Frontend, quiet_s: float, within: float) -> float:
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
    fe = Frontend(ctx)
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


def test_a_name_gets_a_session_per_address_and_follows_it(ctx: zmq.Context, run_serve, containers) -> None:
    """The name resolves to 127.0.0.1, then to 127.0.0.1 and 127.0.0.2, then to 127.0.0.2 only: the replica
    registers with both frontends, then its session with the first ends (its socket closes: the frontend sees
    the connection drop and hears nothing more) while the second keeps answering."""
    first = Frontend(ctx)
    second = Frontend(ctx, first.port, host="127.0.0.2")
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
        assert time.monotonic() - changed < 1.0, "the session ended promptly"
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
    ones = [Frontend(ctx), Frontend(ctx)]
    twos = [Frontend(ctx, f.port, host="127.0.0.2") for f in ones]
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
    fe = Frontend(ctx)
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
    fe = Frontend(ctx)
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
