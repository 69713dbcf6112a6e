# The query frontend's HTTP/1.1 protocol: one instance per connection, on uvloop, with the HTTP parser
# compiled in rust_core.
#
# Requests are answered in order (pipelining-safe): each request takes a slot in the
# connection's queue, and a slot is written once it and every slot before it are complete.

from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.ref cimport PyObject, Py_DECREF
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, strlen
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import hmac

import orjson

from clipper import rust_core

cdef extern from "clipper_capi.h":
    ctypedef struct clipper_span:
        const char* ptr
        size_t len
    ctypedef struct clipper_request:
        clipper_span method, target, authorization, accept, request_id, body
        uint8_t keep_alive, too_large
    ctypedef struct clipper_http_parser:
        pass
    ctypedef struct clipper_capi:
        size_t api_size
        size_t request_size
        clipper_http_parser* (*parser_new)(size_t, size_t) noexcept nogil
        void (*parser_free)(clipper_http_parser*) noexcept nogil
        void (*feed)(clipper_http_parser*, const char*, size_t) noexcept nogil
        int (*next)(clipper_http_parser*, clipper_request*, uint16_t*) noexcept nogil
        int (*submit_simple)(PyObject*, const char*, size_t, uint32_t, uint32_t, uint64_t, uint64_t,
                             PyObject**) noexcept
    enum:
        CLIPPER_HTTP_NEED_MORE
        CLIPPER_HTTP_CONTINUE
        CLIPPER_HTTP_REQUEST
        CLIPPER_HTTP_ERROR

# The HTTP parser and the simple-input submission compiled in rust_core, called without Python objects
# (rust_core/include/clipper_capi.h).
cdef const clipper_capi* RUST = <const clipper_capi*>PyCapsule_GetPointer(rust_core.c_api, b"clipper.rust_core.c_api")
if RUST.api_size != sizeof(clipper_capi) or RUST.request_size != sizeof(clipper_request):
    raise ImportError("clipper.rust_core and clipper._core were built from different versions of clipper_capi.h")

STATUS_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
    413: b"Payload Too Large", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    503: b"Service Unavailable",
}
cdef dict STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in STATUS_REASONS.items()}
EXPLANATIONS = {
    1: "Failed to retrieve a prediction response within the specified latency SLO",
    2: "No connected models found for query",
}
cdef int STATUS_OK = 0
cdef int STATUS_MODEL_ERROR = 3
cdef int STATUS_OVERLOADED = 4
cdef Py_ssize_t MAX_PIPELINE = 128
DEF LATENCY_WINDOW = 4096
DEF N_BUCKETS = 9
cdef double SLO_FRACTIONS[N_BUCKETS]
SLO_FRACTIONS[:] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0]

SCHEMA = '{ "input" := [double] | [int] | [string] | [byte] | [float], }'


cdef inline int64_t now_micros() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000 + ts.tv_nsec // 1000


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


cdef bytes http_response(int status, bytes body, bint keep_alive, bytes content_type=b"application/json",
                         bytes extra_headers=b""):
    status_line = STATUS_LINES.get(status)
    if status_line is None:
        status_line = b"HTTP/1.1 %d Unknown\r\n" % status
    return concat((status_line, b"Content-Type: ", content_type, b"\r\nContent-Length: ", decimal(len(body)),
                   b"\r\n", extra_headers, b"\r\n" if keep_alive else b"Connection: close\r\n\r\n", body))


PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


cdef inline bytes span_bytes(clipper_span span):
    return PyBytes_FromStringAndSize(span.ptr, span.len)


cdef inline object span_or_none(clipper_span span):
    return None if span.ptr == NULL else PyBytes_FromStringAndSize(span.ptr, span.len)


cdef inline bint span_equals(clipper_span span, const char* text) noexcept:
    cdef size_t n = strlen(text)
    return span.len == n and memcmp(span.ptr, text, n) == 0


cdef char SLASH = b"/"
cdef char QUESTION_MARK = b"?"


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


cdef bint wants_prometheus(bytes accept):
    """Content negotiation for /metrics: Prometheus asks for text/plain or OpenMetrics; others get JSON."""
    accept = accept.lower()
    return (b"openmetrics" in accept or b"text/plain" in accept) and b"application/json" not in accept


