"""The management frontend's request decoders, served as in production: JSON parse + validation + route
handler, every route, through the compiled HTTP layer.

Input format: byte 0 picks the route (`b % 17`, in `ROUTES` order), the rest is the request body.
Each input is sent as `POST <route>` (Content-Length framed) to a `clipper._core.HttpProtocol` of the
frontend's `AdminServer`, whose handler runs `ManagementFrontend.call(route, body)` in the frontend's
thread pool and completes on the (stand-in) event loop; the harness reads the response off the (stand-in)
transport. A real Redis (a `redis-server` child started once) holds a small fixed state (apps, models,
links, a replica, a selection state) that is restored before every input, so an input always means the
same thing.

Invariants: exactly one well-formed response (status line, application/json, a Content-Length that matches,
kept alive), answered within 5 s; 200 or 400, never 500 (an exception no handler expected) or 503; a body
that is not the route's JSON is a 400 with Clipper's `Error parsing JSON: ...` text; getters answer 200
with JSON; the handler step itself never raises.
"""

from __future__ import annotations

import logging
import queue
import re
import traceback

import orjson

from .common import FEATURES, Failure, template

NAME = "admin_json"
ANSWER_SECONDS = 5.0
_RESPONSE = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z ]+\r\n((?:[A-Za-z-]+: [^\r\n]*\r\n)*)\r\n", re.S)

#: Routes whose 200 body is JSON.
_JSON_ROUTES = {"/admin/get_all_applications", "/admin/get_application", "/admin/get_linked_models",
                "/admin/get_all_models", "/admin/get_model", "/admin/get_all_containers", "/admin/get_container",
                "/admin/get_selection_state"}


def routes() -> list[str]:
    from clipper.frontend import management

    return [path for path, route in management.ROUTES.items() if route.handler is not None]


class _Loop:
    """The event loop as AdminServer sees it: `call_soon_threadsafe` from the worker thread queues the
    completion, which the harness runs on its own thread."""

    def __init__(self) -> None:
        self.ready: queue.SimpleQueue = queue.SimpleQueue()

    def call_soon(self, callback, *args):
        self.ready.put((callback, args))

    call_soon_threadsafe = call_soon

    def call_later(self, delay, callback, *args):
        pass


class _Transport:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += bytes(data)

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Target:
    def __init__(self) -> None:
        import redis

        from clipper.frontend import management
        from clipper.state import RedisServer, StateStore

        self.m = management
        self.routes = routes()
        self.redis_server = RedisServer().start()
        self.store = StateStore.connect(self.redis_server.host, self.redis_server.port)
        self.frontend = management.ManagementFrontend(self.store, workers=1)
        self.loop = _Loop()
        self.frontend.http.attach(self.loop)
        logging.getLogger("clipper.management").setLevel(logging.CRITICAL)
        s = self.store
        s.add_app("a", "doubles", "0.5", 100000)
        s.add_app("b", "strings", "none", 20000, "exp3")
        s.add_model("m", "1", "doubles", ["l"], "img:1", "/m", 4)
        s.add_model("m", "2", "doubles", [], "img:2", "/m", -1)
        s.add_model("s", "1", "strings", [], "img:s", "/s", 8)
        s.add_links("a", ["m"])
        s.add_links("b", ["s"])
        s.add_replica("m", "1", s.next_replica_id("m", "1"), "doubles", "c0")
        s.set_selection_state("b", '{"version":1,"policy":"exp3","seed":null,"t":0,"params":{},"arms":[]}')
        self.raw = redis.Redis(host=self.redis_server.host, port=self.redis_server.port)
        self.baseline = {key: self.raw.dump(key) for key in self.raw.keys("*")}

    def reset(self) -> None:
        with self.raw.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            for key, value in self.baseline.items():
                pipe.restore(key, 0, value)
            pipe.execute()

    def check(self, data: bytes) -> None:
        if not data:
            return
        path = self.routes[data[0] % len(self.routes)]
        body = data[1:]
        route = self.m.ROUTES[path]
        self.reset()
        response = self.serve(path, body)
        text = response.body.decode("utf-8", "replace")
        FEATURES(path, response.status, template(text))
        if response.status == 500:
            try:  # the same call without the 500 mapping, for the traceback
                self.reset()
                route.handler(self.store, self.m.parse_json(body))
                detail = "(not reproduced without the mapping)"
            except Exception:
                detail = traceback.format_exc(limit=-4)
            raise Failure(f"{path}: 500 for body {body!r}: {text}\n{detail}")
        if response.status != 200 and response.status != 400:
            raise Failure(f"{path}: status {response.status} for body {body!r}: {text}")
        try:
            parsed = self.m.parse_json(body)
        except self.m.JsonError:
            parsed = None
            if response.status != 400 or not response.body.startswith(b"Error parsing JSON: JSON parse error: "):
                raise Failure(f"{path}: body {body!r} is not JSON but the answer is {response.status} {text}") from None
        if response.status == 200:
            if parsed is None:
                raise Failure(f"{path}: 200 for a body that is not JSON: {body!r}")
            if path in _JSON_ROUTES:
                try:
                    orjson.loads(response.body)
                except orjson.JSONDecodeError as e:
                    raise Failure(f"{path}: 200 body is not JSON ({e}): {response.body!r}") from None

    def serve(self, path: str, body: bytes):
        """The response to `POST path` with `body`, through the compiled HTTP layer and the thread pool."""
        from clipper import _core

        protocol = _core.HttpProtocol(self.frontend.http)
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                               % (path.encode(), len(body), body))
        try:
            while self.frontend.http.in_flight:
                callback, args = self.loop.ready.get(timeout=ANSWER_SECONDS)
                callback(*args)
        except queue.Empty:
            raise Failure(f"{path}: no answer within {ANSWER_SECONDS} s for body {body!r}") from None
        finally:
            protocol.connection_lost(None)
        m = _RESPONSE.match(transport.data)
        if m is None:
            raise Failure(f"{path}: not one HTTP response: {transport.data[:300]!r}")
        headers = dict(line.split(b": ", 1) for line in m.group(2).split(b"\r\n") if line)
        answer = transport.data[m.end():]
        if headers.get(b"Content-Length") != b"%d" % len(answer) or transport.closed:
            raise Failure(f"{path}: bad framing or closed: {transport.data[:300]!r}")
        if headers.get(b"Content-Type") != b"application/json":
            raise Failure(f"{path}: Content-Type {headers.get(b'Content-Type')!r}")
        return self.m.Response(int(m.group(1)), answer)

    def close(self) -> None:
        self.frontend.executor.shutdown(wait=False)
        self.store.close()
        self.raw.close()
        self.redis_server.stop()


def setup() -> Target:
    return Target()
