"""The container session loop: heartbeats, registration, prediction batches, reconnection."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import rust_core
from . import protocol as p
from .metrics import ContainerMetrics, MetricsServer

log = logging.getLogger("clipper.model_runtime")

#: A model: takes one decoded batch, returns one output per input.
PredictFn = Callable[[Any], Sequence[Any]]

#: Longest single wait, so that `stop_event` is noticed quickly.
_MAX_POLL_S = 0.1

_clock = time.perf_counter

def resolve_ipv4(host: str) -> list[str]:
    """The IPv4 addresses `host` resolves to (``getaddrinfo``, AF_INET, SOCK_STREAM), in the resolver's order,
    each once; raises ``OSError`` (``socket.gaierror``) when it does not resolve."""
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IP address (``[...]`` around an IPv6 one allowed) rather than a name."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


#: After answering a batch of at most `_SPIN_MAX_BATCH` inputs, the container polls for the next batch
#: for up to `_SPIN_S` before it sleeps. Small batches mean spare capacity, which buys latency:
#: a thread that slept must be woken, and on virtual machines an idle vCPU takes tens of microseconds
#: to wake. Under load (larger batches) the CPU goes to the work instead. A container with more than one
#: session (several frontend ports, or a name that resolves to several frontends) does not spin, nor one
#: served with ``spin=False`` (``--no-spin``, ``CLIPPER_SPIN=0``).
_SPIN_MAX_BATCH = 2
_SPIN_S = 200e-6


class StopEvent(Protocol):
    """Anything with ``is_set()``, e.g. ``threading.Event``."""

    def is_set(self) -> bool: ...


class BatchError(Exception):
    """A batch that cannot be answered with predictions (reported with error outputs)."""


#: A prediction batch as `rust_core.Dealer.recv_request` hands it over: ``(msg_id, input_type, data, sizes)``,
#: `data` the inputs joined in one ``bytearray`` and `sizes` their lengths, or, for strings, `data` a list of
#: ``str`` and `sizes` None.
Batch = tuple[int, int, Any, Any]


def checked_outputs(result: Any, n: int) -> Sequence[Any]:
    """A model's result for a batch of `n`, checked: one output per input (each sent as ``str()`` of itself)."""
    if not isinstance(result, (list, tuple, np.ndarray)):
        raise BatchError(f"model returned {type(result).__name__}, expected a list of {n} outputs")
    if len(result) != n:
        raise BatchError(f"model returned {len(result)} outputs for a batch of {n}")
    return result


def batch_size(batch: Batch) -> int:
    """How many inputs `batch` holds."""
    return len(batch[2]) if batch[3] is None else len(batch[3])


def model_inputs(batch: Batch) -> Any:
    """What the model receives for `batch` (see `protocol.decode_inputs`)."""
    _, input_type, data, sizes = batch
    return data if sizes is None else p.decode_joined(input_type, data, sizes)


def run_batch(predict: PredictFn, batch: Batch, input_type: int,
              metrics: ContainerMetrics | None = None, first: float = 0.0, received: float = 0.0) -> Sequence[Any]:
    """Run one prediction batch; a failure becomes one error output per input. With `metrics`, the batch is
    counted there (`first`, `received`: ``perf_counter()`` times of its message read and decoded)."""
    n = batch_size(batch)
    started = _clock() if metrics is not None else 0.0
    try:
        if batch[1] != input_type:
            raise BatchError(
                f"request input type {p.INPUT_TYPE_NAMES.get(batch[1], batch[1])}"
                f" does not match the container's input type {p.INPUT_TYPE_NAMES[input_type]}"
            )
        if metrics is None:
            return checked_outputs(predict(model_inputs(batch)), n)
        inputs = model_inputs(batch)
        parsed = _clock()
        outputs = checked_outputs(predict(inputs), n)
        metrics.batch(n, first, received, started, parsed, _clock())
        return outputs
    except BatchError as e:
        message = str(e)
        log.error("batch of %d failed: %s", n, message)
    except Exception as e:  # a failing model must not kill the container
        message = f"{type(e).__name__}: {e}"
        log.exception("batch of %d failed: model raised %s", n, message)
    if metrics is not None:
        metrics.failed(n, first, received, started, _clock())
    return [p.error_text(message)] * n