cdef bint token_matches(bytes authorization, bytes token):
    """`Authorization: Bearer <token>`, compared in constant time."""
    if authorization is None or not authorization[:7].lower() == b"bearer ":
        return False
    return hmac.compare_digest(authorization[7:].strip(), token)


cpdef bytes error_body(str error, str cause):
    """The JSON body of an error response: {"error": ..., "cause": ...}."""
    return orjson.dumps({"error": error, "cause": cause})


cdef class App:
    """An application as the query path sees it: input type, SLO, default and target model."""
    cdef public str name
    cdef public int input_code
    cdef public long long slo_micros
    cdef public bytes default_fragment
    cdef public int model_id
    cdef public object versions
    cdef public object linked_model
    cdef public object selector
    cdef public long long predictions
    cdef public long long defaults
    cdef int64_t latencies[LATENCY_WINDOW]
    cdef Py_ssize_t latency_count
    # Since start: answers by status (0 prediction, 1 SLO missed, 2 no model, 3 model error, 4 overloaded),
    # and a latency histogram whose bounds are fractions of the SLO.
    cdef long long by_status[5]
    cdef long long buckets[N_BUCKETS + 1]
    cdef int64_t bounds[N_BUCKETS]
    cdef long long bounds_slo
    cdef long long latency_sum

    def __init__(self, str name, int input_code, long long slo_micros, bytes default_fragment,
                 int model_id=-1, object linked_model=None, object versions=None):
        self.name = name
        self.input_code = input_code
        self.slo_micros = slo_micros
        self.default_fragment = default_fragment
        self.model_id = model_id
        self.linked_model = linked_model
        self.versions = versions if versions is not None else {}
        self.selector = None
        self.latency_count = 0

    cdef inline void record(self, int64_t latency, int status) noexcept:
        cdef int i
        self.predictions += 1
        if status != STATUS_OK:
            self.defaults += 1
        self.by_status[status] += 1
        self.latencies[self.latency_count % LATENCY_WINDOW] = latency
        self.latency_count += 1
        self.latency_sum += latency
        if self.bounds_slo != self.slo_micros:
            self.bounds_slo = self.slo_micros
            for i in range(N_BUCKETS):
                self.bounds[i] = <int64_t>(SLO_FRACTIONS[i] * self.slo_micros)
        for i in range(N_BUCKETS):
            if latency <= self.bounds[i]:
                self.buckets[i] += 1
                return
        self.buckets[N_BUCKETS] += 1

    def counters(self):
        """Totals since start: {"by_status": [5 counts], "buckets": [(upper bound in µs or None, cumulative
        count)], "latency_sum_micros": int} for Prometheus."""
        cdef long long running = 0
        buckets = []
        for i in range(N_BUCKETS + 1):
            running += self.buckets[i]
            buckets.append((self.bounds[i] if i < N_BUCKETS and self.bounds_slo else None, running))
        return {"by_status": [self.by_status[i] for i in range(5)], "buckets": buckets,
                "latency_sum_micros": self.latency_sum}

    def recent_latencies(self):
        """The latest response latencies in microseconds (a window of 4096)."""
        cdef Py_ssize_t n = min(self.latency_count, LATENCY_WINDOW)
        return [self.latencies[i] for i in range(n)]


