"""Builds the OpenAPI descriptions from the route tables: `clipper._core.QUERY_ROUTES` (plus the two app routes
matched in C) and `clipper.frontend.management.ROUTES`. Every route of a table must have an operation here and
every operation a route (`build` raises otherwise), so a route cannot be added without its description.

OpenAPI 3.0.3, not 3.1: nothing here needs 3.1 (`nullable` covers the one null), and 3.0 is what the most tools
read fully, schemathesis's negative-data generation and OpenAPI client generators included.

    python -m clipper.frontend.openapi            # rewrites query.json and management.json
    python -m clipper.frontend.openapi --check    # exits 1 when a shipped file differs from the tables
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import _core, selection
from ..._version import __version__
from ...input_types import _ALIASES as INPUT_TYPE_ALIASES
from ..config import DEFAULT_MAX_BATCH_INPUTS, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES
from ..management.routes import ROUTES
from . import APIS, Api

Schema = dict[str, Any]
Operation = dict[str, Any]

OPENAPI_VERSION = "3.0.3"
HERE = Path(__file__).resolve().parent
INT32 = {"type": "integer", "format": "int32", "minimum": -(1 << 31), "maximum": (1 << 31) - 1}
#: The query frontend's routes matched in C before its table (`app_action` in _core/routes.pxi).
APP_PATHS = {"/{app}/predict": "POST", "/{app}/update": "POST"}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: Schema | None = None) -> dict[str, Any]:
    """`application/json` content; no schema where the body is Clipper's text sent as application/json."""
    return {"application/json": {} if schema is None else {"schema": schema}}


def response(description: str, schema: Schema | None = None, *, content: dict[str, Any] | None = None,
             headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    out["content"] = content if content is not None else json_content(schema)
    if headers:
        out["headers"] = headers
    return out


def error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return response(description, ref("schemas", "Error"), headers=headers)


def string_header(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **extra}}


#: What both frontends share: the error shape, the bearer token, the layer's own errors, `X-Request-Id`.
def common_components(frontend: str) -> dict[str, Any]:
    return {
        "schemas": {
            "Error": {
                "type": "object",
                "description": "Every error the HTTP layer answers (and every error of the query API).",
                "required": ["error", "cause"],
                "properties": {
                    "error": {"type": "string", "description": "the kind, e.g. `Json error`, `Not found`"},
                    "cause": {"type": "string", "description": "what was wrong, in words"},
                },
            },
        },
        "securitySchemes": {
            "bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": f"Only when the {frontend} is started with a token; without one, no header is needed.",
            },
        },
        "parameters": {
            "RequestId": {
                "name": "X-Request-Id", "in": "header", "required": False,
                "description": "Echoed on the response and logged when it is ASCII and at most 200 bytes; "
                               "another value is ignored, not refused.",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "RequestId": string_header("The request's `X-Request-Id`, when it sent one."),
        },
        "responses": {
            "BadHttp": error_response("The request is not acceptable HTTP/1.1 (the connection closes)."),
            "Unauthorized": error_response(
                "The frontend has a token and `Authorization: Bearer <token>` is missing or wrong.",
                {"WWW-Authenticate": string_header("`Bearer`", enum=["Bearer"])}),
            "PayloadTooLarge": error_response(
                f"The body is over `--max-body-bytes` (default {DEFAULT_MAX_BODY_BYTES}); the connection closes."),
            "HeadersTooLarge": error_response(
                f"The request line and headers are over the limit ({DEFAULT_MAX_HEADER_BYTES} bytes); the "
                "connection closes."),
            "ShuttingDown": error_response("The frontend is shutting down (`Connection: close`)."),
        },
    }


def layer_responses(*, auth: bool) -> dict[str, Any]:
    """The answers the HTTP layer may give on any route (400 malformed HTTP, 413, 431, 503 draining; 401)."""
    out = {"400": ref("responses", "BadHttp"), "413": ref("responses", "PayloadTooLarge"),
           "431": ref("responses", "HeadersTooLarge"), "503": ref("responses", "ShuttingDown")}
    if auth:
        out["401"] = ref("responses", "Unauthorized")
    return out