#: While a batch runs, the keeper thread looks at the sessions this often (at most; a quarter of the
#: heartbeat interval if that is shorter).
_KEEPER_TICK_S = 0.05


class _Container:
    """Configuration and state of one `serve` call; a `_Session` runs one DEALER connection.

    Batches run on the session thread that received them (no thread hand-off on the hot path). While one
    runs, the session releases its socket to the container's keeper thread (`keep_alive`), which, once
    the batch has run for a tick, heartbeats every heartbeat interval and answers the frontend on that
    socket; the session takes its socket back when the batch is done. So a batch longer than the
    frontend's heartbeat timeout neither gets the replica dropped nor its batch requeued.
    """

    def __init__(self, predict: PredictFn, name: str, version: str, input_type: int, addresses: Sequence[str],
                 heartbeat_interval: float, session_timeout: float, stop_event: StopEvent | None,
                 metrics: ContainerMetrics | None = None, may_spin: bool = True) -> None:
        self.predict, self.name, self.version, self.input_type = predict, name, version, input_type
        self.metrics = metrics
        self.addresses = list(addresses)
        self.predicting = threading.Lock()  # one batch at a time, whichever frontend worker sent it
        self.heartbeat_interval, self.session_timeout = heartbeat_interval, session_timeout
        self.stop_event = stop_event
        self.halt = threading.Event()  # serve() is ending
        self.sessions: set[_Session] = set()
        # the frontend addresses served (a name's addresses change over time; see `follow`)
        self.members: dict[str, _Member] = {}
        self.leaving: set[_Member] = set()  # no longer wanted, their session still ending
        self.members_lock = threading.Lock()
        self.ready_file = os.environ.get("CLIPPER_READY_FILE")
        self.feedback_logged = False
        # One session thread only: with several, a spinning thread would hold the GIL from the others.
        self.may_spin = may_spin
        self.spin = may_spin and len(self.addresses) == 1

    def stopped(self) -> bool:
        return self.halt.is_set() or (self.stop_event is not None and self.stop_event.is_set())

    def serve_address(self, address: str, member: _Member | None = None) -> None:
        """One session after another with the frontend at `address`, until stopped (or, with `member`,
        until that address is no longer wanted)."""
        member = member if member is not None else _Member(address)
        try:
            while member.wanted and not self.stopped():
                _Session(self, address, member).run()
        finally:
            with self.members_lock:
                if member in self.leaving:
                    self.leaving.discard(member)
                    self._update_spin()

    def follow(self, host: str, ports: Sequence[int], resolve: Callable[[str], Sequence[str]],
               interval: float) -> None:
        """The resolver thread, for a `host` that is a name: one session thread per (IPv4 address, port),
        following what `host` resolves to every `interval` seconds, until stopped. A resolution that fails (or
        finds nothing) keeps the sessions there are, and is retried at the next interval."""
        failing = False
        while not self.stopped():
            try:
                found = list(resolve(host))
                if not found:
                    raise OSError("no IPv4 address")
            except Exception as e:  # noqa: BLE001 - whatever the resolver raises: keep what there is, retry
                if not failing:
                    failing = True
                    with self.members_lock:
                        serving = len(self.members)
                    log.warning("cannot resolve %s (%s); %s, retrying every %g s", host, e,
                                f"keeping the {serving} session(s) there are" if serving else "no frontend yet",
                                interval)
            else:
                if failing:
                    failing = False
                    log.warning("%s resolves again: %s", host, ", ".join(found))
                self.set_members([f"tcp://{ip}:{int(port)}" for ip in found for port in ports])
            deadline = time.monotonic() + interval
            while not self.stopped() and (left := deadline - time.monotonic()) > 0:
                self.halt.wait(min(left, _MAX_POLL_S))

    def set_members(self, addresses: Sequence[str]) -> None:
        """Serves exactly `addresses`: a session thread for each new one; the sessions of those that left end
        (within `_MAX_POLL_S`, or when their batch is done), closing their socket."""
        wanted = list(dict.fromkeys(addresses))
        with self.members_lock:
            if self.stopped():  # serve() is ending: start nothing it would not join
                return
            gone = [a for a in self.members if a not in wanted]
            new = [a for a in wanted if a not in self.members]
            for a in gone:
                member = self.members.pop(a)
                member.wanted = False
                self.leaving.add(member)
                log.info("frontend %s left; ending its session", a)
            started = [self.members.setdefault(a, _Member(a)) for a in new]
            self._update_spin()  # decided before the new session threads start: none may see it change
            for member in started:
                member.thread = threading.Thread(target=self.serve_address, args=(member.address, member),
                                                 name=f"session {member.address}", daemon=True)
                member.thread.start()
                log.info("frontend %s appeared; connecting", member.address)

    def _update_spin(self) -> None:
        """Holding `members_lock`: spin while exactly one session thread runs (see `_SPIN_S`)."""
        self.spin = self.may_spin and len(self.members) == 1 and not self.leaving

    def end_members(self) -> None:
        """After `halt`: waits for every session thread `follow` started."""
        with self.members_lock:
            threads = [m.thread for m in [*self.members.values(), *self.leaving] if m.thread is not None]
        for t in threads:
            t.join()

    def keep_alive(self) -> None:
        """The keeper thread: speaks for the sessions whose batch has run for at least a tick."""
        tick = min(_KEEPER_TICK_S, self.heartbeat_interval / 4)
        while not self.halt.wait(tick):
            now = time.monotonic()
            for session in list(self.sessions):
                since = session.busy_since
                if since is not None and now - since >= tick and session.owner.acquire(blocking=False):
                    try:
                        if session.busy_since is not None:  # still running: the socket is free to use
                            session.speak_while_busy()
                    except ConnectionError as e:  # the frontend broke the protocol; the session reconnects
                        log.warning("cannot speak to %s while a batch runs: %s", session.address, e)
                    finally:
                        session.owner.release()

    def reply(self, msg: p.Message, address: str = "") -> list[bytes] | None:
        """The answer to a message from the frontend at `address` other than a batch, if any."""
        if isinstance(msg, p.Heartbeat):
            if msg.heartbeat_type == p.HEARTBEAT_REQUEST_METADATA:
                self.registered(address)
                return p.new_container(self.name, self.version, self.input_type)
        elif not self.feedback_logged:
            self.feedback_logged = True
            log.warning("feedback requests are not supported by this container; ignoring them")
        return None

    def registered(self, address: str) -> None:
        log.info("registered %s:%s with %s", self.name, self.version, address)
        if self.ready_file:
            Path(self.ready_file).touch()
            self.ready_file = None


