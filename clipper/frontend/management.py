"""The management frontend: Clipper's admin REST API on :1338, writing `clipper.state`.

Same routes, request JSON, success texts and error texts as Clipper's management frontend
(`docs/compatibility.md`), so the published `clipper_admin` client works unchanged. Where Clipper wrote no
response at all, this one answers: unknown route 404 and wrong method 405 (JSON `{"error",
"cause"}`), unknown input type 400 (text), body over the limit 413, Redis unreachable 503 (JSON;
the server keeps running and the next request reconnects), unexpected failure 500.

    python -m clipper.frontend.management --redis-host 127.0.0.1 --redis-port 6379 --port 1338

One asyncio protocol on uvloop + httptools serves HTTP/1.1 with keep-alive and pipelining
(responses in request order). Handlers run in a small thread pool: Redis calls never block the
event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import redis
import uvloop

from .. import selection
from ..logs import configure_logging
from ..state import StateError, StateStore, canonical_input_type
from ..state.store import DEFAULT_POLICY, DEFAULT_USER_ID

log = logging.getLogger("clipper.management")

DEFAULT_PORT = 1338
MAX_BODY_BYTES = 10 << 20
#: Requests read ahead on one connection before it stops reading (pipelining back-pressure).
MAX_PIPELINED = 16
#: How long a connection answered early (413, malformed request) may keep sending before it is closed.
LINGER_S = 5.0

# Clipper's "Expected JSON schema" texts, verbatim (management_frontend.hpp), quirks included.
ADD_APPLICATION_JSON_SCHEMA = (
    '\n  {\n   "name" := string,\n   "input_type" := "integers" | "bytes" | "floats" | "doubles" | "strings",\n'
    '   "default_output" := string,\n   "latency_slo_micros" := int\n  }\n')
ADD_MODEL_LINKS_JSON_SCHEMA = '\n  {\n    "app_name" := string,\n    "model_names" := [string]\n  }\n'
DELETE_MODEL_LINKS_JSON_SCHEMA = '\n  {\n  "app_name" := string,\n  "model_names" := [string]\n  }\n'
GET_LINKED_MODELS_REQUESTS_SCHEMA = '\n  {\n    "app_name" := string\n  }\n'
VERBOSE_OPTION_JSON_SCHEMA = '\n  {\n    "verbose" := bool\n  }\n'
GET_APPLICATION_REQUESTS_SCHEMA = '\n  {\n    "name" := string\n  }\n'
GET_MODEL_REQUESTS_SCHEMA = '\n  {\n    "model_name" := string,\n    "model_version" := string\n  }\n'
GET_CONTAINER_REQUESTS_SCHEMA = (
    '\n  {\n    "model_name" := string,\n    "model_version" := string,\n    "replica_id" := int\n  }\n')
ADD_MODEL_JSON_SCHEMA = (
    '\n  {\n   "model_name" := string,\n   "model_version" := string,\n   "labels" := [string],\n'
    '   "input_type" := "integers" | "bytes" | "floats" | "doubles" | "strings",\n   "container_name" := string,\n'
    '   "model_data_path" := string\n  }\n')
DELETE_VERSIONED_MODEL_JSON_SCHEMA = '\n  {\n   "model_name" := string,\n   "model_version" := string,\n  }\n'
SET_VERSION_JSON_SCHEMA = '\n  {\n   "model_name" := string,\n   "model_version" := string,\n  }\n'
SELECTION_JSON_SCHEMA = '\n  {\n   "app_name" := string,\n   "uid" := int,\n  }\n'

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


# ---------------------------------------------------------------------- request JSON, rapidjson-style

class JsonError(Exception):
    """A request body that is not the JSON the route expects; the text is Clipper's."""