def operation(operation_id: str, summary: str, responses: dict[str, Any], *, auth: bool,
              body: Schema | None = None, body_description: str = "", path_parameters: tuple[Any, ...] = (),
              description: str = "") -> Operation:
    """One operation: the layer's answers merged under `responses`; the token optional where `auth` (only
    required when the frontend has one)."""
    op: Operation = {"operationId": operation_id, "summary": summary}
    if description:
        op["description"] = description
    op["parameters"] = [*path_parameters, ref("parameters", "RequestId")]
    if body is not None:
        op["requestBody"] = {"required": True, "description": body_description or summary,
                             "content": json_content(body)}
    op["security"] = [{"bearerAuth": []}, {}] if auth else []
    op["responses"] = {**layer_responses(auth=auth), **responses}
    op["responses"] = dict(sorted(op["responses"].items()))
    return op


def check_table(name: str, table: dict[str, str], described: dict[str, Operation]) -> None:
    """Every route of `table` (path -> method) has an operation of its method in `described`, and no more."""
    missing = {p: m for p, m in table.items() if m.lower() not in described.get(p, {})}
    extra = sorted(set(described) - set(table))
    if missing or extra:
        raise ValueError(f"{name}: routes without a description {missing}, descriptions without a route {extra}")


def document(api: Api, title: str, description: str, paths: dict[str, dict[str, Operation]],
             components: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": __version__, "description": description,
                 "license": {"name": "Apache-2.0"}},
        "tags": [{"name": api}],
        "paths": {p: {m: {**op, "tags": [api]} for m, op in ops.items()} for p, ops in sorted(paths.items())},
        "components": components,
    }


# ---------------------------------------------------------------------- the query API

def query_schemas() -> dict[str, Schema]:
    number_array = {"type": "array", "items": {"type": "number"}}
    return {
        "Input": {
            "description": (
                "One input, by the app's input type: `integers` an array of integers that fit in 32 bits; `floats` "
                "an array of finite numbers in the float32 range; `doubles` an array of numbers (integer literals "
                "are accepted for floats and doubles); `strings` a string; `bytes` a string of standard base64, "
                "decoded strictly. An input of another shape than the app's type is answered 400."),
            "anyOf": [
                {"type": "array", "items": INT32, "description": "integers"},
                {**number_array, "description": "floats, doubles"},
                {"type": "string", "description": "strings"},
                {"type": "string", "format": "byte", "description": "bytes (standard base64)"},
            ],
        },
        "PredictRequest": {
            "type": "object",
            "description": "`input` (one query) or `input_batch` (independent queries); `input` wins when both are "
                           "present.",
            "properties": {
                "input": ref("schemas", "Input"),
                "input_batch": {"type": "array", "items": ref("schemas", "Input"),
                                "maxItems": DEFAULT_MAX_BATCH_INPUTS,
                                "description": f"at most `--max-batch-inputs` (default {DEFAULT_MAX_BATCH_INPUTS})"},
                "version": {"type": "string", "nullable": True,
                            "description": "a version of the app's model other than the current (null: the current)"},
                "uid": {"type": "integer", "format": "int32", "minimum": 0, "maximum": (1 << 31) - 1,
                        "description": "the user id, for apps with a selection policy (read, and checked, only by "
                                       "those)"},
            },
            "anyOf": [{"required": ["input"]}, {"required": ["input_batch"]}],
            "example": {"input": [1.1, 2.2, 3.3]},
        },
        "Prediction": {
            "type": "object",
            "required": ["query_id", "output", "default"],
            "properties": {
                "query_id": {"type": "integer", "minimum": 0},
                "output": {"description": "the model's output: JSON when it is valid JSON, else a string (the app's "
                                          "default output likewise)"},
                "default": {"type": "boolean", "description": "the output is the app's default"},
                "default_explanation": {"type": "string", "description": "why the default was answered"},
                "models": {"type": "array", "items": {"type": "string"},
                           "description": "apps with a selection policy: the models whose outputs were used"},
            },
        },
        "BatchPrediction": {
            "type": "object",
            "required": ["batch_predictions"],
            "properties": {"batch_predictions": {"type": "array", "items": ref("schemas", "Prediction")}},
        },
        "UpdateRequest": {
            "type": "object",
            "required": ["uid", "input", "label"],
            "properties": {
                "uid": {"type": "integer", "format": "int32", "minimum": 0, "maximum": (1 << 31) - 1},
                "input": ref("schemas", "Input"),
                "label": {"anyOf": [{"type": "number"}, {"type": "string"}]},
            },
            "example": {"uid": 0, "input": [1.1, 2.2, 3.3], "label": 1.0},
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Metrics": {
            "type": "object",
            "description": "Clipper's metrics shape: lists of one-entry objects, each named `app:<app>:<metric>`, "
                           "`model:<m>:<v>:<metric>` or `internal:<metric>`; empty lists are left out.",
            "properties": {kind: {"type": "array", "items": {"type": "object"}}
                           for kind in ("counters", "ratio_counters", "meters", "histograms")},
        },
    }