cdef class Slot:
    """One HTTP request awaiting its response: a single prediction or a batch."""
    cdef HttpProtocol protocol
    cdef App app
    cdef list parts
    cdef Py_ssize_t remaining
    cdef bint is_batch
    cdef bint keep_alive
    cdef int64_t started
    cdef bytes response
    cdef bint overloaded
    cdef bytes request_id

    cdef void fill(self, Py_ssize_t index, long long query_id, int status, bytes payload):
        """Completes one input with a model output (status 0) or the app's default (other statuses)."""
        logger = self.protocol.server.request_logger if self.protocol is not None else None
        if status == STATUS_OVERLOADED:
            if logger is not None:
                logger("overloaded", app=self.app.name, query_id=query_id, request_id=text(self.request_id))
            self.overloaded = True
            self.put(index, b"", STATUS_OVERLOADED)
            return
        if status == STATUS_OK:
            self.put(index, concat((b'{"query_id":', decimal(query_id), b',"output":', payload, b',"default":false}')),
                     STATUS_OK)
            return
        if status == STATUS_MODEL_ERROR:
            explanation = "Model failed to predict: " + payload.decode("utf-8", "replace")
        else:
            explanation = EXPLANATIONS[status]
        if logger is not None:
            logger("default answer", app=self.app.name, query_id=query_id, request_id=text(self.request_id),
                   reason=explanation)
        self.put(index, b'{"query_id":%d,"output":%s,"default":true,"default_explanation":%s}' % (
            query_id, self.app.default_fragment, orjson.dumps(explanation)), status)

    cdef void fill_combined(self, Py_ssize_t index, long long query_id, bytes fragment, list models):
        """Completes one input with an output combined from several models, naming them."""
        self.put(index, b'{"query_id":%d,"output":%s,"default":false,"models":%s}' % (
            query_id, fragment, orjson.dumps(models)), STATUS_OK)

    cdef void put(self, Py_ssize_t index, bytes part, int status):
        self.app.record(now_micros() - self.started, status)
        self.parts[index] = part
        self.remaining -= 1
        if self.remaining == 0:
            if self.overloaded:
                self.response = http_response(
                    503, error_body("Service unavailable", "the model's queue is full; retry later"),
                    self.keep_alive, b"application/json", b"Retry-After: 1\r\n" + request_id_header(self.request_id))
            elif self.is_batch:
                self.response = http_response(
                    200, b'{"batch_predictions":[' + b",".join(self.parts) + b"]}", self.keep_alive,
                    b"application/json", request_id_header(self.request_id))
            elif self.request_id is None:
                self.response = http_response(200, self.parts[0], self.keep_alive)
            else:
                self.response = http_response(200, self.parts[0], self.keep_alive, b"application/json",
                                              request_id_header(self.request_id))
            self.protocol.flush()


cdef class Gather:
    """The answers of several models to one input, for an app with a selection policy.

    Every model's request completes by the SLO (answer, default or error), so the gather completes by
    then too, with what arrived: stragglers are left out of the combination.
    """
    cdef Slot slot
    cdef Py_ssize_t index
    cdef long long query_id
    cdef int uid
    cdef object selector
    cdef object label
    cdef list asked
    cdef dict outputs
    cdef Py_ssize_t remaining
    cdef int status
    cdef bytes error

    cdef void add(self, str model, int status, bytes payload):
        if status == STATUS_OK:
            self.outputs[model] = payload.decode("utf-8", "replace")
        elif self.status != 1:  # an SLO miss explains a default best; then a model error
            self.status = status if status != 2 or self.status == 0 else self.status
            if status == STATUS_MODEL_ERROR:
                self.error = payload
        self.remaining -= 1
        if self.remaining == 0:
            self.done()

    cdef void done(self):
        # Policy code runs inside the event loop's completion callback: whatever it raises answers this
        # request (500) and goes no further, so other completions are never lost.
        if self.label is None:
            try:
                combined = self.selector.combine(self.uid, self.outputs)
            except Exception as e:  # this input gets the default, naming the failure
                self.slot.fill(self.index, self.query_id, STATUS_MODEL_ERROR,
                               f"selection policy failed: {e!r}".encode("utf-8", "backslashreplace"))
                return
            self.answer(combined)
            return
        try:  # feedback: learn, then acknowledge
            self.selector.observe(self.uid, self.outputs, self.label, self.asked)
            self.slot.response = http_response(200, b"Feedback received? 1", self.slot.keep_alive, b"text/plain")
        except Exception as e:
            self.slot.response = http_response(500, error_body("Internal error", f"selection policy failed: {e!r}"),
                                               self.slot.keep_alive)
        self.slot.protocol.flush()

    cdef void answer(self, object combined):
        if combined is None:
            self.slot.fill(self.index, self.query_id, self.status or 2, self.error or b"")
        else:
            self.slot.fill_combined(self.index, self.query_id, json_fragment(combined[0]), combined[1])


