"""The R model container (``containers/r/``) and its deployer (`clipper.deployers.r`).

* Over a bare ROUTER played by the test (frames built with `struct`, as in test_container_runtime.py): the
  handshake byte for byte, every input type as R sees it, the error marker, malformed messages, sessions,
  SIGTERM, bad configurations.
* `deploy_r_function` with `LocalContainerManager` on a real cluster: ``POST /<app>/predict``, single and batch.
* The same with `DockerContainerManager` and the ``clipper/r-container`` image (marked ``docker``).

Skipped when ``Rscript`` or the R package pbdZMQ is missing (Debian: r-base-core, r-cran-pbdzmq); the Docker
test also when the engine does not answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import zmq
from conftest import docker_problem

from clipper import ClipperConnection
from clipper.deployers import r as r_deployer
from tests.conformance.impl_r import R_DIR, available
from tests.test_container_runtime import HEARTBEAT, TIMEOUT_S, Frontend, f64, outputs_of, u32, u64s, wait_for_stderr

_MISSING = available()
needs_r = pytest.mark.skipif(_MISSING is not None, reason=f"needs R with pbdZMQ: {_MISSING}")

WRAPPER = R_DIR / "clipper-r-container"
#: Echoes what R received: the class and the values of each input.
ECHO_MODEL = """
predict <- function(inputs) {
  if (is.character(inputs)) return(paste0("chr:", inputs))
  vapply(inputs, function(x) paste0(class(x), ":", paste(if (is.raw(x)) as.integer(x) else x, collapse = ",")), "")
}
"""
#: Fails as the input asks: "error" (an R error), "count" (wrong number of outputs), "long" (a long message).
FAILING_MODEL = """
predict <- function(inputs) {
  if (inputs[1] == "error") stop("deliberate failure")
  if (inputs[1] == "count") return(c("a", inputs))
  if (inputs[1] == "long") stop(strrep("\u00e9", 400))
  if (inputs[1] == "list") return(list(1:3))
  toupper(inputs)
}
"""


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def frontend(ctx: zmq.Context) -> Iterator[Frontend]:
    fe = Frontend(ctx)
    yield fe
    fe.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts the R container (through its wrapper, in its own process group) with Clipper's environment; the
    group is killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None, base_env: bool = True) -> subprocess.Popen:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CLIPPER_")}
        if base_env:
            full |= {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "v1"}
        full |= env or {}
        proc = subprocess.Popen(["sh", str(WRAPPER), *args], env=full, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and R
        proc.communicate(timeout=TIMEOUT_S)


def model_file(tmp_path: Path, source: str, name: str = "model.R") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def f32(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


def i32(*xs: int) -> bytes:
    return struct.pack(f"<{len(xs)}i", *xs)


# ---------------------------------------------------------------------- the wire, against a bare ROUTER


@needs_r
def test_handshake_and_batch_byte_for_byte(frontend: Frontend, spawn, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    model = model_file(tmp_path, "predict <- function(inputs) vapply(inputs, function(x) format(sum(x)), '')")
    spawn(model, env={"CLIPPER_PORT": str(frontend.port), "CLIPPER_INPUT_TYPE": "d", "CLIPPER_READY_FILE": str(ready)})
    ident, *first = frontend.recv(timeout=30)  # R takes a moment to start
    assert first == [b"", b"\x02\x00\x00\x00"]
    assert not ready.exists()
    frontend.reply_heartbeat(ident, 1)
    who, *registration = frontend.recv()
    assert who == ident
    assert registration == [b"", b"\x00\x00\x00\x00", b"m", b"v1", b"3", b"\x03\x00\x00\x00"]
    response = frontend.predict(ident, 7, 3, [f64(1.0, 2.0), f64(3.0, 4.5)])
    assert response == [b"", b"\x01\x00\x00\x00", b"\x07\x00\x00\x00", b"\x18\x00\x00\x00\x00\x00\x00\x00",
                        u64s(2, 1, 3), b"3", b"7.5"]
    deadline = time.monotonic() + TIMEOUT_S
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "CLIPPER_READY_FILE was not touched after registration"


@needs_r
@pytest.mark.parametrize(
    ("input_type", "code", "inputs", "expected"),
    [
        ("ints", 1, [i32(1, -2, 2**31 - 1), i32()], ["integer:1,-2,2147483647", "integer:"]),
        ("floats", 2, [f32(1.5, -0.25), f32(3.0)], ["numeric:1.5,-0.25", "numeric:3"]),
        ("doubles", 3, [f64(0.1, 1e300), f64(-3.5)], ["numeric:0.1,1e+300", "numeric:-3.5"]),
        ("bytes", 0, [bytes([0, 128, 255]), b""], ["raw:0,128,255", "raw:"]),
        ("strings", 4, ["héllo ✓".encode(), b"", b"\xff bad"], ["chr:héllo ✓", "chr:", "chr:\ufffd bad"]),
    ],
)
def test_every_input_type_as_r_sees_it(frontend: Frontend, spawn, tmp_path: Path, input_type, code, inputs,
                                       expected) -> None:
    spawn(model_file(tmp_path, ECHO_MODEL), env={"CLIPPER_PORT": str(frontend.port), "CLIPPER_INPUT_TYPE": input_type})
    ident, registration = frontend.register(timeout=30)
    assert registration[4] == str(code).encode()
    assert [o.decode() for o in outputs_of(frontend.predict(ident, 0, code, inputs), 0)] == expected


@needs_r
def test_model_from_an_rds_file_and_from_model_path(frontend: Frontend, spawn, tmp_path: Path) -> None:
    subprocess.run(["Rscript", "-e", "saveRDS(function(inputs) rep('from rds', length(inputs)), 'model.rds')"],
                   cwd=tmp_path, check=True, timeout=60)
    spawn(env={"CLIPPER_PORT": str(frontend.port), "CLIPPER_MODEL_PATH": str(tmp_path)})
    ident, _ = frontend.register(timeout=30)
    assert outputs_of(frontend.predict(ident, 1, 3, [f64(1.0)]), 1) == [b"from rds"]


@needs_r
def test_failures_answer_error_markers_and_the_container_keeps_serving(frontend: Frontend, spawn,
                                                                      tmp_path: Path) -> None:
    spawn(model_file(tmp_path, FAILING_MODEL), env={"CLIPPER_PORT": str(frontend.port), "CLIPPER_INPUT_TYPE": "s"})
    ident, _ = frontend.register(timeout=30)
    out = outputs_of(frontend.predict(ident, 1, 4, [b"error", b"x"]), 1)
    assert out[0] == out[1] and out[0].startswith(b"\x00error:") and b"deliberate failure" in out[0]
    out = outputs_of(frontend.predict(ident, 2, 4, [b"count"]), 2)
    assert out == [b"\x00error:model returned 2 outputs for a batch of 1"]
    out = outputs_of(frontend.predict(ident, 3, 4, [b"long"]), 3)
    assert len(out[0]) <= len(b"\x00error:") + 500 and len(out[0]) > 400
    out[0][len(b"\x00error:"):].decode()  # cut on a character boundary
    out = outputs_of(frontend.predict(ident, 4, 4, [b"list"]), 4)
    assert out[0].startswith(b"\x00error:model returned a list")
    out = outputs_of(frontend.predict(ident, 5, 3, [f64(1.0)]), 5)  # doubles to a strings container
    assert out == [b"\x00error:request input type doubles does not match the container's input type strings"]
    out = outputs_of(frontend.predict(ident, 6, 4, [b"a\x00b"]), 6)
    assert out[0].startswith(b"\x00error:") and b"NUL" in out[0]
    assert outputs_of(frontend.predict(ident, 7, 4, [b"ok", "é".encode()]), 7) == [b"OK", "É".encode()]


@needs_r
def test_malformed_messages_are_skipped_with_a_log_line(frontend: Frontend, spawn, tmp_path: Path) -> None:
    proc = spawn(model_file(tmp_path, ECHO_MODEL), env={"CLIPPER_PORT": str(frontend.port)})
    ident, _ = frontend.register(timeout=30)
    frontend.sock.send_multipart([ident, b"", u32(3), u32(1), u32(1), u32(1), u64s(0), b""])  # feedback
    frontend.sock.send_multipart([ident, b"", u32(4), u32(2), u32(0)])  # wrong rpc version
    frontend.sock.send_multipart([ident, b"", u32(3), u32(1), u32(2), u32(0), u64s(32), u64s(3, 1)])  # bad header
    frontend.sock.send_multipart([ident, b"", u32(3), u32(1), u32(2), u32(0), u64s(24), u64s(3, 1, 16)])  # no input
    wait_for_stderr(proc, "dropping malformed message from the frontend: unsupported rpc version 4")
    assert frontend.silent(0.5)
    # well-formed, but 7 bytes are no doubles: the batch fails, the container answers it
    assert outputs_of(frontend.predict(ident, 3, 3, [b"1234567"]), 3) == [
        b"\x00error:input size is not a multiple of 8 bytes (doubles)"]
    assert outputs_of(frontend.predict(ident, 4, 3, [f64(1.0)]), 4) == [b"numeric:1"]
    assert proc.poll() is None


@needs_r
def test_heartbeats_when_idle_and_a_new_session_after_silence(frontend: Frontend, spawn, tmp_path: Path) -> None:
    spawn(model_file(tmp_path, ECHO_MODEL), env={"CLIPPER_PORT": str(frontend.port),
                                                 "CLIPPER_HEARTBEAT_INTERVAL": "0.1",
                                                 "CLIPPER_SESSION_TIMEOUT": "0.6"})
    first, *frames = frontend.recv(timeout=30)
    assert frames == HEARTBEAT
    second, *frames = frontend.recv(timeout=3.0)  # no resend before an answer: a new session instead
    assert (frames, second != first) == (HEARTBEAT, True)
    frontend.reply_heartbeat(second, 1)
    assert frontend.recv()[1:4] == [b"", u32(0), b"m"]
    idents = []
    while len(set(idents)) < 2:  # heartbeats every 0.1 s, unanswered: a new socket after 0.6 s
        ident, *frames = frontend.recv(timeout=3.0)
        assert frames == HEARTBEAT
        idents.append(ident)
    assert idents[0] == second and idents.count(second) >= 3


@needs_r
def test_sigterm_exits_0(frontend: Frontend, spawn, tmp_path: Path) -> None:
    proc = spawn(model_file(tmp_path, ECHO_MODEL), env={"CLIPPER_PORT": str(frontend.port)})
    frontend.register(timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT_S) == 0


@needs_r
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"CLIPPER_MODEL_VERSION": "1"}, "model name is required: set CLIPPER_MODEL_NAME"),
        ((), {"CLIPPER_MODEL_NAME": "m"}, "model version is required: set CLIPPER_MODEL_VERSION"),
        ((str(R_DIR / "examples" / "noop.R"),), {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1",
                                                  "CLIPPER_INPUT_TYPE": "complex"}, "unknown input type 'complex'"),
        ((str(R_DIR / "examples" / "noop.R"),), {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1",
                                                  "CLIPPER_PORT": "x"}, "invalid port 'x'"),
        ((), {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1"}, "no model"),
        (("/nonexistent/model.R",), {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1"}, "does not exist"),
        ((str(R_DIR / "container.R"),), {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1",
                                         "CLIPPER_R_FUNCTION": "nope"}, "cannot load"),
    ],
)
def test_bad_configuration_exits_2(spawn, args, env, message) -> None:
    proc = spawn(*args, env=env, base_env=False)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert message in err.decode()


@needs_r
def test_a_model_without_predict_is_refused(spawn, tmp_path: Path) -> None:
    proc = spawn(model_file(tmp_path, "f <- function(inputs) inputs"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "does not define a function named predict" in err.decode()


# ---------------------------------------------------------------------- the deployer


def test_save_r_function_takes_files_rds_and_source(tmp_path: Path) -> None:
    src = model_file(tmp_path, "predict <- function(inputs) inputs\n")
    for func in (src, "predict <- function(inputs) inputs"):
        d = Path(r_deployer.save_r_function(func))
        try:
            assert sorted(p.name for p in d.iterdir()) == ["model.R"]
        finally:
            subprocess.run(["rm", "-rf", str(d)], check=True)
    rds = tmp_path / "f.rds"
    rds.write_bytes(b"\x1f\x8b")
    d = Path(r_deployer.save_r_function(rds))
    assert sorted(p.name for p in d.iterdir()) == ["model.rds"]
    subprocess.run(["rm", "-rf", str(d)], check=True)
    with pytest.raises(Exception, match="neither a file"):
        r_deployer.save_r_function(str(tmp_path / "missing.R"))
    assert r_deployer.default_r_base_image() == "clipper/r-container:0.4.1"


@pytest.fixture(scope="module")
def local_conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    from tests.conftest import make_manager

    conn = ClipperConnection(make_manager(f"test-r-{os.getpid()}", tmp_path_factory.mktemp("r-cluster")),
                             health_check_timeout=60)
    try:
        conn.start_clipper()
        yield conn
    finally:
        conn.stop_all()


def post(conn: ClipperConnection, app: str, body: dict[str, Any]) -> dict[str, Any]:
    """The answer once the app's model answers (links reach the query frontend through Redis)."""
    deadline = time.monotonic() + 20
    while True:
        r = requests.post(f"http://{conn.get_query_addr()}/{app}/predict", json=body, timeout=20)
        assert r.status_code in (200, 404), r.text
        reply = r.json() if r.status_code == 200 else {}
        answers = reply.get("batch_predictions", [reply])
        if answers and all(a.get("default") is False for a in answers):
            return reply
        assert time.monotonic() < deadline, f"{app}: no model answer: {r.text}"
        time.sleep(0.1)