class _Member:
    """A frontend address the container serves: its session thread runs sessions while `wanted`."""

    __slots__ = ("address", "wanted", "thread")

    def __init__(self, address: str) -> None:
        self.address = address
        self.wanted = True
        self.thread: threading.Thread | None = None


class _Session:
    """One DEALER connection to a frontend (`rust_core.Dealer`: ZeroMQ's protocol spoken by the thread that
    calls it, with no I/O thread of its own).

    The connection is not thread-safe; `owner` says which thread may use it: whichever holds it. The session
    thread holds it except while its batch runs (`busy_since` set); then the keeper thread may take it for a
    moment, and its calls answer the frontend's ZMTP PINGs as well.
    """

    def __init__(self, container: _Container, address: str, member: _Member | None = None) -> None:
        self.container, self.address = container, address
        self.member = member if member is not None else _Member(address)  # ends the session once not wanted
        self.sock = rust_core.Dealer(address)  # connects (and reconnects) within its calls
        self.timeout = min(container.heartbeat_interval, container.session_timeout, _MAX_POLL_S)
        self.owner = threading.Lock()
        self.busy_since: float | None = None
        self.heard = self.sent = time.monotonic()  # last message from the frontend, last message to it
        # batches that arrived while another one ran, with the perf_counter() time they were read
        self.pending: deque[tuple[Batch, float]] = deque()

    def send(self, frames: list[bytes]) -> None:
        self.sock.send(frames)
        self.sent = time.monotonic()

    def run(self) -> None:
        """Connect, say hello and serve until nothing is heard for the session timeout, or stopped."""
        c, sock, member = self.container, self.sock, self.member
        timed = c.metrics is not None
        first, spin = 0.0, 0.0
        self.owner.acquire()
        c.sessions.add(self)
        try:
            self.send(p.heartbeat())
            connected = False  # like Clipper: no repeated heartbeats before the frontend answers
            broken = False  # the peer broke the protocol (said once per streak)
            while member.wanted and not c.stopped():
                now = time.monotonic()
                if now - self.heard >= c.session_timeout:
                    log.warning("nothing heard from %s for %.1f s; reconnecting", self.address, now - self.heard)
                    return
                if connected and now - max(self.heard, self.sent) >= c.heartbeat_interval:
                    self.send(p.heartbeat())
                if self.pending:
                    received, first = self.pending.popleft()
                else:
                    try:
                        received = sock.recv_request(self.timeout, spin)
                    except ConnectionError as e:  # not a ZMTP ROUTER: the connection is made again in 0.1 s
                        if not broken:
                            log.warning("%s: %s; reconnecting every 0.1 s", self.address, e)
                        broken = True
                        continue
                    spin = 0.0
                    if received is None:
                        continue
                    connected, broken = True, False
                    if timed:
                        first = _clock()
                n = self.handle(received, first)
                if c.spin and n is not None and n <= _SPIN_MAX_BATCH:
                    spin = _SPIN_S
        finally:
            c.sessions.discard(self)
            sock.close()
            self.owner.release()

    @staticmethod
    def parse(frames: list[bytes]) -> p.Message | None:
        """A message other than a batch (batches come decoded by the Dealer, see `handle`)."""
        try:
            return p.parse_request(frames)
        except p.ProtocolError as e:
            log.error("dropping malformed message from the frontend: %s", e)
            return None

    def handle(self, received: Batch | list[bytes], first: float = 0.0) -> int | None:
        """On the session thread, one step of the loop: what came from the frontend (a batch, decoded by the
        `Dealer`, read at `first`, a ``perf_counter()`` time, when metrics are on; else a message's frames)
        handled, and answered if it asks for an answer. A batch's size, None for other messages. Never raises
        for what the frontend sent: a malformed message is logged and dropped."""
        if type(received) is tuple:
            n = self.answer(received, first)
            self.heard = self.sent = time.monotonic()
            return n
        self.heard = time.monotonic()
        msg = self.parse(received)
        if msg is not None and (reply := self.container.reply(msg, self.address)) is not None:
            self.send(reply)
        return None

    def answer(self, batch: Batch, first: float = 0.0) -> int:
        """Runs a batch and sends its answer; returns its size. The socket is released to the keeper while the
        model runs."""
        c = self.container
        received = _clock() if c.metrics is not None else 0.0
        self.busy_since = time.monotonic()
        self.owner.release()  # the keeper may heartbeat meanwhile
        try:
            with c.predicting:
                outputs = run_batch(c.predict, batch, c.input_type, c.metrics, first, received)
        finally:
            self.owner.acquire()
            self.busy_since = None
        msg_id, n = batch[0], batch_size(batch)
        try:
            self.sock.send_prediction(msg_id, outputs)
        except Exception as e:  # an output whose str() fails, or text that is not UTF-8 (a lone surrogate)
            message = f"{type(e).__name__}: {e}"
            log.error("batch of %d failed: its outputs cannot be sent: %s", n, message)
            self.sock.send_prediction(msg_id, [p.error_text(message)] * n)
        return n

    def speak_while_busy(self) -> None:
        """On the keeper thread, holding `owner`: a heartbeat when one is due, and the answers to what the
        frontend sent meanwhile (batches are kept for the session thread). Never blocks: the session
        thread waits for the socket when its batch is done."""
        c = self.container
        if time.monotonic() - self.sent >= c.heartbeat_interval:
            self.send(p.heartbeat())
        while (received := self.sock.recv_request(0.0)) is not None:  # also answers the frontend's ZMTP PINGs
            self.heard = time.monotonic()
            if type(received) is tuple:
                self.pending.append((received, _clock()))  # a batch, for the session thread, after its own
            elif (msg := self.parse(received)) is not None and (reply := c.reply(msg, self.address)) is not None:
                self.send(reply)


