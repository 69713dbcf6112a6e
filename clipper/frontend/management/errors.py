"""The management frontend's words: Clipper's error texts, its JSON parsing with rapidjson's messages, and
how the HTTP layer's own errors (404, 405, 401, 413, ...) are worded on this frontend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from ...state import canonical_input_type

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


#: The HTTP layer's own errors as this frontend words them (`clipper._core.HttpServer` texts; the JSON body is
#: `{"error": ..., "cause": ...}`).
HTTP_TEXTS = {
    "bad_request": ("Bad Request", "{cause}"),
    "head_too_large": ("Request Header Fields Too Large", "{cause}"),
    "too_large": ("Payload Too Large", "request bodies are limited to {limit} bytes"),
    "not_found": ("Not found", "no route {path}"),
    "wrong_method": ("Method not allowed", "{path} accepts {allow}, not {method}"),
    "unauthorized": ("Unauthorized", "a valid 'Authorization: Bearer <token>' header is required"),
    "draining": ("Service unavailable", "the management frontend is shutting down"),
    "internal": ("Internal Server Error", "{cause}"),
}


@dataclass(frozen=True)
class Response:
    """What a route answers: a status and a body (sent as application/json, as Clipper does even for text)."""

    status: int
    body: bytes


def error_response(status: int, error: str, cause: str) -> Response:
    """A JSON error answer: {"error": ..., "cause": ...}."""
    return Response(status, orjson.dumps({"error": error, "cause": cause}))


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

