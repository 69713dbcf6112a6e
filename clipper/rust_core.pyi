"""The serving engine, compiled from `rust_core/` (Rust, PyO3).

One native thread owns the ZeroMQ ROUTER that model containers connect to (Clipper RPC v3), the
per-model-version queues (earliest deadline first), adaptive batching (AIMD per replica), the
prediction cache and the deadlines. The GIL is never taken on that thread.
"""

from collections.abc import Sequence
from typing import final

__all__ = [
    "Engine",
    "Dealer",
    "c_api",
    "encode_simple_input",
    "decode_batch",
    "encode_prediction",
    "DEFAULT_RPC_ADDRESS",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_HEARTBEAT_TIMEOUT_S",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PING_INTERVAL_S",
    "DEFAULT_PING_TIMEOUT_S",
    "SAMPLE_WINDOW",
    "INPUT_TYPES",
    "STATUS_OK",
    "STATUS_TIMEOUT",
    "STATUS_NO_MODEL",
    "STATUS_MODEL_ERROR",
    "STATUS_OVERLOADED",
    "STATUS_NAMES",
]

#: The engine's defaults, which every layer above reads from here (`clipper.frontend.config`).
DEFAULT_RPC_ADDRESS: str
DEFAULT_CACHE_BYTES: int
DEFAULT_HEARTBEAT_TIMEOUT_S: float
DEFAULT_MAX_QUEUE: int
DEFAULT_PING_INTERVAL_S: float
DEFAULT_PING_TIMEOUT_S: float
#: How many recent samples a latency or batch-size window keeps.
SAMPLE_WINDOW: int
#: Canonical input type name -> RPC wire code.
INPUT_TYPES: dict[str, int]
#: How a request ended (the `status` of `Engine.drain`), and the names of the codes in order.
STATUS_OK: int
STATUS_TIMEOUT: int
STATUS_NO_MODEL: int
STATUS_MODEL_ERROR: int
STATUS_OVERLOADED: int
STATUS_NAMES: list[str]

@final
class Engine:
    """A running engine. Requests go in with `submit`; completions come out in bulk with `drain`."""

    def __new__(
        cls,
        rpc_address: str = ...,
        cache_bytes: int = ...,
        heartbeat_timeout: float = ...,
        aimd_target: float = ...,
        max_batch_size: int = ...,
        max_queue: int = ...,
        ping_interval: float = ...,
        ping_timeout: float = ...,
        spin: bool = ...,
    ) -> Engine:
        """Binds the RPC socket (OSError if it cannot) and starts the engine thread.

        A replica whose connection closes (its process died, its host reset the connection) is
        dropped at once and its batch requeued.
        heartbeat_timeout: seconds of silence after which a replica is dropped and its batch requeued.
        ping_interval, ping_timeout: ZMTP heartbeats on each container connection (seconds, 0: off):
            a PING every ping_interval; a connection that sends nothing, not even the PONG, for
            ping_timeout after a PING is closed, and its replica dropped (a host that vanished).
        aimd_target: fraction of the SLO a batch may take before AIMD backs off by 10%.
        max_queue: requests a model's queue holds; past it requests complete at once as overloaded.
        spin: while only small batches are in flight, poll for up to one round trip before sleeping
            (lower latency at low load, for CPU); False: always sleep.
        """

    @property
    def rpc_endpoint(self) -> str:
        """The bound endpoint, with the real port when port 0 was asked."""

    def model(self, name: str, version: str) -> int:
        """The small integer id of a model version, interned on first use."""

    def model_name(self, model: int) -> tuple[str, str] | None:
        """(name, version) of a model id."""

    def configure_model(self, model: int, batch_size: int = -1, batch_wait_micros: int = 0) -> None:
        """Fixed batch size (or -1 for AIMD) and delayed-batching wait of a model version."""

    def submit(self, token: int, model: int, input_type_code: int, data: bytes, slo_micros: int) -> bytes | None:
        """Submits one prediction.

        Returns the cached output (a JSON fragment) on a cache hit; otherwise None, and the request
        completes later under `token`. Call `wake` once after a burst of submits.
        """

    def cancel(self, tokens: list[int]) -> None:
        """Withdraws requests whose client has gone; work only they waited for is never sent."""

    def wake(self) -> bool:
        """Has the submitted requests taken: by the engine thread, or, while it sleeps at low load, by the caller,
        who then sends the batches that can go now without waking it. Call once after a burst of submits.

        True: the caller reads the answers of those batches too. While that lasts, watch `answer_fd` and call
        `read_answers` whenever it is readable; the engine thread does not wake for them. False: stop watching."""

    def answer_fd(self) -> int:
        """A file descriptor readable while something from a container waits to be read (see `wake`)."""

    def read_answers(self) -> tuple[bool, list[tuple[int, int, bytes]]]:
        """Reads what has come from the containers and sends the batches that can go now: whether the caller
        still reads the answers (as `wake` says), and the completions that came (as `drain` gives them, which
        does not give these)."""

    def completion_fd(self) -> int:
        """A file descriptor that is readable while completions wait to be drained."""

    def drain(self) -> list[tuple[int, int, bytes]]:
        """Every waiting completion as (token, status, payload).

        STATUS_OK: payload is the model output as a JSON fragment; STATUS_TIMEOUT: the SLO passed;
        STATUS_NO_MODEL: the model has no connected replica; STATUS_MODEL_ERROR: the model failed the
        batch, payload is its error message; STATUS_OVERLOADED: the model's queue was full (refused at
        once).
        """

    def replicas(self) -> list[tuple[int, int, int]]:
        """(model id, replica id, input type code) of every connected replica."""

    def cache_counts(self) -> tuple[int, int]:
        """(lookups, hits) of the prediction cache."""

    def stats(self) -> list[dict]:
        """Per model id: predictions, batches, queued, replicas, and summaries (count, min, max,
        mean, std_dev, p50, p95, p99) of recent batch sizes and batch latencies in microseconds."""

    def close(self) -> None:
        """Stops the engine thread; requests still waiting are not completed."""