def serve(
    predict: PredictFn,
    *,
    name: str,
    version: str,
    input_type: str = "doubles",
    host: str = "127.0.0.1",
    port: int | Sequence[int] = 7000,
    heartbeat_interval: float = 1.0,
    session_timeout: float = 10.0,
    stop_event: StopEvent | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    resolve_interval: float = 2.0,
    resolver: Callable[[str], Sequence[str]] | None = None,
    spin: bool = True,
) -> None:
    """Serve `predict` to a Clipper RPC v3 frontend at ``tcp://host:port`` until `stop_event` is set.

    Several ports serve a query frontend run with ``--workers N`` (one RPC port per worker): the
    container connects to each, and runs one batch at a time whichever worker sent it.

    A `host` that is an IP address is that one frontend. A `host` that is a name stands for every query
    frontend it resolves to (e.g. a headless service, or Docker Swarm's ``tasks.<service>``): the container
    keeps one session with each of its IPv4 addresses (times each port), resolves the name again every
    `resolve_interval` seconds, connects to the addresses that appear and ends the sessions of those that
    go. A resolution that fails keeps the sessions there are (a warning once per streak of failures); at
    start, the container retries until the name resolves. `resolver` (default `resolve_ipv4`: the name's IPv4
    addresses, raising ``OSError`` when it does not resolve) is there for tests.

    While a batch runs, a keeper thread heartbeats on its behalf, so a batch may take longer than the
    frontend's heartbeat timeout (as long as the model lets other Python threads run: a call into C that
    holds the GIL for that long still silences the container).

    `predict` receives a batch (an ``(n, k)`` array, a list of 1-D arrays for unequal lengths,
    or a list of ``str`` for strings) and must return a list/tuple/array of `n` outputs; items
    that are not ``str`` are converted with ``str()``. A batch that fails (exception, wrong
    output count, input type mismatch) is answered with ``ERROR_PREFIX + message`` outputs.
    A heartbeat goes out whenever `heartbeat_interval` seconds pass without a message either way
    (idle), or without a message to the frontend (while a batch runs): keep it well under the
    frontend's heartbeat timeout, a third or less. After `session_timeout` seconds without hearing
    from the frontend the socket is recreated. If ``CLIPPER_READY_FILE`` is set,
    that file is touched once the container has registered.

    With `metrics_port` (0: any free port), ``GET /metrics`` on ``metrics_host:metrics_port`` serves the
    container's Prometheus metrics (`clipper.model_runtime.metrics.MC_METRICS`) and the user metrics of
    `clipper.metrics`, on a daemon thread, until `serve` returns; a port that cannot be bound raises
    `MetricsServerError` before anything else starts.

    `spin` False: never poll for the next batch after a small one (see `_SPIN_S`); less CPU at low load,
    a wake-up more per batch.
    """
    _, code = p.parse_input_type(input_type)
    if heartbeat_interval <= 0 or session_timeout <= 0:
        raise ValueError("heartbeat_interval and session_timeout must be positive")
    if resolve_interval <= 0:
        raise ValueError("resolve_interval must be positive")
    ports = [port] if isinstance(port, int) else list(port)
    if not ports:
        raise ValueError("at least one frontend port is needed")
    static = is_ip_literal(host)
    metrics, server = None, None
    if metrics_port is not None:
        metrics = ContainerMetrics()
        server = MetricsServer(metrics, metrics_host, metrics_port)
    addresses = [f"tcp://{host}:{int(p)}" for p in ports] if static else []
    container = _Container(predict, name, str(version), code, addresses,
                           heartbeat_interval, session_timeout, stop_event, metrics, may_spin=spin)
    keeper = threading.Thread(target=container.keep_alive, name="heartbeat keeper", daemon=True)
    try:
        keeper.start()
        if static:
            threads = [threading.Thread(target=container.serve_address, args=(a,), name=f"session {a}",
                                        daemon=True) for a in addresses[1:]]
            for t in threads:
                t.start()
            container.serve_address(addresses[0])
            for t in threads:
                t.join()
        else:
            # The resolver runs on its own (daemon) thread, so that a lookup that hangs does not hold up the
            # end of serve(); this thread waits for the stop.
            follower = threading.Thread(target=container.follow, name=f"resolve {host}", daemon=True,
                                        args=(host, ports, resolver or resolve_ipv4, resolve_interval))
            follower.start()
            while not container.stopped():
                container.halt.wait(_MAX_POLL_S)
    finally:
        container.halt.set()
        container.end_members()
        keeper.join()
        if server is not None:
            server.close()