def query_app_operations() -> dict[str, dict[str, Operation]]:
    app = {"name": "app", "in": "path", "required": True, "description": "the application's name",
           "schema": {"type": "string", "minLength": 1, "pattern": "^[^/?#]+$"}, "example": "hello-world"}
    unknown = error_response("No application of that name (`Not found`).")
    bad_input = error_response(
        "`Json error`: the body is not JSON, not an object, lacks a required key, or an input does not match the "
        "app's input type (`cause` says where); `Query processing error`: an unknown `version`, or a `version` for "
        "an app with a selection policy; or malformed HTTP (`Bad request`).")
    predict = operation(
        "predict", "Predict: one input, or a batch of inputs", {
            "200": response("The predictions (`batch_predictions` when `input_batch` was sent).", {
                "oneOf": [ref("schemas", "Prediction"), ref("schemas", "BatchPrediction")]},
                headers={"X-Request-Id": ref("headers", "RequestId")}),
            "400": bad_input,
            "404": unknown,
            "503": error_response(
                "The model's queue is full (`Retry-After: 1`, answered at once), or the frontend is shutting down.",
                {"Retry-After": string_header("seconds", enum=["1"])}),
        }, auth=True, body=ref("schemas", "PredictRequest"), path_parameters=(app,),
        description="Every answer is due within the app's latency objective: past it, or without a connected "
                    "model, the app's default output is answered with `default: true`. Another method than POST is "
                    "answered 405 with `Allow: POST`.")
    update = operation(
        "update", "Feedback: the label of an input, for apps with a selection policy", {
            "200": response("Acknowledged (for an app with a selection policy, once it has learned).",
                            content={"text/plain": {"schema": {"type": "string", "enum": ["Feedback received? 1"]}}}),
            "400": bad_input,
            "404": unknown,
            "500": error_response("The app's selection policy failed while learning (`Internal error`)."),
        }, auth=True, body=ref("schemas", "UpdateRequest"), path_parameters=(app,),
        description="Another method than POST is answered 405 with `Allow: POST`.")
    return {"/{app}/predict": {"post": predict}, "/{app}/update": {"post": update}}


#: The operations of QUERY_ROUTES (GET; another method there is answered 404, as an unknown route).
QUERY_OPERATIONS: dict[str, Callable[[], Operation]] = {
    "/metrics": lambda: operation("metrics", "Metrics: Clipper's JSON, or Prometheus text when asked", {
        "200": response(
            "JSON by default; Prometheus text (version 0.0.4) when `Accept` asks for `text/plain` or OpenMetrics "
            "and not JSON.",
            content={"application/json": {"schema": ref("schemas", "Metrics")},
                     "text/plain": {"schema": {"type": "string"}}}),
    }, auth=False),
    "/healthz": lambda: operation("healthz", "Liveness: the process answers", {
        "200": response("Alive.", {**ref("schemas", "Status"), "example": {"status": "alive"}}),
    }, auth=False),
    "/readyz": lambda: operation("readyz", "Readiness: the configuration is loaded", {
        "200": response("Ready.", {**ref("schemas", "Status"), "example": {"status": "ready"}}),
        "503": error_response("`Not ready`: the configuration has not been loaded yet (or the frontend is shutting "
                              "down)."),
    }, auth=False),
    "/openapi.json": lambda: operation("openapi", "This description", {
        "200": response("The OpenAPI description of the query API.", {"type": "object"}),
    }, auth=False),
}


