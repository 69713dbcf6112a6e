# The management bridge: AdminServer serves a route table built in Python (clipper/frontend/management) on the
# compiled HTTP layer. A blocking route's handler (Redis calls) runs in a thread pool, never on the event loop;
# its answer completes the request's slot on the loop thread (loop.call_soon_threadsafe), so that answers still
# leave in request order.

import logging

_admin_log = logging.getLogger("clipper.management")


cdef class AdminServer(HttpServer):
    """An HttpServer whose routes' handlers are `handler(body: bytes) -> (status, body)`, answered as
    application/json (Clipper's management frontend sends that type even for text).

    Blocking routes run in `executor` (a concurrent.futures executor); the others on the loop. A handler
    that raises (it should map its own failures) is answered 500. `attach(loop)` before serving.
    """
    cdef public object executor
    cdef public Py_ssize_t in_flight

    def __init__(self, executor, dict routes, dict texts, max_body_bytes=_config.DEFAULT_MAX_BODY_BYTES,
                 max_header_bytes=_config.DEFAULT_MAX_HEADER_BYTES, token=None):
        HttpServer.__init__(self, routes, texts, max_body_bytes, max_header_bytes, token, method_not_allowed=True)
        self.executor = executor
        self.in_flight = 0

    cdef int handle(self, HttpProtocol protocol, Route route, clipper_request* request, bint keep_alive) except -1:
        cdef bytes body = span_bytes(request.body)
        if not route.blocking:
            status, answer = route.handler(body)
            protocol.reply_bytes(status, answer, keep_alive)
            return 0
        if self.call_soon_threadsafe is None:
            raise RuntimeError("AdminServer.attach(loop) was not called")
        cdef Slot slot = protocol.pending_slot(keep_alive)
        try:
            self.executor.submit(self._run, route.handler, body, slot)
        except RuntimeError:  # the pool is shut down: the server is stopping
            error, cause = self.wording("draining")
            self.answer(slot, 503, error_body(error, cause))
            return 0
        self.in_flight += 1
        return 0

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
        """On the event loop: the answer of a blocking route fills its slot."""
        self.in_flight -= 1
        if isinstance(result, BaseException):
            _admin_log.error("admin request failed", exc_info=result)
            error, cause = self.wording("internal", "", "", "", f"{type(result).__name__}: {result}")
            self.answer(slot, 500, error_body(error, cause))
            return
        status, answer = result
        self.answer(slot, status, answer)

    cdef void answer(self, Slot slot, int status, bytes body):
        slot.response = http_response(status, body, slot.keep_alive, JSON_TYPE, request_id_header(slot.request_id))
        slot.protocol.flush()
