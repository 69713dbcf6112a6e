"""The harness of the hot-path microbenchmarks: a real engine and query server, without sockets to clients.

`Harness` holds a `clipper.rust_core.Engine` (its RPC on an ephemeral port of 127.0.0.1), a
`clipper._core.QueryServer` over it attached to a stand-in event loop (callbacks run when the harness says),
and an in-process model replica on a ZeroMQ DEALER that answers each doubles input with the sum of its
elements. The harness pumps the replica and the engine's completions until what it asked for is answered;
the benchmarks then time only the calls of the compiled modules (and a stand-in transport whose `write`
keeps the response: no system call).

Apps: `sum` (doubles, model `sum:1`, served by the replica) and `none` (doubles, no model linked: every
request is answered at once with the default).
"""

from __future__ import annotations

import time

import zmq

SLO_MICROS = 1_000_000
DEFAULT = b"-1.0"


class StubLoop:
    """The event-loop methods `QueryServer.attach` uses; callbacks run in `run_callbacks`, timers never."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.readers: dict = {}

    def call_soon(self, callback, *args):
        self.callbacks.append((callback, args))

    call_soon_threadsafe = call_soon

    def call_later(self, delay, callback, *args):
        return None

    def add_reader(self, fd, callback, *args):
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def run_callbacks(self) -> None:
        while self.callbacks:
            callback, args = self.callbacks.pop(0)
            callback(*args)


class StubTransport:
    """Keeps the last response written; counts writes."""

    def __init__(self) -> None:
        self.last = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def wait_completions(self, n: int, timeout_s: float = 10.0) -> list:
        """Wakes the engine and collects its completions until `n` have come."""
        deadline = time.monotonic() + timeout_s
        done: list = []
        while len(done) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(done)} of {n} completions after {timeout_s} s")
            self.engine.wake()
            done += self.engine.drain()
            done += self.engine.read_answers()[1]  # nothing unless wake() said the caller reads them
            time.sleep(0.001)
        return done

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        raise AssertionError("a benchmark request should never fill the pipeline")

    def resume_reading(self) -> None:
        pass


class SumReplica:
    """A model replica speaking Clipper RPC v3 on a DEALER socket: each doubles input -> the sum of its elements."""

    def __init__(self, ctx: zmq.Context, endpoint: str, name: str, version: str, code: int) -> None:
        import numpy as np

        from clipper.model_runtime import protocol

        self.np, self.p = np, protocol
        self.name, self.version, self.code = name, version, code
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.sock.send_multipart(protocol.heartbeat())

    def handle(self) -> None:
        p = self.p
        msg = p.parse_request(self.sock.recv_multipart())
        if isinstance(msg, p.Heartbeat) and msg.heartbeat_type == p.HEARTBEAT_REQUEST_METADATA:
            self.sock.send_multipart(p.new_container(self.name, self.version, self.code))
        elif isinstance(msg, p.PredictRequest):
            outputs = [repr(float(self.np.frombuffer(bytes(x), dtype="<f8").sum())).encode() for x in msg.inputs]
            self.sock.send_multipart(p.prediction_response(msg.msg_id, outputs))


class Harness:
    def __init__(self) -> None:
        from clipper import _core, rust_core

        self.core, self.rust = _core, rust_core
        self.doubles = rust_core.INPUT_TYPES["doubles"]
        self.engine = rust_core.Engine("tcp://127.0.0.1:0", heartbeat_timeout=3600.0)
        self.server = _core.QueryServer(self.engine)
        self.loop = StubLoop()
        self.server.attach(self.loop)
        self.sum_model = self.engine.model("sum", "1")
        self.orphan_model = self.engine.model("orphan", "1")  # never has a replica: every submit is a miss
        apps = self.server.apps
        apps["sum"] = _core.App("sum", self.doubles, SLO_MICROS, DEFAULT, self.sum_model, "sum", {"1": self.sum_model})
        apps["none"] = _core.App("none", self.doubles, SLO_MICROS, DEFAULT)
        self.ctx = zmq.Context()
        self.replica = SumReplica(self.ctx, self.engine.rpc_endpoint, "sum", "1", self.doubles)
        self.pump_until(lambda: len(self.engine.replicas()) == 1, "the replica did not register")

    def pump_until(self, done, what: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(what)
            self.loop.run_callbacks()
            poller = zmq.Poller()
            poller.register(self.replica.sock, zmq.POLLIN)
            readers = dict(self.loop.readers)  # the server's: completions, and the answers while it reads them
            for fd in readers:
                poller.register(fd, zmq.POLLIN)
            for sock, _ in poller.poll(20):
                if sock in readers:
                    callback, args = readers[sock]
                    callback(*args)
                else:
                    self.replica.handle()
            self.loop.run_callbacks()

    def connection(self):
        """A client connection of the query server on a stub transport: (protocol, transport)."""
        protocol = self.core.HttpProtocol(self.server)
        transport = StubTransport()
        protocol.connection_made(transport)
        return protocol, transport

    def warm_cache(self, body: bytes) -> bytes:
        """POSTs `body` to /sum/predict and pumps until the model's answer is written (it fills the cache)."""
        protocol, transport = self.connection()
        protocol.data_received(predict_request("sum", body))
        self.pump_until(lambda: transport.writes == 1, "no answer from the replica")
        protocol.connection_lost(None)
        return transport.last

    def drain(self) -> int:
        """Wakes the engine and drops every completion waiting (the misses' NO_MODEL answers)."""
        self.engine.wake()
        return len(self.engine.drain())

    def wait_completions(self, n: int, timeout_s: float = 10.0) -> list:
        """Wakes the engine and collects its completions until `n` have come."""
        deadline = time.monotonic() + timeout_s
        done: list = []
        while len(done) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(done)} of {n} completions after {timeout_s} s")
            self.engine.wake()
            done += self.engine.drain()
            done += self.engine.read_answers()[1]  # nothing unless wake() said the caller reads them
            time.sleep(0.001)
        return done

    def close(self) -> None:
        self.server.detach(self.loop)
        self.replica.sock.close(linger=0)
        self.ctx.term()
        self.engine.close()


def predict_request(app: str, body: bytes) -> bytes:
    """The bytes of a keep-alive HTTP/1.1 predict request, as a client such as wrk sends them."""
    return (b"POST /%s/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (app.encode(), len(body), body))
