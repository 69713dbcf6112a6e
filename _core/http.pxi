# The HTTP/1.1 layer both frontends serve on: one asyncio protocol per connection (uvloop), requests framed by
# the Rust parser (rust_core/src/http.rs, through clipper_capi.h; no Python callback per header), one response
# writer and reason-phrase table, one bearer-token check, the limits (head: 431, body: 413, `Expect:
# 100-continue`), `X-Request-Id` echo, and draining on shutdown.
#
# Requests are answered in order (pipelining-safe): each request takes a slot in its connection's queue, and a
# slot is written once it and every slot before it are complete. A connection stops reading while more than
# MAX_PIPELINE answers are due (back-pressure) and reads again once half of them are written.
#
# What a request gets is the server's: `HttpServer.route` looks the path up in the server's route table
# (routes.pxi) and `handle` runs the route; QueryServer (query.pxi) and AdminServer (admin.pxi) override them.

cimport cython

import asyncio
import hmac

import orjson

from clipper.frontend import config as _config

STATUS_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
    413: b"Payload Too Large", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    503: b"Service Unavailable",
}
cdef dict STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in STATUS_REASONS.items()}
#: Answers due on one connection before it stops reading.
cdef Py_ssize_t MAX_PIPELINE = 128
#: How long a connection answered early (malformed request, body over the limit) may go on sending, its
#: bytes read and dropped, before it is closed.
cdef double LINGER_S = 5.0
cdef bytes JSON_TYPE = b"application/json"
cdef bytes CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef char QUESTION_MARK = b"?"

#: The layer's own errors in its default words (HttpServer.texts; each server may word them its own way).
DEFAULT_TEXTS = {
    "bad_request": ("Bad request", "{cause}"),
    "head_too_large": ("Request header fields too large", "{cause}"),
    "too_large": ("Payload too large", "request body exceeds the limit of {limit} bytes"),
    "not_found": ("Not found", "no route for {method} {path}"),
    "wrong_method": ("Method not allowed", "use {allow} for {path}"),
    "unauthorized": ("Unauthorized", "a valid 'Authorization: Bearer <token>' header is required"),
    "draining": ("Service unavailable", "the server is shutting down"),
    "internal": ("Internal error", "{cause}"),
}


cdef bytes concat(tuple parts):
    """The parts joined, in one allocation."""
    cdef Py_ssize_t total = 0, n
    cdef bytes part
    for part in parts:
        total += len(part)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* at = PyBytes_AS_STRING(out)
    for part in parts:
        n = len(part)
        memcpy(at, PyBytes_AS_STRING(part), n)
        at += n
    return out


cdef bytes decimal(long long value):
    """The decimal digits of a non-negative integer (lengths, query ids)."""
    cdef char text[24]
    cdef int at = 24
    while True:
        at -= 1
        text[at] = <char>(48 + value % 10)
        value //= 10
        if value == 0:
            return PyBytes_FromStringAndSize(text + at, 24 - at)


cdef bytes http_response(int status, bytes body, bint keep_alive, bytes content_type=JSON_TYPE,
                         bytes extra_headers=b""):
    """One complete response: status line, Content-Type, Content-Length, `extra_headers` (each ending in
    CRLF), `Connection: close` unless kept alive, then the body."""
    status_line = STATUS_LINES.get(status)
    if status_line is None:
        status_line = b"HTTP/1.1 %d Unknown\r\n" % status
    return concat((status_line, b"Content-Type: ", content_type, b"\r\nContent-Length: ", decimal(len(body)),
                   b"\r\n", extra_headers, b"\r\n" if keep_alive else b"Connection: close\r\n\r\n", body))


cpdef bytes error_body(str error, str cause):
    """The JSON body of an error response: {"error": ..., "cause": ...}."""
    return orjson.dumps({"error": error, "cause": cause})


cdef inline bytes span_bytes(clipper_span span):
    return PyBytes_FromStringAndSize(span.ptr, span.len)


cdef inline object span_or_none(clipper_span span):
    return None if span.ptr == NULL else PyBytes_FromStringAndSize(span.ptr, span.len)


cdef inline bint span_equals(clipper_span span, const char* text) noexcept:
    cdef size_t n = strlen(text)
    return span.len == n and memcmp(span.ptr, text, n) == 0


cdef bint token_matches(bytes authorization, bytes token):
    """`Authorization: Bearer <token>`, compared in constant time."""
    if authorization is None or not authorization[:7].lower() == b"bearer ":
        return False
    return hmac.compare_digest(authorization[7:].strip(), token)


