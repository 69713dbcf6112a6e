"""The management frontend as a process over a real redis-server, driven with `requests`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clipper.ports import free_port
from clipper.state import RedisServer, StateStore, parse_event, redis_server_binary

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed "
                                "(Debian: apt-get install redis-server)")

REPO = Path(__file__).resolve().parents[1]
HTTP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 20.0
MIB = 1 << 20

ADD_APP_SCHEMA = (
    '\n  {\n   "name" := string,\n   "input_type" := "integers" | "bytes" | "floats" | "doubles" | "strings",\n'
    '   "default_output" := string,\n   "latency_slo_micros" := int\n  }\n')
VERBOSE_SCHEMA = '\n  {\n    "verbose" := bool\n  }\n'
LINKS_SCHEMA = '\n  {\n    "app_name" := string,\n    "model_names" := [string]\n  }\n'
CONTAINER_SCHEMA = '\n  {\n    "model_name" := string,\n    "model_version" := string,\n    "replica_id" := int\n  }\n'



class Admin:
    """A running `python -m clipper.frontend.management` and a client for it."""

    def __init__(self, redis_port: int, log_path: Path) -> None:
        self.log_path = log_path
        self.http = requests.Session()
        for _attempt in range(3):  # a port picked as free may be taken before the server binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "clipper.frontend.management", "--redis-host", "127.0.0.1",
                     "--redis-port", str(redis_port), "--port", str(self.port), "--log-level", "info"],
                    cwd=REPO, env=dict(os.environ), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            if self._wait_serving():
                return
        raise AssertionError(f"management frontend did not start:\n{self.log_tail()}")

    def _wait_serving(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/admin/ping", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        self.close()
        raise AssertionError(f"management frontend did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def post(self, route: str, body: Any = None, *, data: bytes | str | None = None) -> requests.Response:
        """POST /admin/<route> the way clipper_admin does (json.dumps body, JSON content type)."""
        payload = data if data is not None else json.dumps(body)
        return self.http.post(f"{self.url}/admin/{route}", data=payload, headers={"Content-type": "application/json"},
                              timeout=HTTP_TIMEOUT_S)

    def ok(self, route: str, body: Any) -> str:
        r = self.post(route, body)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
        return r.text

    def ok_json(self, route: str, body: Any) -> Any:
        return json.loads(self.ok(route, body))

    def bad(self, route: str, body: Any = None, *, data: bytes | str | None = None) -> str:
        r = self.post(route, body, data=data)
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"  # Clipper's quirk, even for plain text
        return r.text

    def add_app(self, name: str = "a", input_type: str = "doubles", default_output: str = "0.0",
                slo: int = 100000) -> requests.Response:
        return self.post("add_app", {"name": name, "input_type": input_type, "default_output": default_output,
                                     "latency_slo_micros": slo})

    def add_model(self, name: str = "m", version: str = "1", input_type: str = "doubles", labels: Any = None,
                  batch_size: int = -1, container: str = "NO_CONTAINER") -> requests.Response:
        # exactly ClipperConnection.register_model's body
        return self.post("add_model", {"model_name": name, "model_version": version, "labels": labels or [],
                                       "input_type": input_type, "container_name": container,
                                       "model_data_path": "DEPRECATED", "batch_size": batch_size})


@pytest.fixture(scope="module")
def module_admin(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    admin = Admin(redis_server.port, tmp_path_factory.mktemp("mgmt") / "management.log")
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def admin(module_admin: Admin, store: StateStore) -> Admin:
    """The shared frontend, over a flushed database."""
    assert module_admin.proc.poll() is None, module_admin.log_tail()
    return module_admin


def raw_exchange(port: int, data: bytes, n_responses: int = 1,
                 timeout: float = HTTP_TIMEOUT_S) -> list[tuple[int, dict[str, str], bytes]]:
    """Sends raw bytes and reads `n_responses` Content-Length-framed responses."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock, sock.makefile("rb") as reader:
        sock.sendall(data)
        for _ in range(n_responses):
            status_line = reader.readline()
            assert status_line, "connection closed before a response"
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, value = line.decode("latin-1").split(":", 1)
                headers[name.strip().lower()] = value.strip()
            out.append((status, headers, reader.read(int(headers["content-length"]))))
    return out


