# The query path: applications (App), the answer of one predict or update request (PredictSlot), the answers of
# several models to one input (Gather), and QueryServer, the HttpServer of the query frontend: its route for
# `/<app>/predict` and `/<app>/update` (matched in C before the route table), submission to the engine and the
# completions coming back from it.

from cpython.mem cimport PyMem_Free, PyMem_Malloc

_EXPLANATIONS = {
    STATUS_TIMEOUT: "Failed to retrieve a prediction response within the specified latency SLO",
    STATUS_NO_MODEL: "No connected models found for query",
}
DEF N_BUCKETS = 9
cdef double SLO_FRACTIONS[N_BUCKETS]
SLO_FRACTIONS[:] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0]

_SCHEMA = '{ "input" := [double] | [int] | [string] | [byte] | [float], }'


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
    # The latest SAMPLE_WINDOW latencies (a ring), and since start: answers by engine status (N_STATUSES
    # counters, indexed by code) and a latency histogram whose bounds are fractions of the SLO.
    cdef int64_t* latencies
    cdef Py_ssize_t latency_count
    cdef Py_ssize_t latency_next
    cdef long long* by_status
    cdef long long buckets[N_BUCKETS + 1]
    cdef int64_t bounds[N_BUCKETS]
    cdef long long bounds_slo
    cdef long long latency_sum

    def __cinit__(self, *args, **kwargs):
        self.latencies = <int64_t*>PyMem_Malloc(SAMPLE_WINDOW * sizeof(int64_t))
        self.by_status = <long long*>calloc(N_STATUSES, sizeof(long long))
        if self.latencies == NULL or self.by_status == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.latencies)
        free(self.by_status)

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
        self.latency_next = 0

    cdef inline void record(self, int64_t latency, int status) noexcept:
        cdef int i
        self.predictions += 1
        if status != STATUS_OK:
            self.defaults += 1
        if 0 <= status < N_STATUSES:
            self.by_status[status] += 1
        self.latencies[self.latency_next] = latency
        self.latency_next += 1
        if self.latency_next == SAMPLE_WINDOW:
            self.latency_next = 0
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
        """Totals since start: {"by_status": [count per engine status, in code order], "buckets": [(upper
        bound in µs or None, cumulative count)], "latency_sum_micros": int} for Prometheus."""
        cdef long long running = 0
        buckets = []
        for i in range(N_BUCKETS + 1):
            running += self.buckets[i]
            buckets.append((self.bounds[i] if i < N_BUCKETS and self.bounds_slo else None, running))
        return {"by_status": [self.by_status[i] for i in range(N_STATUSES)], "buckets": buckets,
                "latency_sum_micros": self.latency_sum}

    def recent_latencies(self):
        """The latest response latencies in microseconds (a window of rust_core.SAMPLE_WINDOW)."""
        cdef Py_ssize_t n = min(self.latency_count, SAMPLE_WINDOW)
        return [self.latencies[i] for i in range(n)]


@cython.internal
cdef class PredictSlot(Slot):
    """The answer of one predict or update request: a single prediction or a batch."""
    cdef App app
    cdef list parts
    cdef Py_ssize_t remaining
    cdef bint is_batch
    cdef int64_t started
    cdef bint overloaded

    cdef void fill(self, Py_ssize_t index, long long query_id, int status, bytes payload):
        """Completes one input with a model output (STATUS_OK) or the app's default (other statuses)."""
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
            explanation = _EXPLANATIONS[status]
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
                    self.keep_alive, JSON_TYPE, b"Retry-After: 1\r\n" + request_id_header(self.request_id))
            elif self.is_batch:
                self.response = http_response(
                    200, b'{"batch_predictions":[' + b",".join(self.parts) + b"]}", self.keep_alive,
                    JSON_TYPE, request_id_header(self.request_id))
            elif self.request_id is None:
                self.response = http_response(200, self.parts[0], self.keep_alive)
            else:
                self.response = http_response(200, self.parts[0], self.keep_alive, JSON_TYPE,
                                              request_id_header(self.request_id))
            self.protocol.flush()


