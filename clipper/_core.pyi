"""The query frontend's compiled request path, from `_core/` (Cython; HTTP parsed by rust_core's C interface;
orjson for the bodies the fast path leaves)."""

import asyncio
from collections.abc import Callable

from .rust_core import Engine

class InputError(ValueError):
    """A request input that does not match its app's input type (answered 400)."""

class QueryError(ValueError):
    """A well-formed request that cannot be served as asked, e.g. an unknown version (400)."""

INPUT_TYPE_NAMES: tuple[str, ...]

def encode_input(value: object, code: int, where: str = "input") -> bytes:
    """Validates one decoded JSON input against an input type code; returns its RPC element bytes."""

def json_fragment(output: str) -> bytes:
    """An output as embedded in a response: re-serialised JSON when it parses, else a JSON string."""

def error_body(error: str, cause: str) -> bytes:
    """The JSON body of an error response."""

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
        """The latest response latencies in microseconds (a window of 4096)."""
    def counters(self) -> dict:
        """Totals since start: answers by status, a latency histogram at fractions of the SLO."""

class QueryServer:
    """Process-wide query state: the engine, the apps and the requests waiting on the engine."""

    engine: Engine
    apps: dict[str, App]
    metrics_handler: Callable[[], bytes]
    prometheus_handler: Callable[[], bytes]
    predict_token: bytes | None
    ready: bool
    max_body_bytes: int
    max_header_bytes: int
    max_batch_inputs: int
    def __init__(
        self,
        engine: Engine,
        max_body_bytes: int = 10485760,
        max_batch_inputs: int = 10000,
        metrics_handler: Callable[[], bytes] | None = None,
        prometheus_handler: Callable[[], bytes] | None = None,
        predict_token: str | bytes | None = None,
        max_header_bytes: int = 65536,
    ) -> None: ...
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reads completions on `loop` and batches engine wake-ups per loop iteration."""
    def detach(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def on_completions(self) -> None: ...
    draining: bool
    #: Called as `request_logger(event, **fields)` for every answer that is not a prediction (default,
    #: overload, error), with the client's X-Request-Id; None (the default) logs nothing.
    request_logger: Callable[..., None] | None
    def start_draining(self) -> None:
        """Shutdown, step one: idle connections close now, the others after answering what they have read;
        requests read from now on get 503 with `Connection: close`."""
    def close_connections(self) -> None:
        """Shutdown, last step: closes every connection."""
    @property
    def connection_count(self) -> int: ...
    @property
    def waiting_count(self) -> int: ...

class HttpProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 with keep-alive and in-order (pipelined) responses."""

    requests_read: int
    """Requests parsed on this connection so far (each gets exactly one response)."""

    def __init__(self, server: QueryServer) -> None: ...