def http_request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


# ---------------------------------------------------------------------- applications

def test_ping(admin: Admin) -> None:
    r = admin.http.get(admin.url + "/admin/ping", timeout=HTTP_TIMEOUT_S)
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (200, "PONG", "application/json")


def test_add_app_and_get_application(admin: Admin) -> None:
    assert admin.ok_json("get_all_applications", {"verbose": False}) == []
    assert admin.ok_json("get_all_applications", {"verbose": True}) == []
    r = admin.add_app("a", "d", '{"y": 1}', 20000)
    assert (r.status_code, r.text) == (200, "Successfully added application with name 'a'")
    assert admin.add_app("b", "ints").status_code == 200
    assert admin.bad("add_app", {"name": "a", "input_type": "doubles", "default_output": "x",
                                 "latency_slo_micros": 1}) == "application 'a' already exists"
    app_a = {"input_type": "doubles", "default_output": '{"y": 1}', "latency_slo_micros": 20000, "name": "a",
             "linked_models": [], "selection_policy": "DefaultOutputSelectionPolicy"}
    assert admin.ok("get_application", {"name": "a"}) == json.dumps(app_a, separators=(",", ":"))  # key order too
    assert admin.ok("get_application", {"name": "nope"}) == "{}"
    assert sorted(admin.ok_json("get_all_applications", {"verbose": False})) == ["a", "b"]
    verbose = admin.ok_json("get_all_applications", {"verbose": True})
    assert sorted(verbose, key=lambda x: x["name"])[0] == app_a
    assert {a["name"]: a["input_type"] for a in verbose} == {"a": "doubles", "b": "integers"}


def test_add_app_unknown_input_type(admin: Admin) -> None:
    text = admin.bad("add_app", {"name": "x", "input_type": "tensor", "default_output": "0", "latency_slo_micros": 1})
    assert "unknown input type 'tensor'" in text and "doubles" in text
    assert admin.ok_json("get_all_applications", {"verbose": False}) == []


def test_delete_app_removes_links(admin: Admin) -> None:
    assert admin.bad("delete_app", {"name": "a"}) == "Application 'a' does not exist"
    admin.add_app()
    admin.add_model()
    admin.ok("add_model_links", {"app_name": "a", "model_names": ["m"]})
    assert admin.ok("delete_app", {"name": "a"}) == "Successfully deleted application with name 'a'"
    assert admin.ok("get_application", {"name": "a"}) == "{}"
    admin.add_app()
    assert admin.ok_json("get_linked_models", {"app_name": "a"}) == []  # Clipper kept the old link


def test_get_state(admin: Admin) -> None:
    admin.add_app("a", default_output="the default")
    assert admin.ok("get_state", {"app_name": "a", "uid": 0}) == "the default"
    assert admin.ok("get_state", {"app_name": "a", "uid": 5}) == "the default"  # uid forced to 0
    assert admin.ok("get_state", {"app_name": "zz", "uid": 0}) == ""


# ---------------------------------------------------------------------- models

def test_selection_policy_chosen_at_registration(admin: Admin) -> None:
    body = {"name": "b", "input_type": "doubles", "default_output": "0.0", "latency_slo_micros": 1000}
    assert admin.ok("add_app", {**body, "selection_policy": "exp4"}) == "Successfully added application with name 'b'"
    assert admin.ok_json("get_application", {"name": "b"})["selection_policy"] == "exp4"
    assert admin.bad("add_app", {**body, "name": "c", "selection_policy": "magic"}) == \
        "magic is an invalid selection_policy."
    admin.add_model("m1")
    admin.add_model("m2")
    assert admin.ok("add_model_links", {"app_name": "b", "model_names": ["m1", "m2"]}) == \
        "Successfully linked models with names 'm1', 'm2' to application 'b'"
    assert admin.ok_json("get_application", {"name": "b"})["linked_models"] == ["m1", "m2"]


