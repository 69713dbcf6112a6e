"""The compiled HTTP layer both frontends serve on: `clipper._core.HttpProtocol` on arbitrary bytes, for the
query frontend's server and for the management frontend's.

One `QueryServer` over a real `clipper.rust_core.Engine` (RPC on an ephemeral port) serves these apps:

    i f d s b      one per input type (integers floats doubles strings bytes), no model linked:
                   answered at once with the default ("No connected models found for query")
    dead           doubles, model dead:1 with versions 1 and 2 ("version" works), no replica connected
    echo_s echo_b  strings / bytes, served by in-process fake containers (ZeroMQ DEALERs this harness
                   pumps) that answer with the input itself: model output under the fuzzer's control
    vote           strings, selection policy exp4 over echo_s and one_s (always answers "1")
    greedy         strings, selection policy epsilon_greedy over the same two

One `AdminServer` serves the management frontend's route table (`clipper.frontend.management.ROUTES`: its
paths, methods and token rule, Clipper's wording of the layer's errors) with stand-in handlers that answer
JSON naming the route (the real handlers and their JSON decoding are `admin_json`'s); the blocking ones run
in a stand-in thread pool that the harness drains last-submitted first, so answers complete out of order.

Input format: byte 0 is a control byte, the rest is what the client sends. Control `c & 15`: 0 feeds
everything in one `data_received` call, k > 0 in chunks of 2**(k-1) bytes; `c & 16`: the client
disconnects right after sending (connection_lost while predictions are in flight); `c & 32`: the
connection is the management frontend's; `c & 64`: the server requires the bearer token `fuzz` (predict and
update, or every admin route but ping); `c & 128`: the client half-closes after sending (eof_received).

After feeding, the harness runs the event-loop callbacks and pumps the engine and the containers
until no prediction is in flight (5 s at most: more is a hang). Invariants:
* no exception escapes `data_received`, `connection_lost` or the completion callback, and none is
  raised and ignored inside the compiled protocol (`sys.unraisablehook` sees those);
* every `transport.write` is exactly one HTTP/1.1 response (status line, headers, a Content-Length
  that matches the body), or a `100 Continue`; nothing is written after the transport was closed;
* statuses are 200, 400, 401, 404, 405, 413, 431 or 503 (a 500 is a bug); 4xx/503 bodies are JSON objects
  with string "error" and "cause"; a 405 names the allowed method (`Allow`), a 401 asks for a bearer token
  (`WWW-Authenticate: Bearer`); application/json bodies are valid JSON (strict UTF-8, orjson), but the
  management frontend's `PONG`; 200 predictions have query_id, output, default;
* a response with `Connection: close` closes the transport (or shuts its write side, lingering); while the
  connection stays open, every request gets exactly one response, and reading is not left paused;
* a client that half-closes gets an answer to every request it sent (unless one was answered with
  `Connection: close`; on the query frontend, only those ready by then: it takes the client as gone), then
  the connection closes.
Atheris sees no coverage inside the compiled code (Cython `_core`, orjson, the Rust engine and HTTP parser):
the outcome features (see `fuzz.common.Features`) stand in for it; the Python code reached (selection
policies, routing, metrics) is instrumented as usual.
"""

from __future__ import annotations

import re
import sys
import time
import traceback

import orjson
import zmq

from .common import FEATURES, Failure, template

NAME = "http_request"
#: Python recursion limit while fuzzing (`fuzz.atheris_main`): a RecursionError is never a handled error,
#: so with a low limit, input that drives Python code into deep recursion shows up with ~90-byte inputs.
#: The deepest Python stack the corpus reaches is about 10 frames.
RECURSION_LIMIT = 100

SLO_MICROS = 1_000_000
HANG_SECONDS = 5.0
_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ([A-Za-z ]+)\Z")
_FINAL_STATUSES = {200, 400, 401, 404, 405, 413, 431, 503}
TOKEN = b"fuzz"


class _Pool:
    """A stand-in thread pool for AdminServer: jobs wait until the harness runs them, last submitted first."""

    def __init__(self) -> None:
        self.jobs: list = []

    def submit(self, fn, *args):
        self.jobs.append((fn, args))

    def run_all(self) -> bool:
        ran = bool(self.jobs)
        while self.jobs:
            fn, args = self.jobs.pop()
            fn(*args)
        return ran


