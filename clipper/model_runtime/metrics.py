"""A model container's Prometheus endpoint: ``GET /metrics`` on ``$CLIPPER_METRICS_HOST:$CLIPPER_METRICS_PORT``.

`MC_METRICS` is the list every container of this project serves (Python, C++, Java), kept here in one
place; Clipper's own names (``monitoring/metrics_config.yaml``, ``containers/python/rpc.py``) are kept with
their types, units (ms) and buckets, and the ones Clipper lacked follow the same pattern. Samples carry no
labels: Prometheus adds the target's (model, version, replica). User metrics (`clipper.metrics`) follow.

The session thread counts once per batch, inside the lock that already serializes batches, so the hot
path takes no new lock; the HTTP server runs on daemon threads and only reads.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import metrics as user_metrics
from ..metrics import Histogram, family, fmt

log = logging.getLogger("clipper.model_runtime")

#: Environment of every model container: serve metrics when the port is set and not empty.
ENV_PORT, ENV_HOST = "CLIPPER_METRICS_PORT", "CLIPPER_METRICS_HOST"
DEFAULT_HOST = "127.0.0.1"
#: Clipper's CLIPPER_INTERNAL_METRIC_PORT (its containers' metrics port, e.g. inside Docker).
CLIPPER_INTERNAL_METRIC_PORT = 1390

#: Prometheus text content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CLIPPER_LATENCY_BUCKETS = (5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500)
_CLIPPER_RPC_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: (name, Prometheus type, help, histogram buckets or ()) of the metrics every model container serves.
MC_METRICS: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    ("clipper_mc_pred_total", "counter",
     "Prediction requests (batches) answered, failed ones included; counted per batch, as Clipper's rpc.py did.", ()),
    ("clipper_mc_pred_inputs_total", "counter", "Inputs answered (predictions), failed batches included.", ()),
    ("clipper_mc_pred_errors_total", "counter",
     "Prediction requests (batches) answered with errors: the model raised, returned the wrong number of "
     "outputs, or the input type did not match.", ()),
    ("clipper_mc_pred_batch_size", "histogram", "Inputs per prediction request.", _BATCH_BUCKETS),
    ("clipper_mc_recv_time_ms", "histogram",
     "The time in ms takes to receive RPC call: from its message read to the request parsed.", _CLIPPER_RPC_BUCKETS),
    ("clipper_mc_queue_wait_ms", "histogram",
     "The time in ms a received request waited in the container before its batch started (behind another "
     "batch).", _QUEUE_BUCKETS),
    ("clipper_mc_parse_time_ms", "histogram",
     "The time in ms takes to parse RPC call: decoding the inputs for the model.", _CLIPPER_RPC_BUCKETS),
    ("clipper_mc_handle_time_ms", "histogram",
     "The time in ms takes to make prediction: the model call (successful batches).", _CLIPPER_LATENCY_BUCKETS),
    ("clipper_mc_end_to_end_latency_ms", "histogram",
     "The time in ms takes from receive RPC call to send off prediction.", _CLIPPER_LATENCY_BUCKETS),
)

#: The names alone, for discovery, dashboards and tests.
MC_METRIC_NAMES: tuple[str, ...] = tuple(m[0] for m in MC_METRICS)


class MetricsServerError(OSError):
    """The metrics endpoint cannot be served (e.g. the port is taken)."""


class ContainerMetrics:
    """The `MC_METRICS` of one container. `batch` and `failed` are called with the batch lock held."""

    def __init__(self) -> None:
        self.batches = self.inputs = self.errors = 0
        self.batch_size, self.recv, self.queue, self.parse, self.handle, self.end_to_end = (
            Histogram(m[3]) for m in MC_METRICS[3:])

    def batch(self, n: int, first: float, received: float, started: float, parsed: float, done: float) -> None:
        """A batch of `n` answered: perf_counter() times of its message read, parsed message, batch start,
        decoded inputs and outputs ready."""
        self.batches += 1
        self.inputs += n
        self.batch_size.observe(n)
        self.recv.observe((received - first) * 1e3)
        self.queue.observe((started - received) * 1e3)
        self.parse.observe((parsed - started) * 1e3)
        self.handle.observe((done - parsed) * 1e3)
        self.end_to_end.observe((done - first) * 1e3)

    def failed(self, n: int, first: float, received: float, started: float, done: float) -> None:
        """A batch of `n` answered with errors."""
        self.batches += 1
        self.inputs += n
        self.errors += 1
        self.batch_size.observe(n)
        self.recv.observe((received - first) * 1e3)
        self.queue.observe((started - received) * 1e3)
        self.end_to_end.observe((done - first) * 1e3)

    def render(self) -> bytes:
        """`MC_METRICS`, then the user metrics, in Prometheus text format 0.0.4."""
        values = (self.batches, self.inputs, self.errors)
        hists = (self.batch_size, self.recv, self.queue, self.parse, self.handle, self.end_to_end)
        out: list[str] = []
        for (name, kind, help_text, _), value in zip(MC_METRICS[:3], values, strict=True):
            out += family(name, kind, help_text, [f"{name} {fmt(value)}"])
        for (name, kind, help_text, _), hist in zip(MC_METRICS[3:], hists, strict=True):
            out += family(name, kind, help_text, hist.lines(name))
        out += user_metrics.REGISTRY.lines()
        return ("\n".join(out) + "\n").encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"not found: GET /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            body = self.server.metrics.render()
        except Exception:  # a broken render must not end the endpoint
            log.exception("rendering /metrics failed")
            self._send(500, b"rendering the metrics failed\n", "text/plain; charset=utf-8")
            return
        self._send(200, body, CONTENT_TYPE)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: ContainerMetrics) -> None:
        self.metrics = metrics
        super().__init__(address, _Handler)


class MetricsServer:
    """``GET /metrics`` on a daemon thread until `close`."""

    def __init__(self, metrics: ContainerMetrics, host: str, port: int) -> None:
        try:
            self._server = _Server((host, port), metrics)
        except OSError as e:
            raise MetricsServerError(e.errno, f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                         name="metrics server", daemon=True)
        self._thread.start()
        log.info("serving metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def metrics_port_from_env(value: str | None) -> int | None:
    """``CLIPPER_METRICS_PORT``: None when unset or empty; else a port (0: any free one)."""
    if value is None or not value.strip():
        return None
    port = int(value)
    if not 0 <= port < 65536:
        raise ValueError(f"port out of range: {port}")
    return port
