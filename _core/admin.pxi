# The management bridge: AdminServer serves a route table built in Python (clipper/frontend/management) on the
# compiled HTTP layer. A blocking route's handler (Redis calls) runs in a thread pool, never on the event loop;
# its answer completes the request's slot on the loop thread (loop.call_soon_threadsafe), so that answers still
# leave in request order. The blocking requests of one connection run one after the other, in the order they
# were read (a pipelined add_app then get_all_applications sees the app), as Clipper's server ran them; those of
# different connections run side by side.

import logging

_admin_log = logging.getLogger("clipper.management")


cdef class AdminServer(HttpServer):
    """An HttpServer whose routes' handlers are `handler(body: bytes) -> (status, body)`, answered as
    application/json (Clipper's management frontend sends that type even for text), or `(status, body,
    content_type)` for another type (the status page's HTML, CSS and JavaScript).

    Blocking routes run in `executor` (a concurrent.futures executor); the others on the loop. A handler
    that raises (it should map its own failures) is answered 500. `attach(loop)` before serving.
    """
    cdef public object executor
    cdef public Py_ssize_t in_flight
    # connection -> its blocking requests read while one of its own runs: [(handler, body, slot), ...]
    cdef dict waiting

    def __init__(self, executor, dict routes, dict texts, max_body_bytes=_config.DEFAULT_MAX_BODY_BYTES,
                 max_header_bytes=_config.DEFAULT_MAX_HEADER_BYTES, token=None):
        HttpServer.__init__(self, routes, texts, max_body_bytes, max_header_bytes, token, method_not_allowed=True)
        self.executor = executor
        self.in_flight = 0
        self.waiting = {}

    @property
    def unanswered(self):
        """Blocking requests read and not answered yet (running or waiting for their connection's turn)."""
        return self.in_flight

    cdef int handle(self, HttpProtocol protocol, Route route, clipper_request* request, bint keep_alive) except -1:
        cdef bytes body = span_bytes(request.body)
        if not route.blocking:
            result = route.handler(body)
            protocol.reply_bytes(result[0], result[1], keep_alive, result[2] if len(result) > 2 else JSON_TYPE)
            return 0
        if self.call_soon_threadsafe is None:
            raise RuntimeError("AdminServer.attach(loop) was not called")
        cdef Slot slot = protocol.pending_slot(keep_alive)
        self.in_flight += 1
        queue = self.waiting.get(protocol)
        if queue is None:
            self.waiting[protocol] = []
            self.submit(route.handler, body, slot)
        else:
            queue.append((route.handler, body, slot))
        return 0

    cdef void submit(self, handler, bytes body, Slot slot):
        try:
            self.executor.submit(self._run, handler, body, slot)
        except RuntimeError:  # the pool is shut down: the server is stopping
            error, cause = self.wording("draining")
            self._complete(slot, (503, error_body(error, cause)))

    cdef void cancel(self, HttpProtocol protocol):
        """A connection closed: its requests that have not started are dropped (the running one finishes)."""
        queue = self.waiting.get(protocol)
        if queue:
            self.in_flight -= len(queue)
            queue.clear()

    def _run(self, handler, bytes body, Slot slot):
        """In a worker thread: runs one handler, then hands its answer to the event loop."""
        try:
            result = handler(body)
        except BaseException as e:
            result = e
        try:
            self.call_soon_threadsafe(self._complete, slot, result)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _complete(self, Slot slot, result):
        """On the event loop: the answer of a blocking route fills its slot; the connection's next request runs."""
        self.in_flight -= 1
        if isinstance(result, BaseException):
            _admin_log.error("admin request failed", exc_info=result)
            error, cause = self.wording("internal", "", "", "", f"{type(result).__name__}: {result}")
            self.answer(slot, 500, error_body(error, cause))
        else:
            self.answer(slot, result[0], result[1], result[2] if len(result) > 2 else JSON_TYPE)
        queue = self.waiting.get(slot.protocol)
        if queue:
            handler, body, next_slot = queue.pop(0)
            self.submit(handler, body, next_slot)
        else:
            self.waiting.pop(slot.protocol, None)

    cdef void answer(self, Slot slot, int status, bytes body, bytes content_type=JSON_TYPE):
        slot.response = http_response(status, body, slot.keep_alive, content_type, request_id_header(slot.request_id))
        slot.protocol.flush()
