"""The management frontend's server: the route table on the compiled HTTP layer, a thread pool for the store,
the listening socket, and the command line.

Requests are framed, limited and answered by `clipper._core` (the layer the query frontend serves on:
keep-alive, pipelining with answers in request order, back-pressure, `Expect: 100-continue`, `X-Request-Id`
echo, draining on shutdown). Each admin route's handler runs in a worker thread (`call`): Redis calls never
block the event loop. So does the status monitor's sampling (`status.StatusMonitor.sample`, every
`status_interval` seconds): the state in Redis and every announced query frontend's `/metrics`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis
import uvloop

from ... import _core, cmdline
from ...cmdline import ArgumentParser
from ...logs import configure_logging
from ...state import StateError, StateStore
from ..config import (
    DEFAULT_HOST,
    DEFAULT_LOG_LEVEL,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REDIS_PORT,
    refuse_open_without_token,
)
from .errors import HTTP_TEXTS, JsonError, Response, error_response, parse_json
from .routes import ROUTES, Route
from .status import INTERVAL_S, StatusMonitor

log = logging.getLogger("clipper.management")

DESCRIPTION = "The management frontend: Clipper's admin REST API on :1338, writing `clipper.state`."
DEFAULT_PORT = DEFAULT_MANAGEMENT_PORT
#: Seconds `stop` waits for the answers in flight before closing the connections.
DRAIN_SECONDS = 5.0


class ManagementFrontend:
    """The admin API server: routes, a thread pool for the store, and the listening socket."""

    def __init__(self, store: StateStore, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 workers: int = 4, token: str | None = None, status_interval: float = INTERVAL_S) -> None:
        self.store = store
        self.host, self.port = host, port
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipper-mgmt")
        self.status = StatusMonitor(store, interval_s=status_interval)
        self._sampler: asyncio.Task[None] | None = None
        self.http = _core.AdminServer(self.executor, self.compiled_routes(), HTTP_TEXTS, max_body_bytes,
                                      max_header_bytes, token)
        self.server: asyncio.AbstractServer | None = None
        self.redis_ok: bool | None = None

    def compiled_routes(self) -> dict[bytes, _core.Route]:
        """ROUTES for the compiled layer: the routes with a handler, and the status data, need the token and run
        in the thread pool; those with a fixed answer (ping, the OpenAPI description, the status page's files)
        are answered on the loop, without the token."""
        table = {}
        for path, route in ROUTES.items():
            if route.monitor is not None:
                table[path.encode()] = _core.Route(route.method, self._bind_monitor(route.monitor), auth=True,
                                                   blocking=True)
            elif route.handler is None:
                assert route.answer is not None, path
                table[path.encode()] = _core.Route(route.method, _fixed(route.answer(), route.content_type))
            else:
                table[path.encode()] = _core.Route(route.method, self._bind(route), auth=True, blocking=True)
        return table

    def _bind(self, route: Route):
        def handler(body: bytes) -> tuple[int, bytes]:
            response = self.call(route, body)
            return response.status, response.body
        return handler

    def _bind_monitor(self, make: Callable[[StatusMonitor], bytes]) -> Callable[[bytes], tuple[int, bytes]]:
        def handler(body: bytes) -> tuple[int, bytes]:
            return 200, make(self.status)
        return handler

    async def _sample_forever(self) -> None:
        """Runs a status sample every `status.interval_s` seconds, in the thread pool."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await loop.run_in_executor(self.executor, self.status.sample)
            except RuntimeError:  # the pool is shut down: stopping
                return
            except Exception:
                log.exception("status sample failed")
            await asyncio.sleep(max(0.1, self.status.interval_s - (loop.time() - started)))

    @property
    def max_body_bytes(self) -> int:
        return self.http.max_body_bytes

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.http.attach(loop)
        self.server = await loop.create_server(lambda: _core.HttpProtocol(self.http), self.host, self.port,
                                               reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        if self.status.interval_s > 0:
            self._sampler = loop.create_task(self._sample_forever())
        log.info("management frontend listening", extra={"host": self.host, "port": self.port})

    async def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Stops accepting connections, answers the requests in flight (for at most `drain_seconds`; requests
        read meanwhile get 503 and `Connection: close`), then closes the connections and the store."""
        if self._sampler is not None:
            self._sampler.cancel()
        if self.server is not None:
            self.server.close()
            self.http.start_draining()
            if unanswered := await self.http.drain(drain_seconds):
                log.warning("stopping with requests unanswered", extra={"requests": unanswered,
                                                                        "drain_seconds": drain_seconds})
            await self.server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def call(self, route: Route, body: bytes) -> Response:
        """Runs one route handler (in a worker thread) and maps its outcome to a response; never raises."""
        assert route.handler is not None
        try:
            result = route.handler(self.store, parse_json(body))
        except JsonError as e:
            return Response(400, f"Error parsing JSON: {e}. Expected JSON schema: {route.schema}".encode())
        except StateError as e:
            self._redis_state(True)
            return Response(400, e.message.encode("utf-8", "backslashreplace"))
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self._redis_state(False, e)
            where = self.store.redis.get_connection_kwargs()
            return error_response(503, "Unavailable",
                                  f"Redis at {where.get('host')}:{where.get('port')} is unreachable: {e}")
        except Exception as e:
            log.exception("admin request failed")
            return error_response(500, "Internal Server Error", f"{type(e).__name__}: {e}")
        self._redis_state(True)
        return Response(200, result.encode())

    def _redis_state(self, ok: bool, exc: Exception | None = None) -> None:
        if ok != self.redis_ok:
            self.redis_ok = ok
            if ok:
                log.info("redis reachable")
            else:
                log.warning("redis unreachable", extra={"cause": str(exc)})

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stopping.done() or stopping.set_result(None))
        await self.start()
        try:
            await stopping
        finally:
            await self.stop()


def _fixed(answer: bytes, content_type: str) -> Callable[[bytes], tuple[int, bytes, bytes]]:
    """A handler answering 200 with `answer` (of `content_type`), whatever the body."""
    ctype = content_type.encode()

    def handler(body: bytes) -> tuple[int, bytes, bytes]:
        return 200, answer, ctype
    return handler


# ---------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    """``python -m clipper.frontend.management``'s parser."""
    parser = ArgumentParser(prog="python -m clipper.frontend.management", description=DESCRIPTION)
    parser.add_argument("--redis-host", "--redis_ip", default=DEFAULT_HOST, help="Redis host")
    parser.add_argument("--redis-port", "--redis_port", type=cmdline.port, default=DEFAULT_REDIS_PORT,
                        help="Redis port")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=cmdline.port, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument("--max-body-bytes", type=cmdline.positive_int, default=DEFAULT_MAX_BODY_BYTES,
                        help="request body limit in bytes; 413 above")
    parser.add_argument("--token", default=os.environ.get("CLIPPER_ADMIN_TOKEN"),
                        help="require 'Authorization: Bearer <token>' on every /admin route but ping "
                             "(default: $CLIPPER_ADMIN_TOKEN, else none)")
    parser.add_argument("--insecure", action="store_true",
                        help="serve the admin routes without a token on a --host other machines can reach")
    parser.add_argument("--status-interval", type=cmdline.positive_float, default=INTERVAL_S,
                        help="seconds between the status page's samples of Redis and the query frontends' /metrics")
    parser.add_argument("--max-apps", type=cmdline.positive_int, default=StateStore.max_apps,
                        help="most applications add_app accepts")
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL, choices=cmdline.LOG_LEVELS, type=str.upper,
                        help="log level")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        refuse_open_without_token(args.host, args.token, args.insecure, "the admin routes",
                                  "--token (or $CLIPPER_ADMIN_TOKEN)")
    except ValueError as e:
        parser.error(str(e))

    store = StateStore.connect(args.redis_host, args.redis_port)
    store.max_apps = args.max_apps
    frontend = ManagementFrontend(store, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
                                  token=args.token, status_interval=args.status_interval)
    try:  # only to log the state at start: requests reconnect on their own, 503 while Redis is away
        store.ping()
        frontend._redis_state(True)
    except redis.RedisError as e:
        frontend._redis_state(False, e)
    uvloop.run(frontend.serve_forever())
    return 0
