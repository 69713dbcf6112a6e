"""The OpenAPI descriptions: shipped files built from the route tables, valid OpenAPI 3, and served as
`GET /openapi.json` by real frontends (scripts/check_openapi.py runs schemathesis against them)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import HTTP_TIMEOUT_S, REPO, START_TIMEOUT_S, Cluster, Frontend
from openapi_spec_validator import validate

from clipper import _core
from clipper.frontend.management import ROUTES
from clipper.frontend.openapi import APIS, document, document_bytes
from clipper.frontend.openapi.build import APP_PATHS, build, check_table
from clipper.ports import free_port
from clipper.state import RedisServer

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ADMIN_TOKEN = "admin-secret"
PREDICT_TOKEN = "predict-secret"
CONFIG = {"models": [{"name": "m", "version": "1", "input_type": "doubles"}],
          "apps": [{"name": "a", "input_type": "doubles", "latency_slo_micros": 100000, "models": ["m"]}]}


def described_routes(api: str) -> dict[str, str]:
    """path -> the one method the description gives it."""
    out = {}
    for path, item in document(api)["paths"].items():  # type: ignore[arg-type]
        methods = sorted(set(item) & METHODS)
        assert len(methods) == 1, (path, methods)
        out[path] = methods[0].upper()
    return out


@pytest.mark.parametrize("api", APIS)
def test_shipped_file_is_what_the_route_tables_build(api: str) -> None:
    assert document_bytes(api) == build(api), "stale: run `python -m clipper.frontend.openapi`"  # type: ignore[arg-type]


@pytest.mark.parametrize("api", APIS)
def test_description_is_valid_openapi_3(api: str) -> None:
    doc = document(api)  # type: ignore[arg-type]
    validate(doc)
    assert doc["openapi"].startswith("3.0.")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "200" in op["responses"], (path, method)
            assert op["operationId"]


def test_query_description_covers_every_route_and_no_other() -> None:
    table = {path.decode(): route.method.decode() for path, route in _core.QUERY_ROUTES.items()}
    assert described_routes("query") == {**table, **APP_PATHS}
    assert "/openapi.json" in table


def test_management_description_covers_every_route_and_no_other() -> None:
    assert described_routes("management") == {path: route.method for path, route in ROUTES.items()}
    assert "/openapi.json" in ROUTES


def test_a_route_without_a_description_is_refused() -> None:
    described = {"/a": {"get": {}}}
    check_table("t", {"/a": "GET"}, described)
    with pytest.raises(ValueError, match="without a description"):
        check_table("t", {"/a": "GET", "/b": "POST"}, described)
    with pytest.raises(ValueError, match="without a description"):
        check_table("t", {"/a": "POST"}, described)
    with pytest.raises(ValueError, match="without a route"):
        check_table("t", {}, described)


def test_token_routes_use_the_bearer_scheme() -> None:
    for api in APIS:
        doc = document(api)  # type: ignore[arg-type]
        assert doc["components"]["securitySchemes"]["bearerAuth"] == {
            **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
        for path, item in doc["paths"].items():
            for op in item.values():
                open_route = path in ("/metrics", "/healthz", "/readyz", "/openapi.json", "/admin/ping", "/status",
                                      "/status/status.css", "/status/status.js")
                assert op["security"] == ([] if open_route else [{"bearerAuth": []}, {}]), path
                assert ("401" in op["responses"]) is not open_route, path


# ---------------------------------------------------------------------- served by real frontends

@pytest.fixture(scope="module")
def query_frontend(module_cluster: Cluster) -> Frontend:
    return module_cluster.frontend(CONFIG, extra_args=("--predict-token", PREDICT_TOKEN))


@pytest.fixture(scope="module")
def management_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A management frontend with a token, over the module's Redis."""
    log_path = tmp_path_factory.mktemp("mgmt") / "management.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "clipper.frontend.management", "--redis-port",
                                 str(redis_server.port), "--port", str(port), "--token", ADMIN_TOKEN],
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/admin/ping", timeout=1.0).status_code == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=5)


def fetch(url: str) -> requests.Response:
    r = requests.get(f"{url}/openapi.json", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    return r


def test_query_frontend_serves_the_shipped_description_without_the_token(query_frontend: Frontend) -> None:
    r = fetch(query_frontend.url)
    assert r.content == document_bytes("query")
    assert r.json()["info"]["title"] == "Clipper query API"
    # the token is still needed where the description says so, and the answer matches the description
    assert query_frontend.post("/a/predict", json={"input": [1.0]}).status_code == 401
    ok = query_frontend.post("/a/predict", json={"input": [1.0]}, headers={"Authorization": f"Bearer {PREDICT_TOKEN}"})
    assert ok.status_code == 200 and set(ok.json()) >= set(document("query")["components"]["schemas"]["Prediction"]
                                                             ["required"])
    # another method on a table route is answered as an unknown route, as described
    assert query_frontend.post("/openapi.json", data=b"").status_code == 404


def test_management_frontend_serves_the_shipped_description_without_the_token(management_url: str) -> None:
    r = fetch(management_url)
    assert r.content == document_bytes("management")
    assert set(r.json()["paths"]) == set(ROUTES)
    assert requests.post(f"{management_url}/admin/get_all_applications", json={"verbose": False},
                         timeout=HTTP_TIMEOUT_S).status_code == 401
    wrong = requests.post(f"{management_url}/openapi.json", timeout=HTTP_TIMEOUT_S)
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "GET")
    assert set(json.loads(wrong.content)) == {"error", "cause"}


def test_served_description_answers_pipelined_requests_in_order(query_frontend: Frontend) -> None:
    """/openapi.json on the compiled layer: keep-alive, pipelined with other routes."""
    with query_frontend.connect() as conn:
        conn.send(conn.request("GET", "/openapi.json") + conn.request("GET", "/healthz")
                  + conn.request("GET", "/openapi.json?x=1"))
        answers: list[tuple[int, dict[str, Any], bytes]] = [conn.read_response() for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert answers[0][2] == answers[2][2] == document_bytes("query")
    assert answers[1][2] == b'{"status":"alive"}'


def test_described_leniencies_are_real(query_frontend: Frontend) -> None:
    """What schemathesis's negative_data_rejection found the description too strict about: a `version` of null
    is the current version, and an `X-Request-Id` over 200 bytes is ignored (not echoed), not refused."""
    schemas = document("query")["components"]
    assert schemas["schemas"]["PredictRequest"]["properties"]["version"]["nullable"] is True
    assert "maxLength" not in schemas["parameters"]["RequestId"]["schema"]
    auth = {"Authorization": f"Bearer {PREDICT_TOKEN}"}
    r = query_frontend.post("/a/predict", json={"input": [1.0], "version": None}, headers=auth)
    assert r.status_code == 200, r.text
    r = query_frontend.post("/a/predict", json={"input": [1.0]}, headers={**auth, "X-Request-Id": "x" * 201})
    assert r.status_code == 200 and "X-Request-Id" not in r.headers
    r = query_frontend.post("/a/predict", json={"input": [1.0]}, headers={**auth, "X-Request-Id": "x" * 200})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "x" * 200