@needs_r
def test_deploy_r_function_locally(local_conn: ClipperConnection, tmp_path: Path) -> None:
    conn = local_conn
    r_deployer.create_endpoint(conn, "r-conformance", "doubles", R_DIR / "examples" / "conformance.R",
                               default_output="-1")
    assert post(conn, "r-conformance", {"input": [1.0, 2.0, 3.5]})["output"] == "3:6"
    batch = post(conn, "r-conformance", {"input_batch": [[1.0], [], [-2.0, 5.0]]})["batch_predictions"]
    assert [a["output"] for a in batch] == ["1:1", "0:0", "2:3"]
    r = requests.post(f"http://{conn.get_query_addr()}/r-conformance/predict", json={"input": [-7.0]}, timeout=20)
    assert r.json()["default"] is True and "poison" in r.json()["default_explanation"]

    conn.register_application("r-len", "strings", "none", 3_000_000)
    r_deployer.deploy_r_function(conn, "r-len", 1, "strings",
                                 "predict <- function(inputs) {\n  nchar(inputs)\n}", num_replicas=2)
    conn.link_model_to_app("r-len", "r-len")
    assert conn.cm.get_num_replicas("r-len", "1") == 2
    batch = post(conn, "r-len", {"input_batch": ["abc", "héllo", ""]})["batch_predictions"]
    assert [a["output"] for a in batch] == [3, 5, 0]  # JSON-looking outputs are embedded as JSON