cpdef bytes json_fragment(str output):
    """An output as embedded in a response: parsed JSON when it parses, else a JSON string."""
    try:
        return orjson.dumps(orjson.loads(output))
    except orjson.JSONDecodeError:
        return orjson.dumps(output)


cdef class QueryServer:
    """Process-wide query state: the engine, the apps and the requests waiting on the engine."""
    cdef public object engine
    cdef public dict apps
    cdef public object metrics_handler
    cdef public object prometheus_handler
    cdef public bytes predict_token
    cdef public bint ready
    cdef public bint draining
    cdef public object request_logger
    cdef set connections
    cdef public Py_ssize_t max_body_bytes
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_batch_inputs
    cdef dict waiting
    cdef long long next_query_id
    cdef object call_soon
    cdef bint wake_scheduled

    def __init__(self, engine, Py_ssize_t max_body_bytes=10 << 20, Py_ssize_t max_batch_inputs=10000,
                 metrics_handler=None, prometheus_handler=None, predict_token=None,
                 Py_ssize_t max_header_bytes=64 << 10):
        self.engine = engine
        self.prometheus_handler = prometheus_handler
        self.predict_token = predict_token.encode() if isinstance(predict_token, str) else predict_token
        self.ready = False
        self.draining = False
        self.request_logger = None
        self.connections = set()
        self.apps = {}
        self.waiting = {}
        self.next_query_id = 0
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_batch_inputs = max_batch_inputs
        self.metrics_handler = metrics_handler
        self.call_soon = None
        self.wake_scheduled = False

    def attach(self, loop):
        """Binds to the running event loop: completions are read there, wake-ups batched there."""
        self.call_soon = loop.call_soon
        loop.add_reader(self.engine.completion_fd(), self.on_completions)

    def detach(self, loop):
        loop.remove_reader(self.engine.completion_fd())

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
    def connection_count(self):
        return len(self.connections)

    def wake_engine(self):
        self.wake_scheduled = False
        self.engine.wake()

    def on_completions(self):
        """Drains the engine's completions and fills the slots waiting on them."""
        for token, status, payload in self.engine.drain():
            entry = self.waiting.pop(token, None)
            if entry is None:
                continue
            target = entry[0]
            if type(target) is Slot:
                (<Slot>target).fill(entry[1], token, status, payload)
            else:
                (<Gather>target).add(entry[1], status, payload)

    cdef void cancel(self, HttpProtocol protocol):
        """Withdraws the requests of a connection that closed: the models are spared them."""
        cdef list tokens = []
        for token, entry in self.waiting.items():
            target = entry[0]
            slot = (<Slot>target) if type(target) is Slot else (<Gather>target).slot
            if (<Slot>slot).protocol is protocol:
                tokens.append(token)
        for token in tokens:
            del self.waiting[token]
        if tokens:
            self.engine.cancel(tokens)

    @property
    def waiting_count(self):
        return len(self.waiting)

    cdef Slot predict(self, HttpProtocol protocol, App app, clipper_span body, bint keep_alive):
        """Validates a predict body and submits it; errors raise InputError or ValueError."""
        cdef Slot slot
        cdef PyObject* cached = NULL
        cdef long long query_id = self.next_query_id
        cdef int submitted
        if app.selector is None and app.model_id >= 0:  # most bodies are {"input": [numbers]}: no dict built
            submitted = RUST.submit_simple(<PyObject*>self.engine, body.ptr, body.len, app.input_code, app.model_id,
                                           app.slo_micros, query_id, &cached)
            if submitted >= 0:
                self.next_query_id += 1
                slot = new_slot(protocol, app, False, keep_alive, 1)
                if submitted == 1:
                    output = <bytes>cached  # a second reference; the one submit_simple made is dropped
                    Py_DECREF(output)
                    slot.fill(0, query_id, STATUS_OK, output)
                else:
                    self.waiting[query_id] = (slot, 0)
                    self.schedule_wake()
                return slot
        try:
            request = orjson.loads(span_bytes(body))
        except orjson.JSONDecodeError as e:
            raise InputError(f"Error parsing JSON: {e}. Expected JSON schema: {SCHEMA}")
        if type(request) is not dict:
            raise InputError(f"request body must be a JSON object. Expected JSON schema: {SCHEMA}")
        cdef int model_id = app.model_id
        version = request.get("version")
        if version is not None:
            if type(version) is not str:
                raise InputError("version must be a string")
            model_id = app.versions.get(version, -1)
            if model_id < 0:
                raise QueryError(f"Requested version: {version} does not exist for model: {app.linked_model}")
        cdef list inputs
        cdef bint is_batch
        value = request.get("input")
        if value is not None:
            inputs = [encode_input(value, app.input_code, "input")]
            is_batch = False
        elif "input_batch" in request:
            batch = request["input_batch"]
            if type(batch) is not list:
                raise InputError("input_batch must be an array of inputs")
            if len(batch) > self.max_batch_inputs:
                raise InputError(f"input_batch has {len(batch)} inputs; the limit is {self.max_batch_inputs}")
            inputs = [encode_input(batch[i], app.input_code, f"input_batch[{i}]") for i in range(len(batch))]
            is_batch = True
        else:
            raise InputError(f"JSON object does not have required keys input or input_batch. Expected JSON schema: {SCHEMA}")

        selector = app.selector
        cdef int uid = 0
        if selector is not None:
            if version is not None:
                raise QueryError(f"Too many models linked to application {app.name}")
            uid = request_uid(request, required=False)
        slot = new_slot(protocol, app, is_batch, keep_alive, len(inputs))
        if slot.remaining == 0:
            slot.response = http_response(200, b'{"batch_predictions":[]}', keep_alive)
            return slot
        cdef Py_ssize_t i
        submit = self.engine.submit
        for i in range(len(inputs)):
            query_id = self.next_query_id
            self.next_query_id += 1
            if selector is not None:
                self.gather(slot, i, query_id, uid, app, inputs[i], None)
            elif model_id < 0:
                slot.fill(i, query_id, 2, b"")
            else:
                hit = submit(query_id, model_id, app.input_code, inputs[i], app.slo_micros)
                if hit is not None:
                    slot.fill(i, query_id, STATUS_OK, hit)
                else:
                    self.waiting[query_id] = (slot, i)
                    self.schedule_wake()
        return slot

    cdef void schedule_wake(self):
        """One engine wake-up per event-loop iteration, not one per request."""
        if not self.wake_scheduled:
            self.wake_scheduled = True
            self.call_soon(self.wake_engine)

    cdef void gather(self, Slot slot, Py_ssize_t index, long long query_id, int uid, App app, bytes data,
                     object label):
        """Asks the models the app's policy chooses; the answers meet in a Gather."""
        selector = app.selector
        models = selector.choose(uid) if label is None else selector.feedback_models(uid)
        cdef Gather g = Gather.__new__(Gather)
        g.slot, g.index, g.query_id, g.uid, g.selector, g.label = slot, index, query_id, uid, selector, label
        g.asked = [name for name, _ in models]
        g.outputs = {}
        g.remaining = len(models)
        g.status = 0
        if not models:
            g.done()
            return
        submit = self.engine.submit
        cdef long long token
        for name, model_id in models:
            token = self.next_query_id
            self.next_query_id += 1
            hit = submit(token, model_id, app.input_code, data, app.slo_micros)
            if hit is not None:
                g.add(name, STATUS_OK, hit)
            else:
                self.waiting[token] = (g, name)
                self.schedule_wake()

    cdef Slot update(self, HttpProtocol protocol, App app, bytes body, bint keep_alive):
        """Validates a feedback body; apps with a selection policy learn from it before the answer."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InputError(f"Error parsing JSON: {e}")
        if type(request) is not dict:
            raise InputError("request body must be a JSON object with uid, input and label")
        for key in ("uid", "input", "label"):
            if key not in request:
                raise InputError(f"JSON object does not have required key: {key}")
        cdef int uid = request_uid(request, required=True)
        label = request["label"]
        if type(label) not in (int, float, str):
            raise InputError("label must be a number or a string")
        data = encode_input(request["input"], app.input_code, "input")
        cdef Slot slot = new_slot(protocol, app, False, keep_alive, 1)
        query_id = self.next_query_id
        self.next_query_id += 1
        if app.selector is None:
            slot.response = http_response(200, b"Feedback received? 1", keep_alive, b"text/plain")
        else:
            self.gather(slot, 0, query_id, uid, app, data, label)
        return slot


cdef str text(bytes value):
    return None if value is None else value.decode("latin-1")


cdef bytes request_id_header(bytes request_id):
    """The response header echoing a request's `X-Request-Id` (none when the client sent none)."""
    return b"" if request_id is None else b"X-Request-Id: " + request_id + b"\r\n"


