"""The management frontend: Clipper's admin REST API on :1338, writing `clipper.state`.

Same routes, request JSON, success texts and error texts as Clipper's management frontend
(`docs/compatibility.md`), so the published `clipper_admin` client works unchanged. Where Clipper wrote no
response at all, this one answers: unknown route 404 and wrong method 405 (JSON `{"error",
"cause"}`, with `Allow`), unknown input type 400 (text), body over the limit 413, Redis unreachable 503
(JSON; the server keeps running and the next request reconnects), unexpected failure 500.

    python -m clipper.frontend.management --redis-host 127.0.0.1 --redis-port 6379 --port 1338

It serves on the compiled HTTP layer the query frontend serves on (`clipper._core`: HTTP/1.1, keep-alive,
pipelining with answers in request order, the same limits). Handlers run in a small thread pool: Redis calls
never block the event loop.

* `errors`: Clipper's error texts and JSON parsing (rapidjson's messages), the layer's errors in this
  frontend's words;
* `handlers`: one function per route over `clipper.state.StateStore`;
* `routes`: the route table (`ROUTES`);
* `server`: `ManagementFrontend` (the server and its thread pool) and the command line (`main`).
"""

from .errors import JsonError, Response, parse_json
from .routes import ROUTES, Route
from .server import DEFAULT_PORT, ManagementFrontend, main

__all__ = ["DEFAULT_PORT", "ROUTES", "JsonError", "ManagementFrontend", "Response", "Route", "main", "parse_json"]