@needs_r
def test_deploy_r_function_with_a_broken_model_fails_clearly(local_conn: ClipperConnection) -> None:
    with pytest.raises(Exception, match="does not define a function named predict"):
        r_deployer.deploy_r_function(local_conn, "r-broken", 1, "doubles", "f <- function(inputs) inputs\n")


# ---------------------------------------------------------------------- Docker




@needs_r
@pytest.mark.docker
def test_deploy_r_function_with_docker(tmp_path: Path, current_images: float) -> None:
    problem = docker_problem()
    if problem:
        pytest.skip(f"needs a Docker engine: {problem}")
    from clipper import DockerContainerManager
    from clipper.ports import free_ports
    from tests.test_docker_manager import purge

    name = f"r-{uuid.uuid4().hex[:8]}"
    network = f"{name}-net"
    query, mgmt, rpc, redis = free_ports(4)
    cm = DockerContainerManager(cluster_name=name, clipper_query_port=query, clipper_management_port=mgmt,
                                clipper_rpc_port=rpc, redis_port=redis, docker_network=network)
    conn = ClipperConnection(cm, health_check_timeout=120)
    try:
        conn.start_clipper()
        r_deployer.create_endpoint(conn, "r-docker", "integers", R_DIR / "examples" / "conformance.R",
                                   default_output="-1")
        assert post(conn, "r-docker", {"input": [1, 2, 3]})["output"] == "3:6"
        batch = post(conn, "r-docker", {"input_batch": [[4], [5, 6]]})["batch_predictions"]
        assert [a["output"] for a in batch] == ["1:4", "2:11"]
        r = requests.post(f"http://{conn.get_query_addr()}/r-docker/predict", json={"input": [-7]}, timeout=20)
        assert r.json()["default"] is True and "poison" in r.json()["default_explanation"]
    finally:
        try:
            conn.stop_all()
        finally:
            purge(name, network)
