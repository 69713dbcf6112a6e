# Route tables: exact paths -> Route (method, handler), looked up by HttpServer.route (http.pxi). The query
# frontend's table is here; the management frontend's is built in Python (clipper/frontend/management/routes.py)
# and handed to AdminServer. `/<app>/predict` and `/<app>/update` are a pattern, matched in C before the table.


cdef class Route:
    """One entry of a route table: the method it answers, its handler, whether it needs the server's bearer
    token (`auth`) and whether its handler blocks (`blocking`: AdminServer runs it in its thread pool).

    How a handler is called is the server's: QueryServer calls `handler(server, protocol, accept, keep_alive)`
    (compiled handlers below), AdminServer calls `handler(body) -> (status, body)`.
    """
    cdef readonly bytes method
    cdef readonly object handler
    cdef readonly bint auth
    cdef readonly bint blocking

    def __init__(self, method, handler, *, bint auth=False, bint blocking=False):
        self.method = method.encode("ascii") if isinstance(method, str) else bytes(method)
        self.handler = handler
        self.auth = auth
        self.blocking = blocking

    def __repr__(self):
        return f"Route({self.method.decode()!r}, {self.handler!r}, auth={self.auth}, blocking={self.blocking})"


# ---------------------------------------------------------------------- the query frontend's routes

cdef char SLASH = b"/"


cdef enum Action:
    ACTION_NONE = 0
    ACTION_PREDICT = 1
    ACTION_UPDATE = 2


cdef int app_action(const char* path, size_t n, size_t* app_start, size_t* app_len) noexcept:
    """`/<app>/predict` or `/<app>/update` (slashes around the path ignored): the action, and where the
    app's name is in `path`; ACTION_NONE for any other path."""
    cdef size_t start = 0, end = n
    while start < end and path[start] == b"/":
        start += 1
    while end > start and path[end - 1] == b"/":
        end -= 1
    cdef const char* slash = <const char*>memchr(path + start, SLASH, end - start)
    if slash == NULL or memchr(slash + 1, SLASH, end - (slash + 1 - path)) != NULL:
        return ACTION_NONE
    app_start[0] = start
    app_len[0] = <size_t>(slash - path) - start
    cdef size_t action_len = end - (slash + 1 - path)
    if action_len == 7 and memcmp(slash + 1, b"predict", 7) == 0:
        return ACTION_PREDICT
    if action_len == 6 and memcmp(slash + 1, b"update", 6) == 0:
        return ACTION_UPDATE
    return ACTION_NONE


from clipper.frontend.openapi import document_bytes as _openapi_document

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


cdef bint wants_prometheus(bytes accept):
    """Content negotiation for /metrics: Prometheus asks for text/plain or OpenMetrics; others get JSON."""
    accept = accept.lower()
    return (b"openmetrics" in accept or b"text/plain" in accept) and b"application/json" not in accept


def _metrics(QueryServer server, HttpProtocol protocol, accept, bint keep_alive):
    """GET /metrics: Clipper's JSON, or Prometheus text when the client asks for it."""
    if accept is not None and wants_prometheus(accept):
        protocol.reply_bytes(200, server.prometheus_handler(), keep_alive, PROMETHEUS_TYPE)
    else:
        protocol.reply_bytes(200, server.metrics_handler(), keep_alive)


def _healthz(QueryServer server, HttpProtocol protocol, accept, bint keep_alive):
    """GET /healthz: the process answers."""
    protocol.reply_bytes(200, b'{"status":"alive"}', keep_alive)


def _readyz(QueryServer server, HttpProtocol protocol, accept, bint keep_alive):
    """GET /readyz: the configuration is loaded (503 until then)."""
    if server.ready:
        protocol.reply_bytes(200, b'{"status":"ready"}', keep_alive)
    else:
        protocol.reply_error(503, "Not ready", "the configuration has not been loaded yet", keep_alive)


def _openapi(QueryServer server, HttpProtocol protocol, accept, bint keep_alive):
    """GET /openapi.json: the query API's OpenAPI description, as shipped (clipper/frontend/openapi/query.json)."""
    protocol.reply_bytes(200, _openapi_document("query"), keep_alive)


#: The query frontend's exact paths (besides `/<app>/predict` and `/<app>/update`).
QUERY_ROUTES = {
    b"/metrics": Route("GET", _metrics),
    b"/healthz": Route("GET", _healthz),
    b"/readyz": Route("GET", _readyz),
    b"/openapi.json": Route("GET", _openapi),
}

#: The query frontend's wording of the HTTP layer's errors (HttpServer.texts): the default words.
QUERY_TEXTS = dict(DEFAULT_TEXTS, draining=("Service unavailable", "the query frontend is shutting down"))
