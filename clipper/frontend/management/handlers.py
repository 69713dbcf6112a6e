"""The management routes' handlers: one function per route, `handler(store, request document) -> success text`.

They read and write `clipper.state.StateStore` (blocking Redis calls: the server runs them in its thread
pool). A request that does not fit raises `JsonError` (Clipper's JSON text) or `StateError` (Clipper's
text for the state it refers to); the server turns those into 400 answers.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ... import selection
from ...state import StateError, StateStore
from ...state.store import DEFAULT_POLICY, DEFAULT_USER_ID
from .errors import get_bool, get_input_type, get_int, get_string, get_string_array

log = logging.getLogger("clipper.management")


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
    """Clipper's fields, and the id of the query frontend the replica is connected to (null when the record
    does not say: one written by an older version)."""
    keys = ("model_id", "model_name", "model_version", "model_replica_id", "input_type")
    return {**{k: replica[k] for k in keys}, "frontend_id": replica.get("frontend_id") or None}


def _frontend_json(frontend: dict[str, Any]) -> dict[str, Any]:
    return {"id": frontend.get("id"), "http": frontend.get("http"), "rpc": frontend.get("rpc"),
            "pid": frontend.get("pid")}


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


def get_all_frontends(store: StateStore, d: Any) -> str:
    """The query frontends whose announcement is live: their ids, or (verbose) their announcements."""
    frontends = [f for f in store.get_frontends() if isinstance(f.get("id"), str)]
    if get_bool(d, "verbose"):
        return _dumps([_frontend_json(f) for f in frontends])
    return _dumps([f["id"] for f in frontends])


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