def test_selection_state_read_and_reset(admin: Admin, store: StateStore) -> None:
    admin.add_app("b")
    assert admin.ok_json("get_selection_state", {"app_name": "b", "uid": 0}) == {}
    store.set_selection_state("b", '{"policy": "exp3"}', uid=0)
    store.set_selection_state("b", '{"policy": "exp3", "t": 1}', uid=7)
    assert admin.ok_json("get_selection_state", {"app_name": "b", "uid": 7}) == {"policy": "exp3", "t": 1}
    assert admin.ok("reset_selection_state", {"app_name": "b", "uid": 7}) == \
        "Successfully reset the selection state of application 'b'"
    assert store.selection_states("b") == {0: '{"policy": "exp3"}'}
    admin.ok("reset_selection_state", {"app_name": "b"})
    assert store.selection_states("b") == {}
    assert admin.bad("get_selection_state", {"app_name": "zz", "uid": 0}) == "No app with name 'zz' exists."


def test_add_model_and_get_model(admin: Admin) -> None:
    r = admin.add_model("m", "1", "i", labels=["l1", "l2"], container="img:1")
    assert (r.status_code, r.text) == (200, "Successfully added model with name 'm' and input type 'integers'")
    admin.add_model("m", "2", "ints")
    model = {"model_name": "m", "model_version": "1", "input_type": "integers", "labels": ["l1", "l2"],
             "container_name": "img:1", "model_data_path": "DEPRECATED", "is_current_version": False}
    assert admin.ok("get_model", {"model_name": "m", "model_version": "1"}) == json.dumps(model, separators=(",", ":"))
    m2 = admin.ok_json("get_model", {"model_name": "m", "model_version": "2"})
    assert m2["is_current_version"] is True and m2["labels"] == []  # Clipper answered [""]
    assert admin.ok("get_model", {"model_name": "m", "model_version": "3"}) == "{}"
    assert sorted(admin.ok_json("get_all_models", {"verbose": False})) == ["m:1", "m:2"]
    verbose = sorted(admin.ok_json("get_all_models", {"verbose": True}), key=lambda x: x["model_version"])
    assert verbose[0] == model and verbose[1] == m2


def test_add_model_errors(admin: Admin) -> None:
    batch = "The batch size must be positive or DEFAULT_BATCH_SIZE, which is -1"
    assert admin.bad("add_model", {"model_name": "m", "model_version": "1", "labels": [], "input_type": "doubles",
                                   "container_name": "c", "model_data_path": "p", "batch_size": 0}) == batch
    assert admin.add_model(batch_size=-5).text == batch
    assert admin.add_model("bad,name").text == "Invalid model name supplied: bad,name. Contains one of: ',', ':'"
    assert admin.add_model("m", "v:1").text == "Invalid model version supplied: v:1. Contains one of: ',', ':'"
    assert admin.add_model(labels=["a,b"]).text == "Invalid label supplied: a,b. Contains one of: ',', ':'"
    assert "unknown input type 'bits'" in admin.add_model(input_type="bits").text
    assert admin.add_model(batch_size=4).status_code == 200
    r = admin.add_model()
    assert (r.status_code, r.text) == (400, "model with name 'm' and version '1' already exists")
    text = admin.bad("add_model", data='{"model_name": "m", "model_version": "1"}')
    assert text.startswith("Error parsing JSON: JSON object does not have required key: labels. Expected JSON schema: ")


def test_set_model_version(admin: Admin) -> None:
    body = {"model_name": "m", "model_version": "1"}
    assert admin.bad("set_model_version", body) == "Cannot set version for nonexistent model 'm'"
    admin.add_model("m", "1")
    admin.add_model("m", "2", "floats")
    assert admin.bad("set_model_version", {"model_name": "m", "model_version": "3"}) == \
        "Cannot set non-existent version '3' for model with name 'm'"
    assert admin.ok("set_model_version", body) == "Successfully set model with name 'm' to version '1'"
    assert admin.ok_json("get_model", body)["is_current_version"] is True
    admin.add_app("a", "doubles")
    admin.ok("add_model_links", {"app_name": "a", "model_names": ["m"]})
    assert admin.bad("set_model_version", {"model_name": "m", "model_version": "2"}) == (
        "Model with name 'm' is already linked to app 'a' using input type 'doubles'. The input type you provided "
        "for a new version of the model, 'floats', is not compatible.")
    assert admin.add_model("m", "3", "strings").text == (
        "Model with name 'm' is already linked to app 'a' using input type 'doubles'. The input type you provided "
        "for a new version of the model, 'strings', is not compatible.")