@final
class Dealer:
    """A ZeroMQ DEALER connection to one frontend's ROUTER (ZMTP 3.1, NULL mechanism), spoken by the
    thread that calls it: no I/O thread, no call per frame. The model container's side of the RPC.

    Like a libzmq DEALER it connects within its calls, retries every 100 ms while the frontend is away
    or after the connection is lost, and answers the frontend's ZMTP PINGs; unlike one, what was
    queued for a connection that is lost is dropped with it. While nobody has called it for 0.1 s
    (a batch runs), a native thread of its own answers the PINGs, without the GIL, so a long batch
    keeps its connection; it never takes a message. Calls from several threads take turns.
    """

    def __new__(cls, endpoint: str) -> Dealer:
        """A connection to `endpoint` (``tcp://host:port``; ValueError otherwise), made at the first `recv`."""

    @property
    def connected(self) -> bool:
        """Whether the handshake with the frontend is done."""

    def send(self, frames: list[bytes]) -> None:
        """Queues one message (a frame per item) and writes what the socket takes now; never blocks."""

    def recv(self, timeout: float, spin: float = 0.0) -> list[bytes] | None:
        """The next message's frames, or None after `timeout` seconds; polls without sleeping for the first
        `spin` seconds. Releases the GIL while it waits. Raises ConnectionError (and drops the connection,
        made again at the next call) when the peer breaks the protocol."""

    def recv_request(
        self, timeout: float, spin: float = 0.0
    ) -> tuple[int, int, bytearray | list[str], list[int] | None] | list[bytes] | None:
        """Like `recv`, with a prediction batch decoded (Clipper RPC v3, checked as
        `clipper.model_runtime.protocol.parse_request` checks it): ``(msg_id, input_type, data, sizes)``, the
        inputs joined in one writable ``bytearray`` `data` and `sizes` their lengths, or, for strings (type 4),
        `data` a list of ``str`` (invalid UTF-8 replaced) and `sizes` None. Any other message (a heartbeat,
        feedback, or one that breaks the protocol) comes as its frames, as `recv` gives them."""

    def send_prediction(self, msg_id: int, outputs: Sequence[object]) -> None:
        """Sends the answer to the batch `msg_id`: each output as the UTF-8 of itself, if a ``str``, or of its
        ``str()``. Raises (and sends nothing) when an output's ``str()`` raises or is not valid Unicode."""

    def close(self) -> None:
        """Drops the connection and what is queued."""

c_api: object
"""A capsule (`clipper.rust_core.c_api`) with the C functions `clipper._core` calls: the HTTP/1.1
request parser and the submission of simple predict bodies (`rust_core/include/clipper_capi.h`)."""

def encode_simple_input(body: bytes, input_type_code: int) -> bytes | None:
    """The element bytes of a predict body that is exactly `{"input": [numbers]}` of a numeric input
    type, else None (the full validator, `clipper._core.encode_input`, takes such bodies)."""

def decode_batch(frames: list[bytes]) -> tuple[int, int, bytearray | list[str], list[int] | None] | None:
    """The prediction batch a frontend message's `frames` hold, decoded as `Dealer.recv_request` hands it over;
    None for any other message, or one that breaks the protocol."""

def encode_prediction(msg_id: int, outputs: Sequence[object]) -> list[bytes]:
    """The frames of the answer to batch `msg_id`, as `Dealer.send_prediction` writes them."""