def query_document() -> dict[str, Any]:
    """The query API's description, checked against the query frontend's route tables."""
    table = {path.decode(): route.method.decode() for path, route in _core.QUERY_ROUTES.items()}
    paths = {path: {"get": make()} for path, make in QUERY_OPERATIONS.items()}
    check_table("QUERY_ROUTES", table, paths)
    app_paths = query_app_operations()
    check_table("app routes", APP_PATHS, app_paths)
    components = common_components("query frontend (`--predict-token`)")
    components["schemas"].update(query_schemas())
    return document("query", "Clipper query API", (
        "Predictions over REST (port 1337 by default). Every answer is JSON (`Content-Type: application/json`) but "
        "`/<app>/update`'s and Prometheus metrics; errors are `{\"error\", \"cause\"}`. An unknown path, or a method "
        "other than GET on /metrics, /healthz, /readyz and /openapi.json, is answered 404. A trailing slash and a "
        "query string are ignored on the app routes. `Authorization: Bearer <token>` is needed on the app routes "
        "only when the frontend runs with `--predict-token`."), {**paths, **app_paths}, components)


# ---------------------------------------------------------------------- the management API

def management_schemas() -> dict[str, Schema]:
    string = {"type": "string"}
    strings = {"type": "array", "items": string}
    input_type = {"type": "string", "enum": sorted(set(INPUT_TYPE_ALIASES) | set(INPUT_TYPE_ALIASES.values())),
                  "description": "a canonical input type or one of Clipper's aliases (case ignored)"}
    policies = sorted({name for cls in selection.POLICIES.values() for name in (cls.name, *cls.aliases)})

    def obj(required: list[str], example: dict[str, Any] | None = None, **properties: Schema) -> Schema:
        out = {"type": "object", "required": required, "properties": properties}
        return out if example is None else {**out, "example": example}

    return {
        "InputType": input_type,
        "AddApp": obj(["name", "input_type", "default_output", "latency_slo_micros"],
                      {"name": "hello-world", "input_type": "doubles", "default_output": "-1.0",
                       "latency_slo_micros": 100000},
                      name=string, input_type=ref("schemas", "InputType"), default_output=string,
                      latency_slo_micros=INT32,
                      selection_policy={"type": "string", "nullable": True, "enum": [*policies, None],
                                        "description": "null or absent: the default policy (case, `_`, `-` and "
                                                       "spaces ignored)"}),
        "AppName": obj(["name"], name=string),
        "AddModel": obj(["model_name", "model_version", "labels", "input_type", "container_name", "model_data_path",
                         "batch_size"],
                        {"model_name": "sum-model", "model_version": "1", "labels": [], "input_type": "doubles",
                         "container_name": "NO_CONTAINER", "model_data_path": "DEPRECATED", "batch_size": -1},
                        model_name=string, model_version=string, labels=strings, input_type=ref("schemas", "InputType"),
                        container_name=string, model_data_path=string,
                        batch_size={**INT32, "description": "positive, or -1 (adaptive)"}),
        "ModelVersion": obj(["model_name", "model_version"], model_name=string, model_version=string),
        "ModelLinks": obj(["app_name", "model_names"], {"app_name": "hello-world", "model_names": ["sum-model"]},
                          app_name=string, model_names=strings),
        "Verbose": obj(["verbose"], verbose={"type": "boolean"}),
        "LinkedModels": obj(["app_name"], app_name=string),
        "Container": obj(["model_name", "model_version", "replica_id"], model_name=string, model_version=string,
                         replica_id=INT32),
        "AppUser": obj(["app_name", "uid"], app_name=string, uid=INT32),
        "ResetSelection": obj(["app_name"], app_name=string,
                              uid={**INT32, "description": "absent: every user id"}),
        "Application": obj(["name", "input_type", "default_output", "latency_slo_micros", "linked_models",
                            "selection_policy"],
                           name=string, input_type=string, default_output=string,
                           latency_slo_micros={"type": "integer"}, linked_models=strings, selection_policy=string),
        "Model": obj(["model_name", "model_version", "input_type", "labels", "container_name", "model_data_path",
                      "is_current_version"],
                     model_name=string, model_version=string, input_type=string, labels=strings,
                     container_name=string, model_data_path=string, is_current_version={"type": "boolean"}),
        "Replica": obj(["model_id", "model_name", "model_version", "model_replica_id", "input_type", "frontend_id"],
                       model_id=string, model_name=string, model_version=string,
                       model_replica_id={"type": "integer"}, input_type=string,
                       frontend_id={"type": "string", "nullable": True,
                                    "description": "id of the query frontend the replica is connected to (as "
                                                   "`get_all_frontends` lists it); null in a record written by "
                                                   "an older version"}),
        "Frontend": obj(["id", "http", "rpc", "pid"], id=string,
                        http={**string, "description": "`host:port` where its HTTP routes are reachable"},
                        rpc={**string, "description": "its RPC endpoint, as it binds it"},
                        pid={"type": "integer"}),
        "Empty": {"type": "object", "maxProperties": 0, "description": "nothing of that name"},
        **status_schemas(obj),
    }


