"""Floor server: the fastest answer our stack could give to ``POST /<app>/predict``.

A bare uvloop + httptools + orjson HTTP/1.1 server. It parses the JSON body (so it
pays the same parse as the real query frontend) and returns a constant prediction.
``GET /metrics`` answers Clipper's metrics shape, so the harness can treat the floor
as a stand-in for the pipeline.

    python -m benchmarks.floor_server --port 8080
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import ClassVar

import httptools
import orjson
import uvloop

from clipper import cmdline

PREDICTION = b'{"query_id":0,"output":1.0,"default":false}'


def _response(status: bytes, body: bytes, keep_alive: bool) -> bytes:
    """Build a complete HTTP/1.1 response."""
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    )
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


PREDICTION_RESPONSE = _response(b"200 OK", PREDICTION, True)


class FloorProtocol(asyncio.Protocol):
    """One connection. Requests are answered in arrival order, so pipelining is safe."""

    counts: ClassVar[
        dict[str, int]
    ] = {}  # predictions per app, shared by all connections

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(b"400 Bad Request", b'{"error":"bad request"}', keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        parts = self.url.split(b"?", 1)[0].strip(b"/").split(b"/")
        if method == b"POST" and len(parts) == 2 and parts[1] == b"predict":
            try:
                orjson.loads(b"".join(self.body))
            except orjson.JSONDecodeError:
                self._send(b"400 Bad Request", b'{"error":"invalid json"}', keep_alive)
                return
            app = parts[0].decode(errors="replace")
            self.counts[app] = self.counts.get(app, 0) + 1
            if keep_alive:
                self.transport.write(PREDICTION_RESPONSE)  # type: ignore[union-attr]
            else:
                self._send(b"200 OK", PREDICTION, keep_alive)
        elif method == b"GET" and parts == [b"metrics"]:
            self._send(b"200 OK", self._metrics(), keep_alive)
        else:
            self._send(b"404 Not Found", b'{"error":"not found"}', keep_alive)

    def _metrics(self) -> bytes:
        """Clipper's metrics JSON shape (leaves are strings); no defaults here."""
        return orjson.dumps(
            {
                "counters": [
                    {f"app:{app}:num_predictions": {"count": str(n)}}
                    for app, n in self.counts.items()
                ],
                "ratio_counters": [
                    {f"app:{app}:default_prediction_ratio": {"ratio": "0.0"}}
                    for app in self.counts
                ],
                "meters": [],
                "histograms": [],
            }
        )

    def _send(self, status: bytes, body: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, body, keep_alive))
        if not keep_alive:
            self.closing = True
            self.transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(FloorProtocol, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(
        f"floor server listening on http://{host}:{bound}", file=sys.stderr, flush=True
    )
    async with server:
        await stop.wait()


def build_parser() -> cmdline.ArgumentParser:
    """``python -m benchmarks.floor_server``'s parser."""
    parser = cmdline.ArgumentParser(prog="python -m benchmarks.floor_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=cmdline.port, default=8080, help="port to listen on")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