class _Loop:
    """The event-loop methods `HttpServer.attach` and `QueryServer.attach` use; callbacks run when the harness
    says; timers (the linger after an early answer) never fire."""

    def __init__(self) -> None:
        self.callbacks: list = []
        self.timers = 0
        self.readers: dict = {}

    def call_soon(self, callback, *args):
        self.callbacks.append((callback, args))

    call_soon_threadsafe = call_soon

    def call_later(self, delay, callback, *args):
        self.timers += 1  # never run, never kept (it would keep its transport alive)

    def add_reader(self, fd, callback, *args):
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def run_callbacks(self) -> None:
        while self.callbacks:
            callback, args = self.callbacks.pop(0)
            callback(*args)


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False
        self.errors: list[str] = []

    def write(self, data: bytes) -> None:
        if self.closed:
            self.errors.append(f"write after close: {bytes(data)[:200]!r}")
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """The server shut its write side (it lingers, reading and dropping): as closed, for the checks."""
        if self.closed:
            self.errors.append("write_eof after close")
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        if self.paused:
            self.errors.append("pause_reading while paused")
        self.paused = True

    def resume_reading(self) -> None:
        if not self.paused:
            self.errors.append("resume_reading while not paused")
        self.paused = False


class _FakeContainer:
    """A model replica on a DEALER socket, answering each input with `answer(input)`."""

    def __init__(self, ctx, endpoint: str, name: str, code: int, answer) -> None:
        from clipper.model_runtime import protocol

        self.p = protocol
        self.name, self.code, self.answer = name, code, answer
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.sock.send_multipart(protocol.heartbeat())

    def handle(self) -> None:
        p = self.p
        msg = p.parse_request(self.sock.recv_multipart())
        if isinstance(msg, p.Heartbeat) and msg.heartbeat_type == p.HEARTBEAT_REQUEST_METADATA:
            self.sock.send_multipart(p.new_container(self.name, "1", self.code))
        elif isinstance(msg, p.PredictRequest):
            outputs = [self.answer(bytes(x)) for x in msg.inputs]
            self.sock.send_multipart(p.prediction_response(msg.msg_id, outputs))


def _stand_in(path: str):
    """A management route's stand-in handler: 200 with JSON naming the route and the body's size."""
    answer = orjson.dumps({"route": path})

    def handler(body: bytes) -> tuple[int, bytes]:
        return 200, answer[:-1] + b',"bytes":%d}' % len(body)
    return handler