cdef str text(bytes value):
    return None if value is None else value.decode("latin-1")


cdef bytes request_id_header(bytes request_id):
    """The response header echoing a request's `X-Request-Id` (none when the client sent none)."""
    return b"" if request_id is None else b"X-Request-Id: " + request_id + b"\r\n"


@cython.internal
cdef class Slot:
    """One request's place in its connection's queue of answers; written once `response` is set and every
    slot before it is written."""
    cdef HttpProtocol protocol
    cdef bytes response
    cdef bint keep_alive
    cdef bytes request_id


cdef class HttpServer:
    """What the connections of one listening socket share: limits, the bearer token, the route table, the
    wording of the layer's own errors, the open connections and the event loop they run on.

    `texts` maps each error the layer answers by itself to `(error, cause)`, the cause a `str.format`
    template over `method`, `path`, `allow`, `limit` and `cause` (the parser's message): "bad_request" (400),
    "head_too_large" (431), "too_large" (413), "not_found" (404), "wrong_method" (405, with `Allow`),
    "unauthorized" (401, with `WWW-Authenticate: Bearer`), "draining" (503 while shutting down) and "internal"
    (500). With `method_not_allowed` false, a known path asked with another method is answered as not found.

    `answers_after_eof`: when a client ends its side (EOF) with answers still due, they are written and the
    connection closes after them (true: a client that half-closes gets its answers), or the client is taken as
    gone and the connection closes at once, withdrawing what it waited for (`cancel`). TCP shows a half-close
    and a full close alike: a server whose pending work can be withdrawn chooses the second.
    """
    cdef public bint draining
    #: Called as `request_logger(event, **fields)` for every error answer; None logs nothing.
    cdef public object request_logger
    cdef set connections
    cdef public Py_ssize_t max_body_bytes
    cdef public Py_ssize_t max_header_bytes
    cdef public bytes token
    cdef public dict routes
    cdef public dict texts
    cdef public bint method_not_allowed
    cdef public bint answers_after_eof
    cdef object call_soon
    cdef object call_soon_threadsafe
    cdef object call_later

    def __init__(self, dict routes=None, dict texts=None, max_body_bytes=_config.DEFAULT_MAX_BODY_BYTES,
                 max_header_bytes=_config.DEFAULT_MAX_HEADER_BYTES, token=None, bint method_not_allowed=True,
                 bint answers_after_eof=True):
        self.routes = routes if routes is not None else {}
        self.texts = texts if texts is not None else DEFAULT_TEXTS
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.token = token.encode() if isinstance(token, str) else token
        self.method_not_allowed = method_not_allowed
        self.answers_after_eof = answers_after_eof
        self.draining = False
        self.request_logger = None
        self.connections = set()

    def attach(self, loop):
        """Binds to the event loop the connections run on."""
        self.call_soon = loop.call_soon
        self.call_soon_threadsafe = loop.call_soon_threadsafe
        self.call_later = loop.call_later

    def detach(self, loop):
        pass

    def start_draining(self):
        """Shutdown, step one: idle connections close now; the others answer what they have read, then
        close; a request read from now on gets 503 with `Connection: close`."""
        self.draining = True
        for connection in list(self.connections):
            (<HttpProtocol>connection).close_after_flush()

    def close_connections(self):
        """Shutdown, last step: closes every connection (after the responses already written to it)."""
        for connection in list(self.connections):
            (<HttpProtocol>connection).closed = True
            (<HttpProtocol>connection).transport.close()

    @property
    def unanswered(self):
        """Requests read and not answered yet, which a drain waits for (none for a server that answers at once)."""
        return 0

    async def drain(self, double seconds):
        """Shutdown, once the listening socket is closed and `start_draining` was called: waits at most `seconds`
        for the answers still owed, then closes every connection. Returns how many were left unanswered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.unanswered and loop.time() < deadline:
            await asyncio.sleep(0.01)
        left = self.unanswered
        self.close_connections()
        return left

    @property
    def connection_count(self):
        return len(self.connections)

    cdef tuple wording(self, str kind, str method="", str path="", str allow="", str cause=""):
        """(error, cause) of one of the layer's own errors, in this server's words."""
        error, template = self.texts[kind]
        return error, template.format(method=method, path=path, allow=allow, cause=cause,
                                      limit=self.max_body_bytes)

    cdef bint authorized(self, clipper_request* request):
        """No token configured, or the request carries it."""
        return self.token is None or token_matches(span_or_none(request.authorization), self.token)

    cdef int route(self, HttpProtocol protocol, clipper_request* request, size_t path_len,
                   bint keep_alive) except -1:
        """Answers a request by the route table: 404 for an unknown path, 405 (or 404) for another method, 401
        without the token where the route needs it; else the route's `handle`."""
        path = protocol.url[:path_len]
        found = self.routes.get(path)
        if found is None:
            self.reply_not_found(protocol, request, path, keep_alive)
            return 0
        cdef Route route = <Route>found
        if not span_equals(request.method, route.method):
            if self.method_not_allowed:
                self.reply_wrong_method(protocol, request, path, route.method, keep_alive)
            else:
                self.reply_not_found(protocol, request, path, keep_alive)
            return 0
        if route.auth and not self.authorized(request):
            self.reply_unauthorized(protocol, keep_alive)
            return 0
        return self.handle(protocol, route, request, keep_alive)

    cdef int handle(self, HttpProtocol protocol, Route route, clipper_request* request, bint keep_alive) except -1:
        """Runs a route (each server calls its handlers its own way)."""
        raise NotImplementedError("HttpServer.handle")

    cdef void cancel(self, HttpProtocol protocol):
        """A connection closed with answers still due: what it waited for may be withdrawn."""
        pass

    cdef void reply_not_found(self, HttpProtocol protocol, clipper_request* request, bytes path, bint keep_alive):
        error, cause = self.wording("not_found", span_bytes(request.method).decode("latin-1"), path.decode("latin-1"))
        protocol.reply_error(404, error, cause, keep_alive)

    cdef void reply_wrong_method(self, HttpProtocol protocol, clipper_request* request, bytes path, bytes allow,
                                 bint keep_alive):
        error, cause = self.wording("wrong_method", span_bytes(request.method).decode("latin-1"),
                                    path.decode("latin-1"), allow.decode("latin-1"))
        protocol.reply_error(405, error, cause, keep_alive, b"Allow: " + allow + b"\r\n")

    cdef void reply_unauthorized(self, HttpProtocol protocol, bint keep_alive):
        error, cause = self.wording("unauthorized")
        protocol.reply_error(401, error, cause, keep_alive, b"WWW-Authenticate: Bearer\r\n")