def test_delete_versioned_model(admin: Admin) -> None:
    body = {"model_name": "m", "model_version": "1"}
    assert admin.bad("delete_versioned_model", body) == "model with name 'm' and version '1' does not exist"
    admin.add_model("m", "1")
    assert admin.ok("delete_versioned_model", body) == "Successfully deleted model with name 'm' and version '1'"
    # deleted at once (Clipper only marked it and waited for a query frontend): a second delete finds nothing
    assert admin.bad("delete_versioned_model", body) == "model with name 'm' and version '1' does not exist"
    assert admin.ok("get_model", body) == "{}"
    assert admin.ok_json("get_all_models", {"verbose": False}) == []
    assert admin.bad("set_model_version", body) == "Cannot set version for nonexistent model 'm'"


# ---------------------------------------------------------------------- links

def test_add_model_links(admin: Admin) -> None:
    def link(*models: str) -> requests.Response:
        return admin.post("add_model_links", {"app_name": "a", "model_names": list(models)})

    assert link("m").text == "No app with name 'a' exists."
    admin.add_app("a", "doubles")
    assert link("m").text == "No model with name 'm' exists."
    admin.add_model("m", "1", "floats")
    assert link("m").text == \
        "Model with name 'm' has incompatible input_type 'floats'. Requested app to link to has input_type 'doubles'."
    admin.add_model("m", "2", "doubles")
    admin.add_model("n", "1", "doubles")
    assert link().text == "Please provide the name of the model that you want to link to the application 'a'"
    assert link("m", "n").text == \
        "Applications must be linked with at most one model. Attempted to add links to 2 models."
    r = link("m")
    assert (r.status_code, r.text) == (200, "Successfully linked model with name 'm' to application 'a'")
    assert (link("m").status_code, link("m").text) == (400, "The model with name 'm' is already linked to 'a'")
    assert link("n").text == "A model with name m is already linked to 'a'."
    assert admin.ok_json("get_linked_models", {"app_name": "a"}) == ["m"]
    assert admin.ok_json("get_application", {"name": "a"})["linked_models"] == ["m"]
    assert admin.bad("get_linked_models", {"app_name": "zz"}) == "No application with name 'zz' exists."


def test_delete_model_links(admin: Admin) -> None:
    body = {"app_name": "a", "model_names": ["m"]}
    assert admin.bad("delete_model_links", body) == "No app with name a exists."
    admin.add_app()
    admin.add_model()
    assert admin.bad("delete_model_links", body) == "Cannot remove nonexistent link between app a and model m"
    admin.ok("add_model_links", body)
    assert admin.ok("delete_model_links", body) == "Success!"
    assert admin.ok_json("get_linked_models", {"app_name": "a"}) == []


# ---------------------------------------------------------------------- containers (written by query frontends)

def test_containers(admin: Admin, store: StateStore) -> None:
    assert admin.ok_json("get_all_containers", {"verbose": True}) == []
    store.add_replica("m", "1", 0, "doubles", connection_id="zmq-1")
    store.add_replica("m", "1", 1, "doubles")
    assert sorted(admin.ok_json("get_all_containers", {"verbose": False})) == ["m:1:0", "m:1:1"]
    replica = {"model_id": "m:1", "model_name": "m", "model_version": "1", "model_replica_id": 0,
               "input_type": "doubles", "frontend_id": None}
    assert replica in admin.ok_json("get_all_containers", {"verbose": True})
    assert admin.ok("get_container", {"model_name": "m", "model_version": "1", "replica_id": 0}) == \
        json.dumps(replica, separators=(",", ":"))
    assert admin.ok("get_container", {"model_name": "m", "model_version": "1", "replica_id": 9}) == "{}"
    assert admin.bad("get_container", {"model_name": "m", "model_version": "1", "replica_id": "0"}) == (
        "Error parsing JSON: Type mismatch! JSON key replica_id expected type Numberbut found type String. "
        f"Expected JSON schema: {CONTAINER_SCHEMA}")