@cython.internal
cdef class Gather:
    """The answers of several models to one input, for an app with a selection policy.

    Every model's request completes by the SLO (answer, default or error), so the gather completes by
    then too, with what arrived: stragglers are left out of the combination.
    """
    cdef PredictSlot slot
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
        elif self.status != STATUS_TIMEOUT:  # an SLO miss explains a default best; then a model error
            if status != STATUS_NO_MODEL or self.status == STATUS_OK:
                self.status = status
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
            self.slot.fill(self.index, self.query_id, STATUS_NO_MODEL if self.status == STATUS_OK else self.status,
                           self.error or b"")
        else:
            self.slot.fill_combined(self.index, self.query_id, json_fragment(combined[0]), combined[1])


cpdef bytes json_fragment(str output):
    """An output as embedded in a response: parsed JSON when it parses, else a JSON string."""
    try:
        return orjson.dumps(orjson.loads(output))
    except orjson.JSONDecodeError:
        return orjson.dumps(output)


cdef PredictSlot new_slot(HttpProtocol protocol, App app, bint is_batch, bint keep_alive, Py_ssize_t n):
    cdef PredictSlot slot = PredictSlot.__new__(PredictSlot)
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


cdef class QueryServer(HttpServer):
    """The query frontend's HttpServer: the engine, the apps and the requests waiting on the engine.

    Routes: `/<app>/predict` and `/<app>/update` (POST; the bearer token when `predict_token` is set), then the
    table QUERY_ROUTES (GET /metrics, /healthz, /readyz, /openapi.json; another method there is answered 404).

    A client that ends its side (EOF) with predictions still due is taken as gone: they are withdrawn from the
    engine, so that models never spend a batch on abandoned requests (answers_after_eof false; the answers
    ready by then were written).
    """
    cdef public object engine
    cdef public dict apps
    cdef public object metrics_handler
    cdef public object prometheus_handler
    cdef public bint ready
    cdef public Py_ssize_t max_batch_inputs
    cdef dict waiting
    cdef long long next_query_id
    cdef bint wake_scheduled
    cdef bint reading_answers
    cdef object loop

    def __init__(self, engine, max_body_bytes=_config.DEFAULT_MAX_BODY_BYTES,
                 max_batch_inputs=_config.DEFAULT_MAX_BATCH_INPUTS, metrics_handler=None, prometheus_handler=None,
                 predict_token=None, max_header_bytes=_config.DEFAULT_MAX_HEADER_BYTES):
        HttpServer.__init__(self, dict(QUERY_ROUTES), QUERY_TEXTS, max_body_bytes, max_header_bytes, predict_token,
                            method_not_allowed=False, answers_after_eof=False)
        self.engine = engine
        self.prometheus_handler = prometheus_handler
        self.metrics_handler = metrics_handler
        self.ready = False
        self.apps = {}
        self.waiting = {}
        self.next_query_id = 0
        self.max_batch_inputs = max_batch_inputs
        self.wake_scheduled = False
        self.reading_answers = False
        self.loop = None

    @property
    def predict_token(self):
        """The bearer token predict and update require (None: none)."""
        return self.token

    @predict_token.setter
    def predict_token(self, value):
        self.token = value.encode() if isinstance(value, str) else value

    def attach(self, loop):
        """Binds to the running event loop: completions are read there, wake-ups batched there."""
        HttpServer.attach(self, loop)
        self.loop = loop
        loop.add_reader(self.engine.completion_fd(), self.on_completions)

    def detach(self, loop):
        loop.remove_reader(self.engine.completion_fd())
        self.watch_answers(False)

    def _wake_engine(self):
        self.wake_scheduled = False
        self.watch_answers(self.engine.wake())

    cdef watch_answers(self, bint reading):
        """At low load the event loop reads the containers' answers itself (`Engine.wake` says when): it
        watches the engine's answer descriptor while `reading`."""
        if reading == self.reading_answers:
            return
        self.reading_answers = reading
        if reading:
            self.loop.add_reader(self.engine.answer_fd(), self.on_answers)
        else:
            self.loop.remove_reader(self.engine.answer_fd())

    def on_answers(self):
        """Reads the answers that came and fills the slots waiting on them."""
        reading, done = self.engine.read_answers()
        self.watch_answers(reading)
        self.complete(done)

    def on_completions(self):
        """Drains the engine's completions and fills the slots waiting on them."""
        self.complete(self.engine.drain())

    cdef complete(self, list done):
        for token, status, payload in done:
            entry = self.waiting.pop(token, None)
            if entry is None:
                continue
            target = entry[0]
            if type(target) is PredictSlot:
                (<PredictSlot>target).fill(entry[1], token, status, payload)
            else:
                (<Gather>target).add(entry[1], status, payload)

    cdef void cancel(self, HttpProtocol protocol):
        """Withdraws the requests of a connection that closed: the models are spared them."""
        cdef list tokens = []
        for token, entry in self.waiting.items():
            target = entry[0]
            slot = (<PredictSlot>target) if type(target) is PredictSlot else (<Gather>target).slot
            if (<PredictSlot>slot).protocol is protocol:
                tokens.append(token)
        for token in tokens:
            del self.waiting[token]
        if tokens:
            self.engine.cancel(tokens)

    @property
    def unanswered(self):
        """Requests waiting on the engine."""
        return len(self.waiting)

    # routes

    cdef int route(self, HttpProtocol protocol, clipper_request* request, size_t path_len,
                   bint keep_alive) except -1:
        cdef size_t app_start = 0, app_len = 0
        cdef int action = app_action(request.target.ptr, path_len, &app_start, &app_len)
        if not action:
            return HttpServer.route(self, protocol, request, path_len, keep_alive)
        if not span_equals(request.method, b"POST"):
            self.reply_wrong_method(protocol, request, protocol.url[:path_len], b"POST", keep_alive)
            return 0
        if self.token is not None and not self.authorized(request):
            self.reply_unauthorized(protocol, keep_alive)
            return 0
        app_name = protocol.url[app_start:app_start + app_len]
        self.route_app(protocol, app_name, action == ACTION_PREDICT, request.body, keep_alive)
        return 0

    cdef int handle(self, HttpProtocol protocol, Route route, clipper_request* request, bint keep_alive) except -1:
        route.handler(self, protocol, span_or_none(request.accept), keep_alive)
        return 0

    cdef void route_app(self, HttpProtocol protocol, bytes app_name, bint predict, clipper_span body,
                        bint keep_alive):
        app = self.apps.get(app_name.decode("utf-8", "replace"))
        if app is None:
            protocol.reply_error(404, "Not found", f"no application named '{app_name.decode('utf-8', 'replace')}'",
                                 keep_alive)
            return
        cdef PredictSlot slot
        try:
            if predict:
                slot = self.predict(protocol, <App>app, body, keep_alive)
            else:
                slot = self.update(protocol, <App>app, span_bytes(body), keep_alive)
            protocol.push(slot)
        except QueryError as e:
            protocol.reply_error(400, "Query processing error", str(e), keep_alive)
        except InputError as e:
            protocol.reply_error(400, "Json error", str(e), keep_alive)

    # the engine

    cdef PredictSlot predict(self, HttpProtocol protocol, App app, clipper_span body, bint keep_alive):
        """Validates a predict body and submits it; errors raise InputError or ValueError."""
        cdef PredictSlot slot
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
            raise InputError(f"Error parsing JSON: {e}. Expected JSON schema: {_SCHEMA}")
        if type(request) is not dict:
            raise InputError(f"request body must be a JSON object. Expected JSON schema: {_SCHEMA}")
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
            raise InputError(f"JSON object does not have required keys input or input_batch. Expected JSON schema: {_SCHEMA}")

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
                slot.fill(i, query_id, STATUS_NO_MODEL, b"")
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
            self.call_soon(self._wake_engine)

    cdef void gather(self, PredictSlot slot, Py_ssize_t index, long long query_id, int uid, App app, bytes data,
                     object label):
        """Asks the models the app's policy chooses; the answers meet in a Gather."""
        selector = app.selector
        models = selector.choose(uid) if label is None else selector.feedback_models(uid)
        cdef Gather g = Gather.__new__(Gather)
        g.slot, g.index, g.query_id, g.uid, g.selector, g.label = slot, index, query_id, uid, selector, label
        g.asked = [name for name, _ in models]
        g.outputs = {}
        g.remaining = len(models)
        g.status = STATUS_OK
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

    cdef PredictSlot update(self, HttpProtocol protocol, App app, bytes body, bint keep_alive):
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
        cdef PredictSlot slot = new_slot(protocol, app, False, keep_alive, 1)
        query_id = self.next_query_id
        self.next_query_id += 1
        if app.selector is None:
            slot.response = http_response(200, b"Feedback received? 1", keep_alive, b"text/plain")
        else:
            self.gather(slot, 0, query_id, uid, app, data, label)
        return slot