cdef Slot new_slot(HttpProtocol protocol, App app, bint is_batch, bint keep_alive, Py_ssize_t n):
    cdef Slot slot = Slot.__new__(Slot)
    slot.protocol = protocol
    slot.request_id = protocol.request_id
    slot.app = app
    slot.is_batch = is_batch
    slot.keep_alive = keep_alive
    slot.started = now_micros()
    slot.parts = [None] * n
    slot.remaining = n
    return slot


cdef int request_uid(dict request, bint required) except? -1:
    """The user id of a request: a non-negative 32-bit integer (0 when optional and absent)."""
    uid = request.get("uid")
    if uid is None and not required:
        return 0
    if type(uid) is not int or not 0 <= uid <= 2147483647:
        raise InputError("uid must be a non-negative integer")
    return uid


class QueryError(ValueError):
    """A well-formed request that cannot be served as asked (e.g. an unknown version)."""


cdef class HttpProtocol:
    """asyncio protocol for one client connection of the query frontend.

    Bytes go to the Rust parser (`rust_core/src/http.rs`, through `clipper_capi.h`), which frames
    requests; no Python callback runs per header.
    """
    cdef QueryServer server
    cdef object transport
    cdef clipper_http_parser* parser
    cdef object write
    cdef list slots  # responses in request order; at most MAX_PIPELINE + 1
    cdef bytes url
    cdef bint closed
    cdef bint reading_paused
    cdef bint broken
    cdef bytes request_id
    cdef public long long requests_read

    def __init__(self, QueryServer server):
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
        if self.broken:
            return  # the connection closes once the responses before its 400 are written
        RUST.feed(self.parser, PyBytes_AS_STRING(data), len(data))
        cdef clipper_request request
        cdef uint16_t status = 400
        cdef int event
        while not self.closed:
            event = RUST.next(self.parser, &request, &status)
            if event == CLIPPER_HTTP_NEED_MORE:
                return
            if event == CLIPPER_HTTP_REQUEST:
                self.requests_read += 1
                self.on_request(&request)
            elif event == CLIPPER_HTTP_CONTINUE:
                # Clients that sent "Expect: 100-continue" wait (curl: 1 s) for this before the body.
                # Only when no earlier response is pending, so that responses stay in request order.
                if not self.slots:
                    self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self.fail(span_bytes(request.body).decode("utf-8", "replace"), status,
                          "Request header fields too large" if status == 431 else "Bad request")
                return

    cdef void fail(self, str cause, int status=400, str error="Bad request"):
        self.broken = True
        self.reply_error(status, error, cause, False)
        self.close_after_flush()

    def eof_received(self):
        return None

    cdef int on_request(self, clipper_request* request) except -1:
        cdef bint keep_alive = request.keep_alive
        cdef clipper_span target = request.target
        self.url = span_bytes(target)
        self.request_id = None
        if request.request_id.ptr != NULL and request.request_id.len <= 200:
            request_id = span_bytes(request.request_id)
            if request_id.isascii():
                self.request_id = request_id
        if self.server.draining:
            self.reply_error(503, "Service unavailable", "the query frontend is shutting down", False)
            return 0
        if request.too_large:
            self.reply_error(413, "Payload too large",
                             f"request body exceeds the limit of {self.server.max_body_bytes} bytes", False)
            self.close_after_flush()
            return 0
        cdef bint is_post = span_equals(request.method, b"POST")
        cdef const char* query = <const char*>memchr(target.ptr, QUESTION_MARK, target.len)
        cdef size_t path_len = <size_t>(query - target.ptr) if query != NULL else target.len
        cdef size_t app_start = 0, app_len = 0
        cdef int action = app_action(target.ptr, path_len, &app_start, &app_len)
        if action:
            if not is_post:
                path = self.url[:path_len]
                self.reply_error(405, "Method not allowed", f"use POST for {path.decode('latin-1')}", keep_alive)
                return 0
            if self.server.predict_token is not None and not token_matches(
                    span_or_none(request.authorization), self.server.predict_token):
                self.reply_bytes(401, error_body("Unauthorized", "a valid 'Authorization: Bearer <token>' header "
                                                 "is required"), keep_alive, b"application/json",
                                 b"WWW-Authenticate: Bearer\r\n")
                return 0
            app_name = self.url[app_start:app_start + app_len]
            self.route_app(app_name, action == ACTION_PREDICT, request.body, keep_alive)
            return 0
        path = self.url[:path_len]
        if not span_equals(request.method, b"GET"):
            self.reply_error(404, "Not found", f"no route for {span_bytes(request.method).decode('latin-1')} "
                             f"{path.decode('latin-1')}", keep_alive)
        elif path == b"/metrics":
            accept = span_or_none(request.accept)
            if accept is not None and wants_prometheus(accept):
                self.reply_bytes(200, self.server.prometheus_handler(), keep_alive, PROMETHEUS_TYPE)
            else:
                self.reply_bytes(200, self.server.metrics_handler(), keep_alive)
        elif path == b"/healthz":
            self.reply_bytes(200, b'{"status":"alive"}', keep_alive)
        elif path == b"/readyz":
            if self.server.ready:
                self.reply_bytes(200, b'{"status":"ready"}', keep_alive)
            else:
                self.reply_error(503, "Not ready", "the configuration has not been loaded yet", keep_alive)
        else:
            self.reply_error(404, "Not found", f"no route for GET {path.decode('latin-1')}", keep_alive)
        return 0

    cdef void route_app(self, bytes app_name, bint predict, clipper_span body, bint keep_alive):
        app = self.server.apps.get(app_name.decode("utf-8", "replace"))
        if app is None:
            self.reply_error(404, "Not found", f"no application named '{app_name.decode('utf-8', 'replace')}'",
                             keep_alive)
            return
        cdef Slot slot
        try:
            if predict:
                slot = self.server.predict(self, <App>app, body, keep_alive)
            else:
                slot = self.server.update(self, <App>app, span_bytes(body), keep_alive)
            self.slots.append(slot)
            if len(self.slots) > MAX_PIPELINE and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            self.flush()
        except QueryError as e:
            self.reply_error(400, "Query processing error", str(e), keep_alive)
        except InputError as e:
            self.reply_error(400, "Json error", str(e), keep_alive)

    # responses

    cdef void reply_error(self, int status, str error, str cause, bint keep_alive):
        logger = self.server.request_logger
        if logger is not None:
            logger("error answer", status=status, path=(self.url or b"").decode("latin-1"),
                   request_id=text(self.request_id), error=error, cause=cause)
        self.reply_bytes(status, error_body(error, cause), keep_alive)

    cdef void reply_bytes(self, int status, bytes body, bint keep_alive, bytes content_type=b"application/json",
                          bytes extra_headers=b""):
        cdef Slot slot = Slot.__new__(Slot)
        slot.response = http_response(status, body, keep_alive, content_type,
                                      extra_headers + request_id_header(self.request_id))
        slot.keep_alive = keep_alive
        self.slots.append(slot)
        self.flush()

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
                self.closed = True
                self.slots.clear()
                self.transport.close()
                return
        if self.server.draining and not self.slots:
            self.closed = True
            self.transport.close()
            return
        if self.reading_paused and len(self.slots) <= MAX_PIPELINE // 2:
            self.reading_paused = False
            self.transport.resume_reading()

    cdef void close_after_flush(self):
        if not self.closed and not self.slots:
            self.closed = True
            self.transport.close()