# ---------------------------------------------------------------------- JSON errors, HTTP errors

def test_json_errors(admin: Admin) -> None:
    def parse_error(msg: str, schema: str = ADD_APP_SCHEMA) -> str:
        return f"Error parsing JSON: {msg}. Expected JSON schema: {schema}"

    assert admin.bad("add_app", data="") == parse_error("JSON parse error: The document is empty. (offset 0)\n")
    assert admin.bad("add_app", data='{"name": ') == parse_error("JSON parse error: Invalid value. (offset 9)\n")
    assert admin.bad("add_app", data='{"name" "a"}') == \
        parse_error("JSON parse error: Missing a colon after a name of object member. (offset 8)\n")
    assert admin.bad("add_app", data='{} {}') == \
        parse_error("JSON parse error: The document root must not be followed by other values. (offset 3)\n")
    assert admin.bad("add_app", data="[1, 2]") == parse_error("Can only get key-value pair from an object")
    assert admin.bad("add_app", {"input_type": "doubles"}) == \
        parse_error("JSON object does not have required key: name")
    assert admin.bad("add_app", {"name": 5}) == \
        parse_error("Type mismatch! JSON key name expected type Stringbut found type Number")
    body = {"name": "a", "input_type": "doubles", "default_output": "0"}
    assert admin.bad("add_app", {**body, "latency_slo_micros": 1.5}) == \
        parse_error("PredictionData of type Number is not of type int")
    assert admin.bad("add_app", {**body, "latency_slo_micros": 1 << 40}) == \
        parse_error("PredictionData of type Number is not of type int")
    assert admin.bad("add_app", {**body, "latency_slo_micros": True}) == \
        parse_error("Type mismatch! JSON key latency_slo_micros expected type Numberbut found type True")
    assert admin.bad("get_all_models", {"verbose": 1}) == \
        parse_error("Type mismatch! JSON key verbose expected type bool but found type Number", VERBOSE_SCHEMA)
    assert admin.bad("add_model_links", {"app_name": "a", "model_names": ["m", 3]}) == \
        parse_error("Array input of type Number is not of type string", LINKS_SCHEMA)
    assert admin.bad("add_model_links", {"app_name": "a", "model_names": "m"}) == \
        parse_error("Type mismatch! JSON key model_names expected type Arraybut found type String", LINKS_SCHEMA)
    assert admin.ok_json("get_all_applications", {"verbose": False}) == []