def status_schemas(obj: Callable[..., Schema]) -> dict[str, Schema]:
    """The status page's data (`clipper.frontend.management.status.StatusMonitor.data`)."""
    string, number, integer, boolean = {"type": "string"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"}

    def nullable(schema: Schema) -> Schema:
        return {**schema, "nullable": True}

    def series(*names: str) -> Schema:
        values = {"type": "array", "items": nullable(number)}
        return obj(["t", *names], t={"type": "array", "items": number,
                                     "description": "seconds before `generated_at` of each sample"},
                   **dict.fromkeys(names, values))

    def summary(*keys: str) -> Schema:
        return nullable(obj(list(keys), **dict.fromkeys(keys, number)))

    return {
        "StatusData": obj(
            ["generated_at", "sampled_at", "interval_s", "window_s", "redis", "frontends", "apps", "models",
             "replicas", "cache"],
            generated_at=number, sampled_at=nullable(number), interval_s=number, window_s=number,
            redis=obj(["ok", "error"], ok=boolean, error=nullable(string)),
            frontends={"type": "array", "items": obj(
                ["id", "http", "rpc", "state", "for_s", "error"], id=string, http=nullable(string),
                rpc=nullable(string),
                state={"type": "string", "enum": ["up", "down", "gone"]}, for_s=number, error=nullable(string))},
            apps={"type": "array", "items": obj(
                ["name", "registered", "slo_micros", "linked_models", "rate", "default_ratio_1m", "default_ratio_5m",
                 "answers_1m", "answers_5m", "latency_micros"],
                name=string, registered=boolean, input_type=nullable(string), slo_micros=nullable(integer),
                default_output=nullable(string), policy=nullable(string),
                linked_models={"type": "array", "items": string},
                rate=number, answers_1m=integer, answers_5m=integer, default_ratio_1m=nullable(number),
                default_ratio_5m=nullable(number), latency_micros=summary("p50", "p95", "p99"),
                series=series("rate", "default_ratio", "p99"))},
            models={"type": "array", "items": obj(
                ["name", "version", "registered", "current", "batch_size_setting", "batch_size", "queue",
                 "connected_replicas", "rate", "series"],
                name=string, version=string, registered=boolean, current=boolean,
                batch_size_setting=nullable({**integer, "description": "-1: AIMD chooses"}),
                batch_size=summary("p50", "p95", "max", "mean"), queue=nullable(integer),
                connected_replicas=nullable(integer), rate=number, series=series("queue", "batch_size"))},
            replicas={"type": "array", "items": obj(
                ["model", "version", "replica_id", "frontend", "state", "for_s"], model=string, version=string,
                replica_id=integer, frontend=nullable(string),
                state={"type": "string", "enum": ["up", "frontend down", "frontend gone", "registered", "gone"]},
                for_s=number)},
            cache=obj(["lookups", "hits", "hit_ratio_1m", "hit_ratio_5m", "series"], lookups=integer, hits=integer,
                      lookups_1m=integer, lookups_5m=integer, hit_ratio_1m=nullable(number),
                      hit_ratio_5m=nullable(number), series=series("hit_ratio"))),
    }


def text(description: str) -> dict[str, Any]:
    """A 200 whose body is Clipper's text (not JSON), sent as application/json as Clipper sent it."""
    return response(f"{description} (plain text, sent as `application/json` as Clipper sent it).")


def listing(item: str) -> dict[str, Any]:
    return response(f"Names when `verbose` is false; {item} objects when true.", {
        "anyOf": [{"type": "array", "items": {"type": "string"}},
                  {"type": "array", "items": ref("schemas", item)}]})


def one_or_empty(item: str) -> dict[str, Any]:
    return response(f"The {item}, or `{{}}` when there is none of that name.", {
        "anyOf": [ref("schemas", item), ref("schemas", "Empty")]})


#: path -> (request schema, 200 answer, summary) of each admin route that has a handler.
ADMIN_OPERATIONS: dict[str, tuple[str, Callable[[], dict[str, Any]], str]] = {
    "/admin/add_app": ("AddApp", lambda: text("`Successfully added application with name '<name>'`"),
                       "Register an application"),
    "/admin/delete_app": ("AppName", lambda: text("`Successfully deleted application with name '<name>'`"),
                          "Delete an application, its links and its selection state"),
    "/admin/add_model": ("AddModel", lambda: text("`Successfully added model with name '<m>' and input type '<t>'`"),
                         "Register a model version (it becomes the current version)"),
    "/admin/set_model_version": ("ModelVersion", lambda: text("`Successfully set model with name '<m>' to version "
                                                              "'<v>'`"), "Make a version the model's current one"),
    "/admin/delete_versioned_model": ("ModelVersion", lambda: text("`Successfully deleted model with name '<m>' and "
                                                                   "version '<v>'`"), "Delete a model version"),
    "/admin/add_model_links": ("ModelLinks", lambda: text("`Successfully linked model with name '<m>' to "
                                                          "application '<app>'`"), "Link models to an application"),
    "/admin/delete_model_links": ("ModelLinks", lambda: text("`Success!`"), "Unlink models from an application"),
    "/admin/get_all_applications": ("Verbose", lambda: listing("Application"), "List the applications"),
    "/admin/get_application": ("AppName", lambda: one_or_empty("Application"), "Describe an application"),
    "/admin/get_linked_models": ("LinkedModels", lambda: response("The names of the models linked to the app.", {
        "type": "array", "items": {"type": "string"}}), "The models linked to an application"),
    "/admin/get_all_models": ("Verbose", lambda: listing("Model"), "List the model versions (`<m>:<v>`)"),
    "/admin/get_model": ("ModelVersion", lambda: one_or_empty("Model"), "Describe a model version"),
    "/admin/get_all_containers": ("Verbose", lambda: listing("Replica"),
                                  "List the connected replicas (`<m>:<v>:<id>`)"),
    "/admin/get_container": ("Container", lambda: one_or_empty("Replica"), "Describe a connected replica"),
    "/admin/get_all_frontends": ("Verbose", lambda: listing("Frontend"),
                                 "List the query frontends whose announcement is live (ids)"),
    "/admin/get_state": ("AppUser", lambda: text("The app's default output (`\"\"` when there is no such app)"),
                         "Clipper's get_state: an application's default output"),
    "/admin/get_selection_state": ("AppUser", lambda: response(
        "What the app's selection policy learned for the user id (`{}` when nothing yet).", {"type": "object"}),
        "What an application's selection policy learned for one user id"),
    "/admin/reset_selection_state": ("ResetSelection", lambda: text("`Successfully reset the selection state of "
                                                                    "application '<app>'`"),
                                     "Forget what an application's selection policy learned"),
}
#: The routes without a handler: a fixed answer, no token needed.
ADMIN_FIXED: dict[str, Callable[[], Operation]] = {
    "/admin/ping": lambda: operation("ping", "Health check", {"200": text("`PONG`")}, auth=False),
    "/openapi.json": lambda: operation("openapi", "This description", {
        "200": response("The OpenAPI description of the management API.", {"type": "object"})}, auth=False),
    "/status": lambda: operation("statusPage", "The status page (HTML; its data comes from /status/data)", {
        "200": response("The page: plain HTML that loads /status/status.css and /status/status.js.",
                        content={"text/html": {"schema": {"type": "string"}}})}, auth=False),
    "/status/status.css": lambda: operation("statusStyle", "The status page's style sheet", {
        "200": response("CSS.", content={"text/css": {"schema": {"type": "string"}}})}, auth=False),
    "/status/status.js": lambda: operation("statusScript", "The status page's script", {
        "200": response("JavaScript: polls /status/data every 2 s and draws the tables and charts.",
                        content={"text/javascript": {"schema": {"type": "string"}}})}, auth=False),
}
#: The routes answered from the status monitor (token when the frontend has one).
STATUS_OPERATIONS: dict[str, Callable[[], Operation]] = {
    "/status/data": lambda: operation("statusData", "The status page's data", {
        "200": response("Apps with their SLO, answers per second, the share of default answers over 1 and 5 "
                        "minutes and recent latency percentiles; per model version the batch sizes sent (AIMD's "
                        "choice when `batch_size_setting` is -1), queue depth and connected replicas; replicas and "
                        "their state (`gone`: left within the last 5 minutes); the cache hit ratio; the query "
                        "frontends announced in Redis (`down`: its /metrics did not answer). Windows and series come "
                        "from the samples the management frontend takes every `interval_s` seconds.",
                        ref("schemas", "StatusData"))}, auth=True),
}


def admin_operation(path: str) -> Operation:
    name = path.rsplit("/", 1)[1]
    schema, ok, summary = ADMIN_OPERATIONS[path]
    bad = response(
        "The body does not fit the route (`Error parsing JSON: <rapidjson's message>. Expected JSON schema: ...` "
        "or a type mismatch), or the state refuses the change (Clipper's text, e.g. `application 'a' already "
        "exists`, `No app with name 'a' exists.`); plain text sent as application/json, as Clipper did. "
        "Malformed HTTP is answered `{\"error\", \"cause\"}`.")
    return operation(name, summary, {
        "200": ok(), "400": bad,
        "503": error_response("`Unavailable`: Redis is unreachable (the next request reconnects); or the "
                              "frontend is shutting down."),
    }, auth=True, body=ref("schemas", schema))


def management_document() -> dict[str, Any]:
    """The management API's description, checked against ROUTES."""
    table = {path: route.method for path, route in ROUTES.items()}
    paths: dict[str, dict[str, Operation]] = {}
    for path, route in ROUTES.items():
        if route.monitor is not None:
            make = STATUS_OPERATIONS.get(path)
        else:
            make = ADMIN_FIXED.get(path) if route.handler is None else (lambda p=path: admin_operation(p))
        if make is not None:
            paths[path] = {route.method.lower(): make()}
    check_table("management ROUTES", table, paths)
    described = set(ADMIN_OPERATIONS) | set(ADMIN_FIXED) | set(STATUS_OPERATIONS)
    if described != set(paths):
        raise ValueError(f"described routes that ROUTES does not serve: {sorted(described - set(paths))}")
    components = common_components("management frontend (`--token` or `$CLIPPER_ADMIN_TOKEN`)")
    components["schemas"].update(management_schemas())
    return document("management", "Clipper management API", (
        "Clipper's admin REST API (port 1338 by default), with Clipper's request JSON, success texts and error "
        "texts: success and refusal texts are plain text sent as `application/json`, as Clipper sent them; the "
        "HTTP layer's own errors (401, 404, 405, 413, 431, 503) are `{\"error\", \"cause\"}`. An unknown path is "
        "answered 404, a known path asked with another method 405 with `Allow`. Every route but /admin/ping, "
        "/openapi.json and the status page's files (/status, /status/status.css, /status/status.js: no data) needs "
        "`Authorization: Bearer <token>` when the frontend runs with a token; /status/data too."), paths, components)


# ---------------------------------------------------------------------- the files

BUILDERS: dict[Api, Callable[[], dict[str, Any]]] = {"query": query_document, "management": management_document}


def render(doc: dict[str, Any]) -> bytes:
    """The bytes shipped and served: indented, key order kept, one final newline."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def build(api: Api) -> bytes:
    return render(BUILDERS[api]())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m clipper.frontend.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a shipped file differs; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for api in APIS:
        path, data = HERE / f"{api}.json", build(api)
        if path.exists() and path.read_bytes() == data:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_bytes(data)
    if stale:
        print(("stale: " if args.check else "wrote: ") + ", ".join(stale))
    return 1 if stale and args.check else 0
