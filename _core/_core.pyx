# cython: language_level=3, boundscheck=False, wraparound=False
"""The frontends' compiled request path: the HTTP layer both serve on, the query path, input validation."""

include "engine.pxi"    # the engine's C interface and constants (rust_core)
include "inputs.pxi"    # input validation and encoding
include "http.pxi"      # connections, response writing, limits, pipelining, draining: HttpServer, HttpProtocol
include "routes.pxi"    # Route; the query frontend's route table
include "query.pxi"     # App, PredictSlot, Gather, QueryServer
include "admin.pxi"     # AdminServer: the management frontend's routes, handlers in a thread pool