#: rapidjson's names of JSON types (clipper/json_util.hpp kTypeNames).
def _type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _container_at(text: str, pos: int) -> str:
    """'{' or '[': the innermost open container at `pos` (strings skipped)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


def _rapidjson_message(e: json.JSONDecodeError) -> str:
    """rapidjson's English text (GetParseError_En) for Python's JSON decode error."""
    msg = e.msg
    if msg == "Expecting value":
        return "The document is empty." if not e.doc.strip() else "Invalid value."
    if msg == "Extra data":
        return "The document root must not be followed by other values."
    if msg.startswith("Expecting property name"):
        return "Missing a name for object member."
    if msg == "Expecting ':' delimiter":
        return "Missing a colon after a name of object member."
    if msg == "Expecting ',' delimiter":
        if _container_at(e.doc, e.pos) == "[":
            return "Missing a comma or ']' after an array element."
        return "Missing a comma or '}' after an object member."
    if msg.startswith("Unterminated string"):
        return "Missing a closing quotation mark in string."
    if msg.startswith("Invalid \\uXXXX"):
        return "Incorrect hex digit after \\u escape in string."
    if msg.startswith("Invalid \\escape"):
        return "Invalid escape character in string."
    if msg.startswith("Invalid control character"):
        return "Invalid encoding in string."
    return "Unspecific syntax error."


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)  # rapidjson's lookup finds the first member of a name
    return out


def parse_json(body: bytes) -> Any:
    """The request document; JsonError with rapidjson's text (`JSON parse error: <msg> (offset N)\\n`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonError(f"JSON parse error: Invalid encoding in string. (offset {e.start})\n") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_first_key_wins)
        _check_surrogates(doc)
        return doc
    except json.JSONDecodeError as e:
        offset = len(text[:e.pos].encode())
        raise JsonError(f"JSON parse error: {_rapidjson_message(e)} (offset {offset})\n") from None
    except (ValueError, RecursionError):  # NaN / Infinity (not JSON), or absurd nesting
        raise JsonError("JSON parse error: Invalid value. (offset 0)\n") from None