cdef class HttpProtocol:
    """asyncio protocol for one client connection: HTTP/1.1 with keep-alive and in-order (pipelined)
    answers, for any HttpServer.

    Bytes go to the Rust parser, which frames requests; no Python callback runs per header.
    """
    cdef HttpServer server
    cdef object transport
    cdef clipper_http_parser* parser
    cdef object write
    cdef list slots  # answers in request order; at most MAX_PIPELINE + 1 while reading
    cdef bytes url
    cdef bint closed  # nothing more is written: the transport is closed, closing or lingering
    cdef bint reading_paused
    cdef bint broken  # answered early (the parser failed, a body over the limit): that answer is the last
    cdef bint eof  # the client shut its write side: close once the answers due are written
    cdef bint last_read  # a request without keep-alive was read: whatever follows it is not
    cdef bytes request_id
    cdef public long long requests_read

    def __init__(self, HttpServer server):
        self.server = server
        self.parser = RUST.parser_new(server.max_header_bytes, server.max_body_bytes)
        self.slots = []
        self.closed = False

    def __dealloc__(self):
        if self.parser != NULL:
            RUST.parser_free(self.parser)

    # asyncio callbacks

    def connection_made(self, transport):
        self.transport = transport
        self.write = transport.write
        self.server.connections.add(self)
        if self.server.draining:
            self.close_after_flush()

    def connection_lost(self, exc):
        self.server.connections.discard(self)
        self.closed = True
        if self.slots:
            self.server.cancel(self)
            self.slots.clear()

    def data_received(self, bytes data):
        if self.broken or self.last_read:
            return  # the answer due is the connection's last; what the client still sends is dropped
        RUST.feed(self.parser, PyBytes_AS_STRING(data), len(data))
        cdef clipper_request request
        cdef uint16_t status = 400
        cdef int event
        while not self.closed and not self.broken and not self.last_read:
            event = RUST.next(self.parser, &request, &status)
            if event == CLIPPER_HTTP_NEED_MORE:
                return
            if event == CLIPPER_HTTP_REQUEST:
                self.requests_read += 1
                self.last_read = not request.keep_alive
                self.on_request(&request)
            elif event == CLIPPER_HTTP_CONTINUE:
                # Clients that sent "Expect: 100-continue" wait (curl: 1 s) for this before the body.
                # Only when no earlier response is pending, so that responses stay in request order.
                if not self.slots:
                    self.write(CONTINUE_RESPONSE)
            else:
                self.fail(span_bytes(request.body).decode("utf-8", "replace"), status)
                return

    def eof_received(self):
        """The client will send nothing more: the answers it is due are still written (the write side stays
        open), then the connection closes; unless the server takes such a client as gone (answers_after_eof)."""
        self.eof = True
        if not self.closed and self.slots and self.server.answers_after_eof:
            return True
        return None  # the transport closes (connection_lost withdraws what is still due)

    # requests

    cdef int on_request(self, clipper_request* request) except -1:
        cdef bint keep_alive = request.keep_alive
        cdef clipper_span target = request.target
        cdef HttpServer server = self.server
        self.url = span_bytes(target)
        self.request_id = None
        if request.request_id.ptr != NULL and request.request_id.len <= 200:
            request_id = span_bytes(request.request_id)
            if request_id.isascii():
                self.request_id = request_id
        if server.draining:
            error, cause = server.wording("draining")
            self.reply_error(503, error, cause, False)
            return 0
        if request.too_large:  # the parser read and dropped the body
            self.broken = True
            error, cause = server.wording("too_large")
            self.reply_error(413, error, cause, False)
            return 0
        cdef const char* query = <const char*>memchr(target.ptr, QUESTION_MARK, target.len)
        cdef size_t path_len = <size_t>(query - target.ptr) if query != NULL else target.len
        return server.route(self, request, path_len, keep_alive)

    cdef void fail(self, str cause, int status):
        """The bytes are not an acceptable request: answer `status`, then close."""
        self.broken = True
        error, cause = self.server.wording("head_too_large" if status == 431 else "bad_request", "", "", "", cause)
        self.reply_error(status, error, cause, False)

    # answers

    cdef void push(self, Slot slot):
        """Queues a request's slot (answered or not), in request order; stops reading while too many are due."""
        self.slots.append(slot)
        if len(self.slots) > MAX_PIPELINE and not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()
        self.flush()

    cdef Slot pending_slot(self, bint keep_alive):
        """A queued slot for an answer that comes later (set `response`, then call `flush`)."""
        cdef Slot slot = Slot.__new__(Slot)
        slot.protocol = self
        slot.request_id = self.request_id
        slot.keep_alive = keep_alive
        self.push(slot)
        return slot

    cdef void reply_error(self, int status, str error, str cause, bint keep_alive, bytes extra_headers=b""):
        logger = self.server.request_logger
        if logger is not None:
            logger("error answer", status=status, path=(self.url or b"").decode("latin-1"),
                   request_id=text(self.request_id), error=error, cause=cause)
        self.reply_bytes(status, error_body(error, cause), keep_alive, JSON_TYPE, extra_headers)

    cdef void reply_bytes(self, int status, bytes body, bint keep_alive, bytes content_type=JSON_TYPE,
                          bytes extra_headers=b""):
        cdef Slot slot = Slot.__new__(Slot)
        slot.response = http_response(status, body, keep_alive, content_type,
                                      extra_headers + request_id_header(self.request_id))
        slot.keep_alive = keep_alive
        self.push(slot)

    cdef void flush(self):
        """Writes every complete response at the head of the queue, in request order."""
        cdef Slot slot
        if self.closed:
            return
        while self.slots:
            slot = <Slot>self.slots[0]
            if slot.response is None:
                break
            del self.slots[0]
            self.write(slot.response)
            if not slot.keep_alive:
                self.slots.clear()
                self.finish()
                return
        if not self.slots and (self.server.draining or self.eof):
            self.finish()
            return
        if self.reading_paused and len(self.slots) <= MAX_PIPELINE // 2:
            self.reading_paused = False
            self.transport.resume_reading()

    cdef void finish(self):
        """Ends the connection after its last answer. After an early answer the client may still be sending:
        then the write side is shut (FIN) and what arrives is read and dropped until the client closes or
        LINGER_S pass, so that the answer is not lost to a reset."""
        self.closed = True
        if self.broken and not self.eof and self.server.call_later is not None and self.transport.can_write_eof():
            self.transport.write_eof()
            if self.reading_paused:
                self.reading_paused = False
                self.transport.resume_reading()
            self.server.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    cdef void close_after_flush(self):
        if not self.closed and not self.slots:
            self.closed = True
            self.transport.close()
