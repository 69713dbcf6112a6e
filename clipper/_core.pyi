"""The frontends' compiled request path, from `_core/` (Cython; HTTP parsed by rust_core's C interface;
orjson for the bodies the fast path leaves): the HTTP layer both frontends serve on (`HttpServer`,
`HttpProtocol`, `Route`), the query path (`QueryServer`, `App`) and the management bridge (`AdminServer`)."""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from typing_extensions import disjoint_base

from .rust_core import Engine

class InputError(ValueError):
    """A request input that does not match its app's input type (answered 400)."""

class QueryError(ValueError):
    """A well-formed request that cannot be served as asked, e.g. an unknown version (400)."""

#: Input type code -> canonical name (from `rust_core.INPUT_TYPES`).
INPUT_TYPE_NAMES: dict[int, str]

#: Reason phrase of every status the layer writes.
STATUS_REASONS: dict[int, bytes]
#: The query frontend's exact paths: GET /metrics, /healthz, /readyz, /openapi.json.
QUERY_ROUTES: dict[bytes, Route]
#: The layer's own errors in its default words, and in the query frontend's (see `HttpServer`).
DEFAULT_TEXTS: dict[str, tuple[str, str]]
QUERY_TEXTS: dict[str, tuple[str, str]]
PROMETHEUS_TYPE: bytes

def encode_input(value: object, code: int, where: str = "input") -> bytes:
    """Validates one decoded JSON input against an input type code; returns its RPC element bytes."""

def json_fragment(output: str) -> bytes:
    """An output as embedded in a response: re-serialised JSON when it parses, else a JSON string."""

def error_body(error: str, cause: str) -> bytes:
    """The JSON body of an error response."""

@disjoint_base
class Route:
    """One entry of a route table: method, handler, whether the bearer token is required, whether the
    handler blocks (AdminServer runs it in its thread pool). How the handler is called is the server's."""

    method: bytes
    handler: Callable[..., object]
    auth: bool
    blocking: bool
    def __init__(self, method: str | bytes, handler: Callable[..., object], *, auth: bool = False,
                 blocking: bool = False) -> None: ...

@disjoint_base
class HttpServer:
    """What the connections of one listening socket share: limits, bearer token, route table (exact paths),
    the wording of the layer's own errors, the open connections.

    `texts` maps "bad_request" (400), "head_too_large" (431), "too_large" (413), "not_found" (404),
    "wrong_method" (405, with `Allow`), "unauthorized" (401), "draining" (503) and "internal" (500) to
    `(error, cause)`, the cause a `str.format` template over `method`, `path`, `allow`, `limit`, `cause`.
    """

    routes: dict[bytes, Route]
    texts: dict[str, tuple[str, str]]
    token: bytes | None
    max_body_bytes: int
    max_header_bytes: int
    #: False: a known path asked with another method is answered 404, not 405.
    method_not_allowed: bool
    #: A client's EOF with answers due: True, they are written, then the connection closes; False, the client is
    #: taken as gone (the query frontend: its engine requests are withdrawn).
    answers_after_eof: bool
    draining: bool
    #: Called as `request_logger(event, **fields)` for every error answer (and, on the query frontend, every
    #: default or overload answer), with the client's X-Request-Id; None (the default) logs nothing.
    request_logger: Callable[..., None] | None
    def __init__(
        self,
        routes: dict[bytes, Route] | None = None,
        texts: dict[str, tuple[str, str]] | None = None,
        max_body_bytes: int = ...,
        max_header_bytes: int = ...,
        token: str | bytes | None = None,
        method_not_allowed: bool = True,
        answers_after_eof: bool = True,
    ) -> None: ...
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Binds to the event loop the connections run on (call before serving)."""
    def detach(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def start_draining(self) -> None:
        """Shutdown, step one: idle connections close now, the others after answering what they have read;
        requests read from now on get 503 with `Connection: close`."""
    def close_connections(self) -> None:
        """Shutdown, last step: closes every connection."""
    @property
    def unanswered(self) -> int:
        """Requests read and not answered yet, which a drain waits for."""
    async def drain(self, seconds: float) -> int:
        """Shutdown, once the listening socket is closed and `start_draining` was called: waits at most
        `seconds` for the answers still owed, then closes every connection; returns how many were left."""
    @property
    def connection_count(self) -> int: ...

@disjoint_base
class App:
    """An application as the query path sees it."""

    name: str
    input_code: int
    slo_micros: int
    default_fragment: bytes
    model_id: int
    linked_model: str | None
    versions: dict[str, int]
    selector: object | None
    predictions: int
    defaults: int
    def __init__(
        self,
        name: str,
        input_code: int,
        slo_micros: int,
        default_fragment: bytes,
        model_id: int = -1,
        linked_model: str | None = None,
        versions: dict[str, int] | None = None,
    ) -> None: ...
    def recent_latencies(self) -> list[int]:
        """The latest response latencies in microseconds (a window of `rust_core.SAMPLE_WINDOW`)."""
    def counters(self) -> dict:
        """Totals since start: answers by engine status (a list indexed by status code), a latency histogram
        at fractions of the SLO."""

@disjoint_base
class QueryServer(HttpServer):
    """The query frontend's server: the engine, the apps and the requests waiting on the engine.
    Routes: POST `/<app>/predict` and `/<app>/update`, then `QUERY_ROUTES`."""

    engine: Engine
    apps: dict[str, App]
    metrics_handler: Callable[[], bytes]
    prometheus_handler: Callable[[], bytes]
    #: The bearer token predict and update require (the server's `token`).
    predict_token: bytes | None
    ready: bool
    max_batch_inputs: int
    def __init__(
        self,
        engine: Engine,
        max_body_bytes: int = ...,
        max_batch_inputs: int = ...,
        metrics_handler: Callable[[], bytes] | None = None,
        prometheus_handler: Callable[[], bytes] | None = None,
        predict_token: str | bytes | None = None,
        max_header_bytes: int = ...,
    ) -> None: ...
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reads completions on `loop` and batches engine wake-ups per loop iteration."""
    def on_completions(self) -> None: ...
    def on_answers(self) -> None:
        """At low load: reads the containers' answers (`Engine.read_answers`) and fills the slots waiting on them."""
    @property
    def unanswered(self) -> int:
        """Requests waiting on the engine."""

@disjoint_base
class AdminServer(HttpServer):
    """A server whose routes' handlers are `handler(body) -> (status, body)` (answered as application/json) or
    `(status, body, content_type)`: blocking ones run in `executor`, their answers complete on the loop thread,
    in request order."""

    executor: Executor
    #: Blocking handlers submitted and not yet answered.
    in_flight: int
    def __init__(
        self,
        executor: Executor,
        routes: dict[bytes, Route],
        texts: dict[str, tuple[str, str]],
        max_body_bytes: int = ...,
        max_header_bytes: int = ...,
        token: str | bytes | None = None,
    ) -> None: ...

@disjoint_base
class HttpProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 with keep-alive and in-order (pipelined) responses."""

    requests_read: int
    """Requests parsed on this connection so far (each gets exactly one response)."""

    def __init__(self, server: HttpServer) -> None: ...