def _check_surrogates(doc: Any) -> None:
    """Rejects lone surrogate escapes (e.g. "\\ud800"), which are not text: rapidjson refuses them too."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise JsonError("JSON parse error: The surrogate pair in string is invalid. (offset 0)\n") from None
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _member(doc: Any, key: str) -> Any:
    if not isinstance(doc, dict):
        raise JsonError("Can only get key-value pair from an object")
    if key not in doc:
        raise JsonError(f"JSON object does not have required key: {key}")
    return doc[key]


def _mismatch(key: str, expected: str, value: Any) -> JsonError:
    # Clipper's text, missing space before "but" included.
    return JsonError(f"Type mismatch! JSON key {key} expected type {expected}but found type {_type_name(value)}")


def get_string(doc: Any, key: str) -> str:
    value = _member(doc, key)
    if not isinstance(value, str):
        raise _mismatch(key, "String", value)
    return value


def get_int(doc: Any, key: str) -> int:
    """A 32-bit integer literal, as rapidjson's IsInt()."""
    value = _member(doc, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _mismatch(key, "Number", value)
    if isinstance(value, float) or not -(1 << 31) <= value < (1 << 31):
        raise JsonError("PredictionData of type Number is not of type int")
    return value


def get_bool(doc: Any, key: str) -> bool:
    value = _member(doc, key)
    if not isinstance(value, bool):
        raise JsonError(f"Type mismatch! JSON key {key} expected type bool but found type {_type_name(value)}")
    return value


def get_string_array(doc: Any, key: str) -> list[str]:
    value = _member(doc, key)
    if not isinstance(value, list):
        raise _mismatch(key, "Array", value)
    for item in value:
        if not isinstance(item, str):
            raise JsonError(f"Array input of type {_type_name(item)} is not of type string")
    return value


def get_input_type(doc: Any, key: str = "input_type") -> str:
    """The canonical input type; an unknown one raises InvalidInputType (a StateError: 400 with its text)."""
    return canonical_input_type(get_string(doc, key))


# ---------------------------------------------------------------------- route handlers

def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _app_json(app: dict[str, Any]) -> dict[str, Any]:
    return {"input_type": app["input_type"], "default_output": app["default_output"],
            "latency_slo_micros": app["latency_slo_micros"], "name": app["name"],
            "linked_models": app["linked_models"], "selection_policy": app["policy"]}


def _model_json(model: dict[str, Any]) -> dict[str, Any]:
    keys = ("model_name", "model_version", "input_type", "labels", "container_name", "model_data_path",
            "is_current_version")
    return {k: model[k] for k in keys}


def _replica_json(replica: dict[str, Any]) -> dict[str, Any]:
    keys = ("model_id", "model_name", "model_version", "model_replica_id", "input_type")
    return {k: replica[k] for k in keys}


def add_app(store: StateStore, d: Any) -> str:
    name = get_string(d, "name")
    input_type = get_input_type(d)
    default_output = get_string(d, "default_output")
    slo = get_int(d, "latency_slo_micros")
    policy = DEFAULT_POLICY
    if isinstance(d, dict) and d.get("selection_policy") is not None:
        try:
            chosen = selection.canonical_name(get_string(d, "selection_policy"))
        except selection.UnknownPolicyError as e:
            raise StateError(str(e)) from None
        policy = DEFAULT_POLICY if chosen == selection.DEFAULT else chosen
    store.add_app(name, input_type, default_output, slo, policy)
    return f"Successfully added application with name '{name}'"


def delete_app(store: StateStore, d: Any) -> str:
    name = get_string(d, "name")
    store.delete_app(name)
    return f"Successfully deleted application with name '{name}'"


def add_model(store: StateStore, d: Any) -> str:
    name = get_string(d, "model_name")
    version = get_string(d, "model_version")
    labels = get_string_array(d, "labels")
    input_type = get_input_type(d)
    container_name = get_string(d, "container_name")
    model_data_path = get_string(d, "model_data_path")
    batch_size = get_int(d, "batch_size")
    canonical = store.add_model(name, version, input_type, labels, container_name, model_data_path, batch_size)
    return f"Successfully added model with name '{name}' and input type '{canonical}'"


def set_model_version(store: StateStore, d: Any) -> str:
    name = get_string(d, "model_name")
    version = get_string(d, "model_version")
    store.set_current_version(name, version)
    return f"Successfully set model with name '{name}' to version '{version}'"


def delete_versioned_model(store: StateStore, d: Any) -> str:
    name = get_string(d, "model_name")
    version = get_string(d, "model_version")
    store.delete_model(name, version)
    return f"Successfully deleted model with name '{name}' and version '{version}'"


def add_model_links(store: StateStore, d: Any) -> str:
    app = get_string(d, "app_name")
    models = get_string_array(d, "model_names")
    linked = store.add_links(app, models)
    if len(linked) == 1:
        return f"Successfully linked model with name '{linked[0]}' to application '{app}'"
    names = ", ".join(f"'{m}'" for m in linked)
    return f"Successfully linked models with names {names} to application '{app}'"


def delete_model_links(store: StateStore, d: Any) -> str:
    app = get_string(d, "app_name")
    models = get_string_array(d, "model_names")
    store.delete_links(app, models)
    return "Success!"


def get_all_applications(store: StateStore, d: Any) -> str:
    if get_bool(d, "verbose"):
        return _dumps([_app_json(a) for a in store.get_apps()])
    return _dumps(store.list_apps())


def get_application(store: StateStore, d: Any) -> str:
    app = store.get_app(get_string(d, "name"))
    return _dumps(_app_json(app) if app else {})


def get_linked_models(store: StateStore, d: Any) -> str:
    return _dumps(store.get_linked_models(get_string(d, "app_name")))


def get_all_models(store: StateStore, d: Any) -> str:
    if get_bool(d, "verbose"):
        return _dumps([_model_json(m) for m in store.get_models()])
    return _dumps(store.list_models())


def get_model(store: StateStore, d: Any) -> str:
    model = store.get_model(get_string(d, "model_name"), get_string(d, "model_version"))
    return _dumps(_model_json(model) if model else {})


def get_all_containers(store: StateStore, d: Any) -> str:
    if get_bool(d, "verbose"):
        return _dumps([_replica_json(r) for r in store.get_replicas()])
    return _dumps(store.list_replicas())


def get_container(store: StateStore, d: Any) -> str:
    name = get_string(d, "model_name")
    version = get_string(d, "model_version")
    replica_id = get_int(d, "replica_id")
    replica = store.get_replica(name, version, replica_id)
    return _dumps(_replica_json(replica) if replica else {})


def get_state(store: StateStore, d: Any) -> str:
    app = get_string(d, "app_name")
    uid = get_int(d, "uid")
    if uid != DEFAULT_USER_ID:
        log.warning("Personalized default outputs are not currently supported. Using default UID %d instead",
                    DEFAULT_USER_ID)
    return store.get_state(app, DEFAULT_USER_ID)


def get_selection_state(store: StateStore, d: Any) -> str:
    """What an app's selection policy has learned for one user id (`{}` when nothing yet)."""
    app = get_string(d, "app_name")
    uid = get_int(d, "uid")
    if store.get_app(app) is None:
        raise StateError(f"No app with name '{app}' exists.")
    state = store.get_selection_state(app, uid)
    return state if state else "{}"


def reset_selection_state(store: StateStore, d: Any) -> str:
    """Forgets what an app's selection policy learned: for `uid`, or for every user when it is absent."""
    app = get_string(d, "app_name")
    uid = get_int(d, "uid") if isinstance(d, dict) and "uid" in d else None
    store.reset_selection_state(app, uid)
    return f"Successfully reset the selection state of application '{app}'"


@dataclass(frozen=True)
class Route:
    method: str
    handler: Callable[[StateStore, Any], str] | None
    schema: str = ""


ROUTES: dict[str, Route] = {
    "/admin/add_app": Route("POST", add_app, ADD_APPLICATION_JSON_SCHEMA),
    "/admin/delete_app": Route("POST", delete_app, ADD_APPLICATION_JSON_SCHEMA),  # sic, as Clipper
    "/admin/add_model": Route("POST", add_model, ADD_MODEL_JSON_SCHEMA),
    "/admin/set_model_version": Route("POST", set_model_version, SET_VERSION_JSON_SCHEMA),
    "/admin/delete_versioned_model": Route("POST", delete_versioned_model, DELETE_VERSIONED_MODEL_JSON_SCHEMA),
    "/admin/add_model_links": Route("POST", add_model_links, ADD_MODEL_LINKS_JSON_SCHEMA),
    "/admin/delete_model_links": Route("POST", delete_model_links, DELETE_MODEL_LINKS_JSON_SCHEMA),
    "/admin/get_all_applications": Route("POST", get_all_applications, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_application": Route("POST", get_application, GET_APPLICATION_REQUESTS_SCHEMA),
    "/admin/get_linked_models": Route("POST", get_linked_models, GET_LINKED_MODELS_REQUESTS_SCHEMA),
    "/admin/get_all_models": Route("POST", get_all_models, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_model": Route("POST", get_model, GET_MODEL_REQUESTS_SCHEMA),
    "/admin/get_all_containers": Route("POST", get_all_containers, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_container": Route("POST", get_container, GET_CONTAINER_REQUESTS_SCHEMA),
    "/admin/get_state": Route("POST", get_state, SELECTION_JSON_SCHEMA),
    "/admin/get_selection_state": Route("POST", get_selection_state, SELECTION_JSON_SCHEMA),
    "/admin/reset_selection_state": Route("POST", reset_selection_state, SELECTION_JSON_SCHEMA),
    "/admin/ping": Route("GET", None),
}


# ---------------------------------------------------------------------- HTTP

def _bearer_matches(authorization: bytes | None, token: bytes) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    if authorization is None or authorization[:7].lower() != b"bearer ":
        return False
    return hmac.compare_digest(authorization[7:].strip(), token)


@dataclass
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def _error(status: int, error: str, cause: str, *, headers: tuple[tuple[str, str], ...] = (),
           close: bool = False) -> Response:
    return Response(status, orjson.dumps({"error": error, "cause": cause}), headers, close)


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    keep_alive: bool
    early: Response | None = None  # answered without routing (malformed or too large)
    authorization: bytes | None = None


class ManagementFrontend:
    """The admin API server: routes, a thread pool for the store, and the listening socket."""

    def __init__(self, store: StateStore, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 max_body_bytes: int = MAX_BODY_BYTES, workers: int = 4, token: str | None = None) -> None:
        self.store = store
        self.token = token.encode() if token else None
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipper-mgmt")
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[AdminProtocol] = set()
        self.redis_ok: bool | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: AdminProtocol(self), self.host, self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("management frontend listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn.close()
            await self.server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def handle(self, request: Request) -> Response:
        if request.early is not None:
            return request.early
        route = ROUTES.get(request.path)
        if route is None:
            return _error(404, "Not found", f"no route {request.path}")
        if request.method != route.method:
            return _error(405, "Method not allowed", f"{request.path} accepts {route.method}, not {request.method}",
                          headers=(("Allow", route.method),))
        if route.handler is None:
            return Response(200, b"PONG")
        if self.token is not None and not _bearer_matches(request.authorization, self.token):
            return _error(401, "Unauthorized", "a valid 'Authorization: Bearer <token>' header is required",
                          headers=(("WWW-Authenticate", "Bearer"),))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.call, route, request.body)

    def call(self, route: Route, body: bytes) -> Response:
        """Runs one route handler (in a worker thread) and maps its outcome to a response."""
        assert route.handler is not None
        try:
            result = route.handler(self.store, parse_json(body))
        except JsonError as e:
            return Response(400, f"Error parsing JSON: {e}. Expected JSON schema: {route.schema}".encode())
        except StateError as e:
            self._redis_state(True)
            return Response(400, e.message.encode("utf-8", "backslashreplace"))
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self._redis_state(False, e)
            where = self.store.redis.get_connection_kwargs()
            return _error(503, "Unavailable", f"Redis at {where.get('host')}:{where.get('port')} is unreachable: {e}")
        except Exception as e:
            log.exception("admin request failed")
            return _error(500, "Internal Server Error", f"{type(e).__name__}: {e}")
        self._redis_state(True)
        return Response(200, result.encode())

    def _redis_state(self, ok: bool, exc: Exception | None = None) -> None:
        if ok != self.redis_ok:
            self.redis_ok = ok
            if ok:
                log.info("redis reachable")
            else:
                log.warning("redis unreachable", extra={"cause": str(exc)})

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stopping.done() or stopping.set_result(None))
        await self.start()
        try:
            await stopping
        finally:
            await self.stop()


class AdminProtocol(asyncio.Protocol):
    """HTTP/1.1 on httptools: keep-alive, pipelined requests answered in order, bounded bodies."""

    def __init__(self, frontend: ManagementFrontend) -> None:
        self.frontend = frontend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task | None = None
        self.reading = True
        self.closed = False  # stop parsing: the connection is ending
        self._begin()

    def _begin(self) -> None:
        self.url = b""
        self.chunks: list[bytes] = []
        self.size = 0
        self.rejected = False
        self.expect_continue = False
        self.authorization: bytes | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.frontend.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.frontend.connections.discard(self)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(_error(400, "Bad Request", "protocol upgrades are not supported", close=True))
        except httptools.HttpParserError as e:
            self._reject(_error(400, "Bad Request", f"malformed HTTP request: {e}", close=True))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._begin()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" and value.strip().isdigit() and int(value) > self.frontend.max_body_bytes:
            self._too_large()
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            self.expect_continue = True
        elif name == b"authorization":
            self.authorization = value

    def on_headers_complete(self) -> None:
        # curl waits for this before sending a larger body; only when no earlier response is still due
        if self.expect_continue and not self.rejected and not self.pending and self.task is None \
                and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.frontend.max_body_bytes:
            self._too_large()
        else:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.rejected or self.closed:
            return
        try:
            path = httptools.parse_url(self.url).path.decode("utf-8", "replace")
        except httptools.HttpParserInvalidURLError:
            self._reject(_error(400, "Bad Request", "invalid request target", close=True))
            return
        self._enqueue(Request(self.parser.get_method().decode("ascii", "replace"), path, b"".join(self.chunks),
                              self.parser.should_keep_alive(), authorization=self.authorization))

    # request queue

    def _too_large(self) -> None:
        limit = self.frontend.max_body_bytes
        self._reject(_error(413, "Payload Too Large", f"request bodies are limited to {limit} bytes", close=True))

    def _reject(self, response: Response) -> None:
        """Answers `response` after the requests before it, then closes; reads nothing more."""
        self.rejected = True
        if not self.closed:
            self.closed = True
            self._enqueue(Request("", "", b"", False, early=response))

    def _enqueue(self, request: Request) -> None:
        self.pending.append(request)
        if len(self.pending) >= MAX_PIPELINED and self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self.pending:
                request = self.pending.popleft()
                response = await self.frontend.handle(request)
                transport = self.transport
                if transport is None or transport.is_closing():
                    return
                keep_alive = request.keep_alive and not response.close
                self._write(transport, response, keep_alive)
                if request.early is not None:
                    self._linger(transport)
                    return
                if not keep_alive:
                    self.closed = True
                    transport.close()
                    return
                if not self.reading and len(self.pending) < MAX_PIPELINED // 2:
                    self.reading = True
                    transport.resume_reading()
        except Exception:
            log.exception("connection failed")
            self.close()
        finally:
            self.task = None

    def _linger(self, transport: asyncio.Transport) -> None:
        """Ends the connection after an early answer without losing it to a reset: sends FIN, keeps reading (and
        discarding) what the client still sends, and closes when it does or after LINGER_S."""
        self.closed = True
        if not self.reading:
            self.reading = True
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        else:
            transport.close()

    @staticmethod
    def _write(transport: asyncio.Transport, response: Response, keep_alive: bool) -> None:
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
                "Content-Type: application/json", f"Content-Length: {len(response.body)}"]
        head += [f"{name}: {value}" for name, value in response.headers]
        if not keep_alive:
            head.append("Connection: close")
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)


# ---------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipper.frontend.management", description=__doc__.split("\n")[0])
    parser.add_argument("--redis-host", "--redis_ip", default="127.0.0.1", help="Redis host (default 127.0.0.1)")
    parser.add_argument("--redis-port", "--redis_port", type=int, default=6379, help="Redis port (default 6379)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="request body limit (413 above)")
    parser.add_argument("--token", default=os.environ.get("CLIPPER_ADMIN_TOKEN"),
                        help="require 'Authorization: Bearer <token>' on every /admin route but ping "
                             "(default: $CLIPPER_ADMIN_TOKEN; none)")
    parser.add_argument("--max-apps", type=int, default=StateStore.max_apps,
                        help=f"most applications add_app accepts (default {StateStore.max_apps})")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if args.max_apps < 1:
        parser.error("--max-apps must be at least 1")

    store = StateStore.connect(args.redis_host, args.redis_port)
    store.max_apps = args.max_apps
    frontend = ManagementFrontend(store, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
                                  token=args.token)
    try:  # only to log the state at start: requests reconnect on their own, 503 while Redis is away
        store.ping()
        frontend._redis_state(True)
    except redis.RedisError as e:
        frontend._redis_state(False, e)
    uvloop.run(frontend.serve_forever())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
