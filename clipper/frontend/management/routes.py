"""The management frontend's route table: Clipper's admin paths, each with its method, handler and the
"Expected JSON schema" its JSON errors quote; the routes with a fixed answer (`/admin/ping`, `/openapi.json`,
the status page's files); and the status page's data (`/status/data`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ...state import StateStore
from ..openapi import document_bytes
from . import handlers as h
from .errors import (
    ADD_APPLICATION_JSON_SCHEMA,
    ADD_MODEL_JSON_SCHEMA,
    ADD_MODEL_LINKS_JSON_SCHEMA,
    DELETE_MODEL_LINKS_JSON_SCHEMA,
    DELETE_VERSIONED_MODEL_JSON_SCHEMA,
    GET_APPLICATION_REQUESTS_SCHEMA,
    GET_CONTAINER_REQUESTS_SCHEMA,
    GET_LINKED_MODELS_REQUESTS_SCHEMA,
    GET_MODEL_REQUESTS_SCHEMA,
    SELECTION_JSON_SCHEMA,
    SET_VERSION_JSON_SCHEMA,
    VERBOSE_OPTION_JSON_SCHEMA,
)
from .status import StatusMonitor


@dataclass(frozen=True)
class Route:
    """A route: its method, its handler over the store and the schema its JSON errors quote; or, without a
    handler, `answer`: the body of its fixed 200 answer (of `content_type`), served without the token (made
    once, at start); or `monitor`: a JSON answer made from the status monitor (token, thread pool)."""

    method: str
    handler: Callable[[StateStore, Any], str] | None
    schema: str = ""
    answer: Callable[[], bytes] | None = None
    content_type: str = "application/json"
    monitor: Callable[[StatusMonitor], bytes] | None = None


def asset(name: str) -> bytes:
    """A file of the status page (package data: `clipper/frontend/management/static/`)."""
    return resources.files(__package__).joinpath("static", name).read_bytes()



#: Exact paths (Clipper matched them with regex_match: no trailing slash; the query string is not the path).
ROUTES: dict[str, Route] = {
    "/admin/add_app": Route("POST", h.add_app, ADD_APPLICATION_JSON_SCHEMA),
    "/admin/delete_app": Route("POST", h.delete_app, ADD_APPLICATION_JSON_SCHEMA),  # sic, as Clipper
    "/admin/add_model": Route("POST", h.add_model, ADD_MODEL_JSON_SCHEMA),
    "/admin/set_model_version": Route("POST", h.set_model_version, SET_VERSION_JSON_SCHEMA),
    "/admin/delete_versioned_model": Route("POST", h.delete_versioned_model, DELETE_VERSIONED_MODEL_JSON_SCHEMA),
    "/admin/add_model_links": Route("POST", h.add_model_links, ADD_MODEL_LINKS_JSON_SCHEMA),
    "/admin/delete_model_links": Route("POST", h.delete_model_links, DELETE_MODEL_LINKS_JSON_SCHEMA),
    "/admin/get_all_applications": Route("POST", h.get_all_applications, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_application": Route("POST", h.get_application, GET_APPLICATION_REQUESTS_SCHEMA),
    "/admin/get_linked_models": Route("POST", h.get_linked_models, GET_LINKED_MODELS_REQUESTS_SCHEMA),
    "/admin/get_all_models": Route("POST", h.get_all_models, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_model": Route("POST", h.get_model, GET_MODEL_REQUESTS_SCHEMA),
    "/admin/get_all_containers": Route("POST", h.get_all_containers, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_container": Route("POST", h.get_container, GET_CONTAINER_REQUESTS_SCHEMA),
    "/admin/get_all_frontends": Route("POST", h.get_all_frontends, VERBOSE_OPTION_JSON_SCHEMA),
    "/admin/get_state": Route("POST", h.get_state, SELECTION_JSON_SCHEMA),
    "/admin/get_selection_state": Route("POST", h.get_selection_state, SELECTION_JSON_SCHEMA),
    "/admin/reset_selection_state": Route("POST", h.reset_selection_state, SELECTION_JSON_SCHEMA),
    "/admin/ping": Route("GET", None, answer=lambda: b"PONG"),  # the health check
    "/openapi.json": Route("GET", None, answer=lambda: document_bytes("management")),
    # The status page: its files hold no data and are served without the token; the data needs it.
    "/status": Route("GET", None, answer=lambda: asset("status.html"), content_type="text/html; charset=utf-8"),
    "/status/status.css": Route("GET", None, answer=lambda: asset("status.css"),
                                content_type="text/css; charset=utf-8"),
    "/status/status.js": Route("GET", None, answer=lambda: asset("status.js"),
                               content_type="text/javascript; charset=utf-8"),
    "/status/data": Route("GET", None, monitor=StatusMonitor.data_bytes),
}
