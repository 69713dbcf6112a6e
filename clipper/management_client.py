"""Requests to the management REST API, made as `clipper_admin` makes them.

Every call is a ``POST http://<admin addr>/admin/<route>`` with header ``Content-type: application/json``
(plus ``Authorization: Bearer <token>`` when the cluster requires one: the manager's `admin_token`, else
``$CLIPPER_ADMIN_TOKEN``) and a JSON body. Shared by
`ClipperConnection` and the container managers, which count a model's connected replicas here (all together, or
per query frontend).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ._extras import requests
from .exceptions import ClipperException

#: The environment variable holding the management API's bearer token, if it requires one.
ADMIN_TOKEN_ENV = "CLIPPER_ADMIN_TOKEN"
_HEADERS = {"Content-type": "application/json"}

Logger = logging.Logger | logging.LoggerAdapter


def admin_headers(token: str | None = None) -> dict[str, str]:
    """Clipper's request headers, plus the bearer `token` (default: `CLIPPER_ADMIN_TOKEN`, when set)."""
    token = token or os.environ.get(ADMIN_TOKEN_ENV)
    return {**_HEADERS, "Authorization": f"Bearer {token}"} if token else _HEADERS


def _url(admin_addr: str, route: str) -> str:
    return f"http://{admin_addr}/admin/{route}"


def post(admin_addr: str, route: str, body: dict[str, Any], *, timeout: float, logger: Logger,
         token: str | None = None) -> requests.Response:
    """POSTs `body` to ``/admin/<route>``; no answer, or one that is not 200, raises Clipper's `ClipperException`
    (``"Received error status code: <code> and message: <text>"``), logged at ERROR on `logger`."""
    url = _url(admin_addr, route)
    try:
        r = requests.post(url, headers=admin_headers(token), data=json.dumps(body), timeout=timeout)
    except requests.RequestException as e:
        msg = f"Cannot reach the Clipper management frontend at {url}: {e}"
        logger.error(msg)
        raise ClipperException(msg) from e
    logger.debug(r.text)
    if r.status_code != requests.codes.ok:
        msg = f"Received error status code: {r.status_code} and message: {r.text}"
        logger.error(msg)
        raise ClipperException(msg)
    return r


def get_json(admin_addr: str, route: str, body: dict[str, Any], *, timeout: float, logger: Logger,
             token: str | None = None) -> Any:
    """`post`, then the answer's JSON (`ClipperException` when it is not JSON)."""
    r = post(admin_addr, route, body, timeout=timeout, logger=logger, token=token)
    try:
        return r.json()
    except ValueError as e:
        raise ClipperException(f"/admin/{route} answered with a body that is not JSON: {r.text[:200]!r}") from e


def _list(admin_addr: str, route: str, timeout: float, token: str | None) -> list[Any] | None:
    """``POST /admin/<route>`` with ``{"verbose": true}``: the list it answers, None when there is none (no
    answer, not 200, not a JSON list). Quiet: for polling."""
    try:
        r = requests.post(_url(admin_addr, route), headers=admin_headers(token), data=json.dumps({"verbose": True}),
                          timeout=timeout)
        answer = r.json() if r.status_code == requests.codes.ok else None
    except (requests.RequestException, ValueError):
        return None
    return answer if isinstance(answer, list) else None


def _of(replicas: list[Any], name: str, version: str) -> list[dict[str, Any]]:
    return [c for c in replicas
            if isinstance(c, dict) and c.get("model_name") == name and c.get("model_version") == version]


def count_replicas(admin_addr: str, name: str, version: str, *, timeout: float = 2.0,
                   token: str | None = None) -> int:
    """Replicas of ``name:version`` connected to the query frontends, as they publish them (``get_all_containers``,
    within 0.25 s of a change), all frontends together (a replica connected to two frontends counts twice); -1
    when the management API does not answer. Quiet: for polling."""
    replicas = _list(admin_addr, "get_all_containers", timeout, token)
    return -1 if replicas is None else len(_of(replicas, name, version))


def count_replicas_per_frontend(admin_addr: str, name: str, version: str, *, timeout: float = 2.0,
                                token: str | None = None) -> dict[str, int] | None:
    """{query frontend id: replicas of ``name:version`` connected to it}, for every query frontend whose
    announcement is live (``get_all_frontends``; 0 for one without such replicas), from the records the
    frontends publish (``get_all_containers``, each with its ``frontend_id``). Records of frontends that are gone
    are left out. None when the management API does not answer. A management API of an older version, which
    lists no frontends, gives the counts by the records' frontend ids (``""`` for records without one).
    Quiet: for polling."""
    replicas = _list(admin_addr, "get_all_containers", timeout, token)
    if replicas is None:
        return None
    frontends = _list(admin_addr, "get_all_frontends", timeout, token)
    counts: dict[str, int] = {}
    if frontends is not None:
        counts = {f["id"]: 0 for f in frontends if isinstance(f, dict) and isinstance(f.get("id"), str)}
    for c in _of(replicas, name, version):
        frontend = c.get("frontend_id") or ""
        if frontends is None or frontend in counts:
            counts[frontend] = counts.get(frontend, 0) + 1
    return counts