def test_not_found_and_wrong_method(admin: Admin) -> None:
    r = admin.post("no_such_route", {})
    assert r.status_code == 404 and r.json() == {"error": "Not found", "cause": "no route /admin/no_such_route"}
    r = admin.http.get(admin.url + "/admin/add_app", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 405 and r.json()["error"] == "Method not allowed" and r.headers["Allow"] == "POST"
    r = admin.http.post(admin.url + "/admin/ping", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    r = admin.http.get(admin.url + "/admin/ping/", timeout=HTTP_TIMEOUT_S)  # exact paths, as Clipper's regex_match
    assert r.status_code == 404
    r = admin.http.get(admin.url + "/admin/ping?x=1", timeout=HTTP_TIMEOUT_S)  # the query string is not the path
    assert r.text == "PONG"


def test_body_limit(admin: Admin) -> None:
    # A body over the limit is read to its end and dropped (the HTTP layer's parser never holds it), then 413.
    head = f"POST /admin/add_app HTTP/1.1\r\nHost: x\r\nContent-Length: {20 * MIB}\r\n\r\n".encode()
    [(status, headers, body)] = raw_exchange(admin.port, head + b"{" * (20 * MIB))
    assert status == 413 and json.loads(body)["error"] == "Payload Too Large"
    assert headers["connection"] == "close"
    # chunked bodies are counted as they come
    head = b"POST /admin/add_app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % MIB + b" " * MIB + b"\r\n"
    [(status, _, _)] = raw_exchange(admin.port, head + chunk * 11 + b"0\r\n\r\n")
    assert status == 413
    # just under the limit is fine (and is JSON whitespace around a valid body)
    body = json.dumps({"verbose": False}).encode() + b" " * (10 * MIB - 20)
    assert admin.post("get_all_models", data=body).status_code == 200


def test_keep_alive_and_pipelining(admin: Admin) -> None:
    ping = http_request("GET", "/admin/ping")
    add = http_request("POST", "/admin/add_app", json.dumps(
        {"name": "p", "input_type": "doubles", "default_output": "0", "latency_slo_micros": 1}).encode())
    get = http_request("POST", "/admin/get_all_applications", b'{"verbose": false}')
    responses = raw_exchange(admin.port, ping + add + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + get + ping, 5)
    assert [(s, b) for s, _, b in responses] == [
        (200, b"PONG"), (200, b"Successfully added application with name 'p'"),
        (404, b'{"error":"Not found","cause":"no route /nope"}'), (200, b'["p"]'), (200, b"PONG")]
    assert all(h["content-type"] == "application/json" for _, h, _ in responses)
    [(status, headers, _)] = raw_exchange(admin.port, http_request("GET", "/admin/ping", extra="Connection: close\r\n"))
    assert status == 200 and headers["connection"] == "close"
    body = b'{"verbose": true}'
    expect = f"POST /admin/get_all_models HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" \
             f"Content-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", admin.port), timeout=HTTP_TIMEOUT_S) as sock:
        sock.sendall(expect)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(1000).startswith(b"HTTP/1.1 200 OK\r\n")
    [(status, _, body)] = raw_exchange(admin.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400 and json.loads(body)["error"] == "Bad Request"


def test_pipelined_requests_of_a_connection_run_in_order(admin: Admin) -> None:
    """Requests pipelined on one connection take effect in the order they were sent (the handlers run in a
    thread pool, but one connection's requests one after the other): the read at the end sees every write."""
    names = [f"app{i}" for i in range(12)]
    adds = b"".join(http_request("POST", "/admin/add_app", json.dumps(
        {"name": name, "input_type": "doubles", "default_output": "0", "latency_slo_micros": 1}).encode())
        for name in names)
    get = http_request("POST", "/admin/get_all_applications", b'{"verbose": false}')
    responses = raw_exchange(admin.port, adds + get, len(names) + 1)
    assert [s for s, _, _ in responses] == [200] * (len(names) + 1)
    assert sorted(json.loads(responses[-1][2])) == sorted(names)


def test_half_closed_client_still_gets_its_answer(admin: Admin) -> None:
    """A client that sends `Connection: close` and shuts its write side (SHUT_WR) is answered in full, though
    the handler runs in the thread pool after the server has seen the end of the client's bytes."""
    admin.add_app()
    with socket.create_connection(("127.0.0.1", admin.port), timeout=HTTP_TIMEOUT_S) as sock:
        sock.sendall(http_request("POST", "/admin/get_all_applications", b'{"verbose": false}',
                                  extra="Connection: close\r\n"))
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close" in head, received
    assert body == b'["a"]'
    # pipelined requests before the half-close are all answered, in order, then the connection closes
    with socket.create_connection(("127.0.0.1", admin.port), timeout=HTTP_TIMEOUT_S) as sock:
        get = http_request("POST", "/admin/get_all_applications", b'{"verbose": false}')
        sock.sendall(get + http_request("GET", "/admin/ping") + get)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert [part.partition(b"\r\n\r\n")[2] for part in received.split(b"HTTP/1.1 ")[1:]] == [
        b'["a"]', b"PONG", b'["a"]']


def test_request_id_is_echoed(admin: Admin) -> None:
    r = admin.http.post(f"{admin.url}/admin/get_all_models", data=b'{"verbose": false}',
                        headers={"X-Request-Id": "adm-7"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "adm-7"
    r = admin.http.get(f"{admin.url}/admin/nope", headers={"X-Request-Id": "adm-8"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 404 and r.headers["X-Request-Id"] == "adm-8"
    assert "X-Request-Id" not in admin.http.get(f"{admin.url}/admin/ping", timeout=HTTP_TIMEOUT_S).headers


def test_mutations_publish_events(admin: Admin, store: StateStore) -> None:
    pubsub = store.subscribe()
    try:
        admin.add_app()
        admin.add_model()
        admin.ok("add_model_links", {"app_name": "a", "model_names": ["m"]})
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            if (event := parse_event(pubsub.get_message(timeout=0.1))) is not None:
                got.append(event)
    finally:
        pubsub.close()
    assert [(e["kind"], e["rev"]) for e in got] == [("app", 1), ("model", 2), ("current_version", 2), ("links", 3)]


def test_clipper_admin_session(admin: Admin) -> None:
    """The calls `ClipperConnection` makes in a typical deploy / roll back / stop session."""
    assert admin.add_app("hello-world", "doubles", "-1.0", 100000).status_code == 200
    assert admin.add_model("sum-model", "1", "doubles", container="sum-model:1").status_code == 200
    admin.ok("add_model_links", {"app_name": "hello-world", "model_names": ["sum-model"]})
    assert admin.add_model("sum-model", "2", "doubles", container="sum-model:2").status_code == 200
    models = admin.ok_json("get_all_models", {"verbose": True})
    assert [m["model_version"] for m in models if m["is_current_version"]] == ["2"]
    admin.ok("set_model_version", {"model_name": "sum-model", "model_version": "1"})
    inactive = [m["model_version"] for m in admin.ok_json("get_all_models", {"verbose": True})
                if not m["is_current_version"]]
    assert inactive == ["2"]
    for version in inactive:  # stop_inactive_model_versions
        admin.ok("delete_versioned_model", {"model_name": "sum-model", "model_version": version})
    assert admin.ok_json("get_all_models", {"verbose": False}) == ["sum-model:1"]
    assert admin.ok_json("get_application", {"name": "hello-world"})["linked_models"] == ["sum-model"]
    admin.ok("delete_model_links", {"app_name": "hello-world", "model_names": ["sum-model"]})
    admin.ok("delete_app", {"name": "hello-world"})
    assert admin.ok_json("get_all_applications", {"verbose": True}) == []


def test_sigterm_drains_then_exits(redis_server: RedisServer, tmp_path: Path) -> None:
    """On SIGTERM the server stops accepting, closes idle keep-alive connections at once, answers what it has
    read (a request read from then on gets 503 and `Connection: close`), then exits."""
    admin = Admin(redis_server.port, tmp_path / "management.log")
    try:
        idle = socket.create_connection(("127.0.0.1", admin.port), timeout=HTTP_TIMEOUT_S)
        [(status, _, _)] = raw_exchange(admin.port, http_request("GET", "/admin/ping"))
        assert status == 200
        idle.sendall(http_request("GET", "/admin/ping"))
        assert idle.recv(1000).endswith(b"PONG")  # a keep-alive connection, now idle
        admin.proc.send_signal(signal.SIGTERM)
        assert idle.recv(1000) == b"", "an idle connection is closed at once"
        assert admin.proc.wait(timeout=10) == 0
        idle.close()
    finally:
        admin.close()


# ---------------------------------------------------------------------- Redis outage

@pytest.mark.chaos
def test_redis_outage_answers_503_then_recovers(tmp_path: Path) -> None:
    server = RedisServer(log_path=tmp_path / "redis.log").start()
    admin = Admin(server.port, tmp_path / "management.log")
    try:
        assert admin.add_app().status_code == 200
        server.stop()
        t0 = time.monotonic()
        r = admin.post("get_all_applications", {"verbose": False})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "Unavailable" and f"127.0.0.1:{server.port}" in r.json()["cause"]
        assert time.monotonic() - t0 < 5
        assert admin.add_app("b").status_code == 503
        r = admin.http.get(admin.url + "/admin/ping", timeout=HTTP_TIMEOUT_S)
        assert r.text == "PONG"  # the server itself stays up
        server = RedisServer(server.port, log_path=tmp_path / "redis.log").start()
        deadline = time.monotonic() + 10
        while (r := admin.post("get_all_applications", {"verbose": False})).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        assert r.json() == []  # a new, empty Redis (no persistence)
        assert admin.add_app("b").status_code == 200
        assert admin.proc.poll() is None
        assert "redis unreachable" in admin.log_tail()
    finally:
        admin.close()
        server.stop()