class Target:
    def __init__(self) -> None:
        from clipper import _core, rust_core
        from clipper.frontend import management
        from clipper.frontend.metrics import Metrics
        from clipper.selection.selector import ModelSelector

        self.core = _core
        self.engine = rust_core.Engine("tcp://127.0.0.1:0", cache_bytes=1 << 20, heartbeat_timeout=3600.0)
        metrics = Metrics(None)
        self.server = _core.QueryServer(self.engine, max_body_bytes=4096, max_batch_inputs=16,
                                        metrics_handler=metrics.render)
        metrics.server = self.server
        self.loop = _Loop()
        self.server.attach(self.loop)
        self.pool = _Pool()
        admin_routes = {
            path.encode(): _core.Route("GET", lambda body: (200, b"PONG")) if route.handler is None
            else _core.Route(route.method, _stand_in(path), auth=True, blocking=True)
            for path, route in management.ROUTES.items()}
        self.admin = _core.AdminServer(self.pool, admin_routes, management.errors.HTTP_TEXTS, max_body_bytes=4096)
        self.admin.attach(self.loop)
        default = b'"none"'
        apps = self.server.apps
        for name, code in (("i", 1), ("f", 2), ("d", 3), ("s", 4), ("b", 0)):
            apps[name] = _core.App(name, code, SLO_MICROS, default)
        dead1, dead2 = self.engine.model("dead", "1"), self.engine.model("dead", "2")
        apps["dead"] = _core.App("dead", 3, SLO_MICROS, default, dead1, "dead", {"1": dead1, "2": dead2})
        models = {name: self.engine.model(name, "1") for name in ("echo_s", "echo_b", "one_s")}
        apps["echo_s"] = _core.App("echo_s", 4, SLO_MICROS, default, models["echo_s"], "echo_s",
                                   {"1": models["echo_s"]})
        apps["echo_b"] = _core.App("echo_b", 0, SLO_MICROS, default, models["echo_b"], "echo_b",
                                   {"1": models["echo_b"]})
        linked = {"echo_s": models["echo_s"], "one_s": models["one_s"]}
        for name, policy in (("vote", "exp4"), ("greedy", "epsilon_greedy")):
            app = _core.App(name, 4, SLO_MICROS, default)
            app.selector = ModelSelector(name, policy, linked, seed=1)
            apps[name] = app
        self.ctx = zmq.Context()
        endpoint = self.engine.rpc_endpoint
        self.containers = [
            _FakeContainer(self.ctx, endpoint, "echo_s", 4, lambda x: x),
            _FakeContainer(self.ctx, endpoint, "echo_b", 0, lambda x: x),
            _FakeContainer(self.ctx, endpoint, "one_s", 4, lambda x: b"1"),
        ]
        deadline = time.monotonic() + 10
        while len(self.engine.replicas()) < len(self.containers):
            if time.monotonic() > deadline:
                raise RuntimeError("the fake containers did not register with the engine")
            self.pump_once(50)

    def pump_once(self, timeout_ms: int) -> None:
        self.loop.run_callbacks()
        poller = zmq.Poller()
        for c in self.containers:
            poller.register(c.sock, zmq.POLLIN)
        readers = dict(self.loop.readers)  # the query server's: completions, and the answers while it reads them
        for fd in readers:
            poller.register(fd, zmq.POLLIN)
        for sock, _ in poller.poll(timeout_ms):
            if sock in readers:
                callback, args = readers[sock]
                callback(*args)
            else:
                next(c for c in self.containers if c.sock is sock).handle()
        self.loop.run_callbacks()

    def check(self, data: bytes) -> None:
        if not data:
            return
        control, payload = data[0], data[1:]
        k = control & 15
        chunk = len(payload) if k == 0 else 1 << (k - 1)
        disconnect = bool(control & 16)
        admin = bool(control & 32)
        token = TOKEN if control & 64 else None
        half_close = bool(control & 128) and not disconnect
        server = self.admin if admin else self.server
        self.admin.token = self.server.predict_token = token
        errors: list[str] = []
        protocol = self.core.HttpProtocol(server)
        transport = _Transport()
        previous_hook = sys.unraisablehook
        sys.unraisablehook = lambda u: errors.append("".join(traceback.format_exception(u.exc_value)))
        try:
            lost = self.run(protocol, transport, payload, chunk, disconnect, half_close)
        finally:
            sys.unraisablehook = previous_hook
        if errors:
            raise Failure("exception raised and ignored inside the compiled protocol:\n" + "\n".join(errors))
        if transport.errors:
            raise Failure("; ".join(transport.errors))
        finals, closing = self.check_writes(transport.writes, transport.closed, admin)
        requests = protocol.requests_read
        FEATURES("summary", admin, min(requests, 4), min(finals, 4), transport.closed, disconnect, half_close)
        if half_close:
            if not transport.closed:
                raise Failure("the client half-closed and every answer is written, but the connection stays open")
            if server.answers_after_eof and not closing and finals != requests:
                raise Failure(f"the client half-closed after {requests} requests and got {finals} responses")
        if not transport.closed:
            if finals != requests:
                raise Failure(f"{requests} requests but {finals} responses on an open connection")
            if transport.paused:
                raise Failure("reading left paused on an open connection with nothing in flight")
        elif not disconnect and finals > requests + 1:
            raise Failure(f"{finals} responses for {requests} requests")
        if not lost:
            protocol.connection_lost(None)

    def run(self, protocol, transport: _Transport, payload: bytes, chunk: int, disconnect: bool,
            half_close: bool) -> bool:
        """Feeds the payload, then runs callbacks, pumps the engine and runs the admin jobs until nothing is in
        flight; True when the connection is lost (the client disconnected, or its half-close closed it)."""
        protocol.connection_made(transport)
        lost = False
        try:
            for i in range(0, max(len(payload), 1), max(chunk, 1)):
                protocol.data_received(payload[i:i + chunk])
            if disconnect:
                protocol.connection_lost(None)
                transport.closed = lost = True
            elif half_close and not protocol.eof_received():  # asyncio closes the transport then
                transport.closed = lost = True
                protocol.connection_lost(None)
        except Exception:
            raise Failure(f"exception escaped data_received:\n{traceback.format_exc()}") from None
        deadline = time.monotonic() + HANG_SECONDS
        try:
            while self.server.unanswered or self.loop.callbacks or self.pool.jobs or self.admin.in_flight:
                if time.monotonic() > deadline:
                    raise Failure(f"hang: {self.server.unanswered} predictions, {self.admin.in_flight} admin "
                                  f"requests still in flight after {HANG_SECONDS} s")
                if self.pool.run_all():
                    self.loop.run_callbacks()
                else:
                    self.pump_once(10)
        except Failure:
            raise
        except Exception:
            raise Failure(f"exception escaped the completion callback:\n{traceback.format_exc()}") from None
        return lost

    def check_writes(self, writes: list[bytes], closed: bool, admin: bool) -> tuple[int, bool]:
        """Checks every write; returns the number of final (non-100) responses and whether one had
        `Connection: close`."""
        finals = 0
        closing = False
        for n, raw in enumerate(writes):
            head, sep, body = raw.partition(b"\r\n\r\n")
            if not sep:
                raise Failure(f"write {n} is not an HTTP response: {raw[:300]!r}")
            lines = head.split(b"\r\n")
            m = _STATUS_LINE.match(lines[0])
            if not m:
                raise Failure(f"bad status line {lines[0]!r}")
            status = int(m.group(1))
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(b": ")
                if not colon or not name or name.lower() in headers:
                    raise Failure(f"bad or repeated header line {line!r}")
                headers[name.lower()] = value
            if status == 100:
                if body or len(lines) != 1:
                    raise Failure(f"100 Continue with headers or a body: {raw!r}")
                FEATURES("100")
                continue
            finals += 1
            if status not in _FINAL_STATUSES:
                raise Failure(f"status {status}: {raw[:600]!r}")
            length = headers.get(b"content-length", b"")
            if not length.isdigit() or int(length) != len(body):
                raise Failure(f"Content-Length {length!r} for a body of {len(body)} bytes: {raw[:300]!r}")
            if headers.get(b"connection") == b"close":
                closing = True
                if not (n == len(writes) - 1 and closed):
                    raise Failure("'Connection: close' but the connection stayed open or was written to again")
            if status == 405 and not headers.get(b"allow"):
                raise Failure(f"405 without Allow: {raw[:300]!r}")
            if status == 401 and headers.get(b"www-authenticate") != b"Bearer":
                raise Failure(f"401 without 'WWW-Authenticate: Bearer': {raw[:300]!r}")
            ctype = headers.get(b"content-type")
            if admin and status == 200 and body == b"PONG":
                FEATURES(200, "pong")
                continue
            if ctype == b"application/json":
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as e:
                    raise Failure(f"{status} body is not valid JSON ({e}): {body[:600]!r}") from None
            elif status == 200 and ctype == b"text/plain" and body == b"Feedback received? 1":
                FEATURES(200, "feedback")
                continue
            else:
                raise Failure(f"{status} with Content-Type {ctype!r}: {body[:300]!r}")
            if status != 200:
                if not (isinstance(doc, dict) and isinstance(doc.get("error"), str)
                        and isinstance(doc.get("cause"), str)):
                    raise Failure(f"{status} body without string error and cause: {body[:300]!r}")
                # 404 and 405 causes name the method and the path, which can be any token: their first two
                # words only ("no route", "no application", "use POST", "_ accepts")
                FEATURES(status, doc["error"], template(doc["cause"], 2 if status in (404, 405) else 8))
                continue
            if admin:
                if not (isinstance(doc, dict) and isinstance(doc.get("route"), str)):
                    raise Failure(f"admin 200 that is not a route's answer: {body[:300]!r}")
                FEATURES(200, "admin", doc["route"])
                continue
            self.check_prediction(doc, body)
        return finals, closing

    def check_prediction(self, doc, body: bytes) -> None:
        if isinstance(doc, dict) and "batch_predictions" in doc:
            items = doc["batch_predictions"]
            if not isinstance(items, list):
                raise Failure(f"batch_predictions is not a list: {body[:300]!r}")
            FEATURES(200, "batch", min(len(items), 4))
        elif isinstance(doc, dict) and "query_id" in doc:
            items = [doc]
        else:
            FEATURES(200, "other", type(doc).__name__)  # /metrics
            return
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("query_id"), int) and "output" in item
                    and isinstance(item.get("default"), bool)):
                raise Failure(f"malformed prediction {item!r}")
            FEATURES(200, item["default"], template(str(item.get("default_explanation", ""))),
                     type(item["output"]).__name__, "models" in item)

    def close(self) -> None:
        self.server.detach(self.loop)
        for c in self.containers:
            c.sock.close(linger=0)
        self.ctx.term()
        self.engine.close()


def setup() -> Target:
    return Target()
