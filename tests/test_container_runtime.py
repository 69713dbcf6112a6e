"""The model-container runtime over real ZeroMQ sockets: the test plays Clipper's frontend ROUTER.

The frames the test sends are built here by hand with `struct` (not with the codec under test),
so the byte layouts of Clipper RPC v3 are checked independently.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import zmq

from clipper.model_runtime import ERROR_PREFIX, protocol, serve

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 10.0


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def u64s(*xs: int) -> bytes:
    return struct.pack(f"<{len(xs)}Q", *xs)


HEARTBEAT = [b"", u32(2)]
V3 = u32(3)


class Frontend:
    """A bare ROUTER on a free port of `host` (a loopback address), speaking the frontend side of RPC v3."""

    def __init__(self, ctx: zmq.Context, port: int | None = None, host: str = "127.0.0.1",
                 ping_ms: tuple[int, int] | None = None) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        if ping_ms is not None:  # ZMTP PINGs (interval, timeout), as the query frontend sends them
            self.sock.heartbeat_ivl, self.sock.heartbeat_timeout = ping_ms
        if port is None:
            self.sock.bind(f"tcp://{host}:*")
            port = int(self.sock.last_endpoint.decode().rsplit(":", 1)[1])
        else:
            self.sock.bind(f"tcp://{host}:{port}")
        self.host, self.port = host, port

    def close(self) -> None:
        self.sock.close(linger=0)

    def recv(self, timeout: float = TIMEOUT_S) -> list[bytes]:
        assert self.sock.poll(timeout * 1000), "no message from the container in time"
        return self.sock.recv_multipart()

    def recv_content(self, timeout: float = TIMEOUT_S) -> list[bytes]:
        """The next non-heartbeat message (the container heartbeats while idle)."""
        deadline = time.monotonic() + timeout
        while True:
            frames = self.recv(max(0.01, deadline - time.monotonic()))
            if frames[1:] != HEARTBEAT:
                return frames

    def silent(self, seconds: float) -> bool:
        """True if nothing but heartbeats arrives for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(left * 1000):
                return True
            if self.sock.recv_multipart()[1:] != HEARTBEAT:
                return False
        return True

    def reply_heartbeat(self, ident: bytes, heartbeat_type: int) -> None:
        self.sock.send_multipart([ident, b"", V3, u32(2), u32(heartbeat_type)])

    def register(self, timeout: float = TIMEOUT_S) -> tuple[bytes, list[bytes]]:
        """Answer heartbeats with type 1 until a registration arrives; return (identity, frames)."""
        asked: set[bytes] = set()
        deadline = time.monotonic() + timeout
        while True:
            ident, *frames = self.recv(max(0.01, deadline - time.monotonic()))
            if frames[:2] == [b"", u32(0)]:
                assert ident in asked
                return ident, frames
            assert frames == HEARTBEAT
            if ident not in asked:
                asked.add(ident)
                self.reply_heartbeat(ident, 1)

    def send_predict(self, ident: bytes, msg_id: int, type_code: int, inputs: list[bytes]) -> None:
        header = u64s(type_code, len(inputs), *map(len, inputs))
        self.sock.send_multipart([ident, b"", V3, u32(1), u32(msg_id), u32(0), u64s(len(header)), header, *inputs])

    def predict(self, ident: bytes, msg_id: int, type_code: int, inputs: list[bytes]) -> list[bytes]:
        """Send a predict request and return the response frames (without the identity)."""
        self.send_predict(ident, msg_id, type_code, inputs)
        who, *frames = self.recv_content()
        assert who == ident
        return frames


def wait_for_stderr(proc: subprocess.Popen, text: str, timeout: float = TIMEOUT_S) -> None:
    """Reads the process's stderr (unbuffered, from its file descriptor) until `text` appears."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], \
            f"no {text!r} on stderr within {timeout} s: {seen[-2000:].decode(errors='replace')}"
        chunk = os.read(fd, 65536)
        assert chunk, f"the process exited without writing {text!r}: {seen[-2000:].decode(errors='replace')}"
        seen += chunk


def outputs_of(response: list[bytes], msg_id: int) -> list[bytes]:
    """Check the response layout byte for byte and return its outputs."""
    assert response[:3] == [b"", u32(1), u32(msg_id)]
    outputs = response[5:]
    n = len(outputs)
    assert response[3] == u64s(8 * (1 + n))
    assert response[4] == u64s(n, *map(len, outputs))
    return outputs


def f64(*xs: float) -> bytes:
    return np.array(xs, "<f8").tobytes()


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
    """Start ``python -m clipper.model_runtime`` with Clipper's env variables; killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None, base_env: bool = True) -> subprocess.Popen:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CLIPPER_")}
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        if base_env:
            full |= {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "v1"}
        full |= env or {}
        proc = subprocess.Popen([sys.executable, "-m", "clipper.model_runtime", *args], env=full,
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT_S)


@pytest.fixture
def in_process(frontend: Frontend) -> Iterator[Callable[..., None]]:
    """Run `serve` in a thread against `frontend`; stopped and joined afterwards."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(predict: Callable, input_type: str = "doubles", **kw: float) -> None:
        t = threading.Thread(target=serve, args=(predict,), daemon=True, kwargs=dict(
            name="m", version="v1", input_type=input_type, port=frontend.port, stop_event=stop, **kw))
        t.start()
        threads.append(t)

    yield start
    stop.set()
    for t in threads:
        t.join(TIMEOUT_S)
        assert not t.is_alive(), "serve() did not stop"


def model(name: str) -> str:
    return f"clipper.model_runtime.models:{name}"


# --- wire protocol, end to end through a subprocess ------------------------------------------


def test_handshake_and_doubles_batch_byte_for_byte(frontend: Frontend, spawn, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spawn("--predict", model("sum"), env={"CLIPPER_PORT": str(frontend.port),
                                          "CLIPPER_INPUT_TYPE": "d", "CLIPPER_READY_FILE": str(ready)})
    ident, *first = frontend.recv()
    assert first == [b"", b"\x02\x00\x00\x00"]
    assert not ready.exists()
    frontend.reply_heartbeat(ident, 1)
    who, *registration = frontend.recv()
    assert who == ident
    assert registration == [b"", b"\x00\x00\x00\x00", b"m", b"v1", b"3", b"\x03\x00\x00\x00"]

    response = frontend.predict(ident, 7, 3, [f64(1.0, 2.0), f64(3.0, 4.0)])
    assert response == [
        b"",
        b"\x01\x00\x00\x00",
        b"\x07\x00\x00\x00",
        b"\x18\x00\x00\x00\x00\x00\x00\x00",
        u64s(2, 3, 3),
        b"3.0",
        b"7.0",
    ]
    deadline = time.monotonic() + TIMEOUT_S
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "CLIPPER_READY_FILE was not touched after registration"


def test_keepalive_heartbeats_while_idle_and_no_reregistration(frontend: Frontend, spawn) -> None:
    spawn("--predict", model("noop"), "--heartbeat-interval", "0.1",
          env={"CLIPPER_PORT": str(frontend.port)})
    ident, _ = frontend.register()
    for _ in range(3):
        who, *frames = frontend.recv(timeout=2.0)
        assert (who, frames) == (ident, HEARTBEAT)
        frontend.reply_heartbeat(ident, 0)  # keepalive: must not trigger a registration
    assert frontend.silent(0.5)
    # Heartbeat type 1 again (e.g. frontend restarted and forgot us): register again.
    frontend.reply_heartbeat(ident, 1)
    assert frontend.recv_content()[1:] == [b"", u32(0), b"m", b"v1", b"3", u32(3)]


@pytest.mark.parametrize(
    ("input_type", "code", "inputs", "expected"),
    [
        ("ints", 1, [np.array([1, -2, 2**31 - 1], "<i4").tobytes(), np.array([0, 0, 7], "<i4").tobytes()],
         ["[1, -2, 2147483647]", "[0, 0, 7]"]),
        ("floats", 2, [np.array([1.5, -0.25], "<f4").tobytes()], ["[1.5, -0.25]"]),
        ("doubles", 3, [f64(0.1, 1e300), f64(-3.5, 2.0)], ["[0.1, 1e+300]", "[-3.5, 2.0]"]),
        ("bytes", 0, [bytes([0, 128, 255]), bytes([1, 2, 3])], ["[0, 128, 255]", "[1, 2, 3]"]),
        ("strings", 4, ["héllo ✓".encode(), b"", b"plain"], ["héllo ✓", "", "plain"]),
    ],
)
def test_all_input_types_decoded(frontend: Frontend, spawn, input_type, code, inputs, expected) -> None:
    spawn("--predict", model("echo"), "--input-type", input_type, "--port", str(frontend.port))
    ident, registration = frontend.register()
    assert registration[4] == str(code).encode()
    out = outputs_of(frontend.predict(ident, 0, code, inputs), 0)
    assert [o.decode() for o in out] == expected


def test_sum_of_each_numeric_type(frontend: Frontend, spawn) -> None:
    spawn("--predict", model("sum"), "--input-type", "integer", "--port", str(frontend.port))
    ident, _ = frontend.register()
    ints = [np.array([2**31 - 1, 2**31 - 1], "<i4").tobytes(), np.array([-5, 2], "<i4").tobytes()]
    assert outputs_of(frontend.predict(ident, 1, 1, ints), 1) == [b"4294967294", b"-3"]


def test_unequal_length_inputs(frontend: Frontend, spawn) -> None:
    spawn("--predict", model("sum"), "--port", str(frontend.port))
    ident, _ = frontend.register()
    out = outputs_of(frontend.predict(ident, 5, 3, [f64(1.0), f64(2.0, 3.0, 4.0), f64(0.5, 0.25)]), 5)
    assert out == [b"1.0", b"9.0", b"0.75"]


def test_failing_model_answers_error_markers_and_keeps_serving(frontend: Frontend, spawn) -> None:
    proc = spawn("--predict", model("fail"), "--port", str(frontend.port))
    ident, _ = frontend.register()
    for msg_id in (3, 4):
        out = outputs_of(frontend.predict(ident, msg_id, 3, [f64(1.0), f64(2.0)]), msg_id)
        assert out == [b"\x00error:ValueError: boom"] * 2
    assert proc.poll() is None


def test_closure_model_from_func_pkl(frontend: Frontend, spawn, tmp_path: Path) -> None:
    """func.pkl + modules/ like Clipper's closure container; non-str outputs go through str()."""
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "closure_helper.py").write_text("SCALE = 10\n")

    def predict(xs):
        import closure_helper  # found through <model path>/modules

        if (xs < 0).any():
            raise RuntimeError("negative input")
        return xs.sum(axis=1) * closure_helper.SCALE  # an ndarray of float64, not str

    (tmp_path / "func.pkl").write_bytes(cloudpickle.dumps(predict, protocol=2))
    proc = spawn(env={"CLIPPER_MODEL_PATH": str(tmp_path), "CLIPPER_PORT": str(frontend.port)})
    ident, _ = frontend.register()
    assert outputs_of(frontend.predict(ident, 1, 3, [f64(1.0, 2.0), f64(0.5, 0.0)]), 1) == [b"30.0", b"5.0"]
    out = outputs_of(frontend.predict(ident, 2, 3, [f64(-1.0, 2.0), f64(0.5, 0.0)]), 2)
    assert out == [b"\x00error:RuntimeError: negative input"] * 2
    assert outputs_of(frontend.predict(ident, 3, 3, [f64(4.0, 4.0)]), 3) == [b"80.0"]
    assert proc.poll() is None


def test_batch_size_and_sleep_models(frontend: Frontend, spawn) -> None:
    spawn("--predict", model("sleep"), "--port", str(frontend.port),
          env={"CLIPPER_SLEEP_FIXED_MS": "50", "CLIPPER_SLEEP_PER_ITEM_US": "1000"})
    ident, _ = frontend.register()
    start = time.monotonic()
    out = outputs_of(frontend.predict(ident, 9, 3, [f64(1.0)] * 100), 9)
    assert time.monotonic() - start >= 0.15
    assert out == [b"100"] * 100


def test_feedback_and_malformed_messages_are_ignored(frontend: Frontend, spawn) -> None:
    proc = spawn("--predict", model("noop"), "--port", str(frontend.port))
    ident, _ = frontend.register()
    frontend.sock.send_multipart([ident, b"", V3, u32(1), u32(1), u32(1), u64s(0), b""])  # feedback
    frontend.sock.send_multipart([ident, b"", u32(4), u32(2), u32(0)])  # wrong rpc version
    frontend.sock.send_multipart([ident, b"", V3, u32(1), u32(2), u32(0), u64s(32), u64s(3, 1)])
    assert frontend.silent(0.5)
    assert outputs_of(frontend.predict(ident, 2, 3, [f64(1.0)]), 2) == [b"1.0"]
    assert proc.poll() is None


def test_reconnects_after_frontend_restart(ctx: zmq.Context, spawn) -> None:
    fe = Frontend(ctx)
    port = fe.port
    proc = spawn("--predict", model("sum"), "--port", str(port),
                 "--heartbeat-interval", "0.1", "--session-timeout", "0.5")
    try:
        ident, _ = fe.register()
        assert outputs_of(fe.predict(ident, 0, 3, [f64(1.0, 1.0)]), 0) == [b"2.0"]
    finally:
        fe.close()
    # The frontend is gone: after the session timeout the container gives up its socket and starts a new
    # session, which the restarted frontend must accept.
    wait_for_stderr(proc, "reconnecting")
    fe = Frontend(ctx, port)
    try:
        ident, registration = fe.register()
        assert registration == [b"", u32(0), b"m", b"v1", b"3", u32(3)]
        assert outputs_of(fe.predict(ident, 1, 3, [f64(2.0, 3.0)]), 1) == [b"5.0"]
    finally:
        fe.close()


def test_new_session_when_the_frontend_goes_silent(frontend: Frontend, spawn) -> None:
    """Nothing heard for the session timeout: a new socket (new routing identity) says hello."""
    spawn("--predict", model("noop"), "--port", str(frontend.port),
          "--heartbeat-interval", "0.1", "--session-timeout", "0.6")
    first, *frames = frontend.recv()
    assert frames == HEARTBEAT
    start = time.monotonic()
    second, *frames = frontend.recv(timeout=3.0)  # no resend on the unanswered first session
    assert (frames, second != first) == (HEARTBEAT, True)
    assert time.monotonic() - start >= 0.4
    frontend.reply_heartbeat(second, 1)  # now connected, then silence: heartbeats, then a new session
    assert frontend.recv()[1:4] == [b"", u32(0), b"m"]
    idents = []
    while len(set(idents)) < 2:
        ident, *frames = frontend.recv(timeout=3.0)
        assert frames == HEARTBEAT
        idents.append(ident)
    assert idents[0] == second and idents.count(second) >= 3


def test_heartbeats_and_answers_while_a_long_batch_runs(frontend: Frontend, spawn) -> None:
    """A batch that takes 1.5 s: the container keeps heartbeating every interval while it runs, answers a
    request to register, keeps a second batch for afterwards, and then answers both."""
    spawn("--predict", model("sleep"), "--port", str(frontend.port), "--heartbeat-interval", "0.1",
          env={"CLIPPER_SLEEP_FIXED_MS": "1500"})
    ident, _ = frontend.register()
    header = u64s(3, 1, 8)
    batch = [b"", V3, u32(1), None, u32(0), u64s(len(header)), header, f64(1.0)]
    frontend.sock.send_multipart([ident, *batch[:3], u32(1), *batch[4:]])
    start = time.monotonic()
    beats: list[float] = []
    asked = False
    while True:
        who, *frames = frontend.recv(timeout=5.0)
        assert who == ident
        if frames == HEARTBEAT:
            beats.append(time.monotonic() - start)
            if len(beats) == 3:  # as if the frontend had forgotten us, with a batch for us already waiting
                frontend.reply_heartbeat(ident, 1)
                frontend.sock.send_multipart([ident, *batch[:3], u32(2), *batch[4:]])
                asked = True
            else:
                frontend.reply_heartbeat(ident, 0)
        elif frames[:2] == [b"", u32(0)]:
            assert asked and frames == [b"", u32(0), b"m", b"v1", b"3", u32(3)]
            assert time.monotonic() - start < 1.4, "registered while the batch ran"
        else:
            break
    assert outputs_of(frames, 1) == [b"1"]
    assert time.monotonic() - start >= 1.5
    assert len(beats) >= 10, f"heartbeats while the batch ran: {beats}"
    gaps = [b - a for a, b in itertools.pairwise([0.0, *beats])]
    assert max(gaps) < 0.5, f"longest silence while busy: {max(gaps):.2f} s"
    who, *frames = frontend.recv_content(timeout=5.0)
    assert outputs_of(frames, 2) == [b"1"]  # the batch that arrived meanwhile


def test_a_peer_that_is_not_a_zmtp_router_is_retried_every_tenth_of_a_second_and_reported_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """An HTTP server on the frontend's port: each connection it accepts gets an HTTP answer, which the
    container's DEALER refuses at the greeting; the container warns once and connects again 0.1 s later."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[float] = []

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + b"." * 64)
                conn.recv(1024)

    threading.Thread(target=answer, daemon=True).start()
    stop = threading.Event()
    caplog.set_level(logging.WARNING, logger="clipper.model_runtime")
    t = threading.Thread(target=serve, args=(len,), daemon=True,
                         kwargs=dict(name="m", version="1", port=port, stop_event=stop))
    t.start()
    time.sleep(1.0)
    stop.set()
    t.join(TIMEOUT_S)
    listener.close()
    assert 3 <= len(accepted) <= 15, f"{len(accepted)} connections in 1 s"
    warnings = [r.getMessage() for r in caplog.records if "ZMTP" in r.getMessage()]
    assert len(warnings) == 1 and "signature" in warnings[0], warnings


def test_a_batch_that_holds_the_gil_keeps_its_connection_through_the_frontends_pings() -> None:
    """The frontend PINGs every 0.1 s and drops a connection silent for 0.5 s after a PING; the model holds
    the GIL for 1.5 s (libc's usleep called through ctypes.PyDLL), so no Python thread can answer meanwhile.
    The connection's own native keeper does: the answer comes on the same connection, which never drops."""
    ctx = zmq.Context()
    frontend = Frontend(ctx, ping_ms=(100, 500))
    monitor = frontend.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    usleep = ctypes.PyDLL(None).usleep

    def hold_the_gil(inputs: Any) -> list[str]:
        usleep(1_500_000)
        return ["held"] * len(inputs)

    try:
        stop = threading.Event()
        t = threading.Thread(target=serve, args=(hold_the_gil,), daemon=True, kwargs=dict(
            name="m", version="v1", port=frontend.port, stop_event=stop))
        t.start()
        ident, _ = frontend.register()
        start = time.monotonic()
        assert outputs_of(frontend.predict(ident, 1, 3, [f64(1.0)]), 1) == [b"held"]
        assert time.monotonic() - start >= 1.5
        assert not monitor.poll(0), "the frontend dropped the connection while the batch ran"
        stop.set()
        t.join(TIMEOUT_S)
    finally:
        monitor.close(linger=0)
        frontend.close()
        ctx.term()


def test_a_batch_longer_than_the_frontend_heartbeat_timeout(cluster, tmp_path: Path) -> None:
    """Real processes: a query frontend that drops replicas silent for 1 s, and a model whose batch takes
    3 s. The request gets the model's prediction, the batch reaches the model once, no replica is dropped."""
    fe = cluster.frontend({
        "apps": [{"name": "slow", "input_type": "doubles", "latency_slo_micros": 20_000_000,
                  "default_output": "-1.0", "models": ["m"]}],
        "models": [{"name": "m", "version": "1", "input_type": "doubles"}],
    }, heartbeat_timeout=1)
    batches = tmp_path / "batches"
    cluster.container(fe, "m", "sleep", env={"CLIPPER_SLEEP_FIXED_MS": "3000", "CLIPPER_BATCH_LOG": str(batches),
                                             "CLIPPER_HEARTBEAT_INTERVAL": "0.25"})
    fe.wait_replicas("m", 1)
    answer: list[dict] = []
    request = threading.Thread(target=lambda: answer.append(fe.predict("slow", [1.0])))
    start = time.monotonic()
    request.start()
    replicas_seen = set()
    while request.is_alive() and time.monotonic() - start < 15:
        replicas_seen.add(fe.replicas("m"))
        time.sleep(0.1)
    request.join(TIMEOUT_S)
    assert answer, "no answer"
    assert answer[0]["default"] is False and answer[0]["output"] == 1, answer[0]
    assert time.monotonic() - start >= 3.0
    assert batches.read_text().splitlines() == ["1"], "the batch reached the model more than once"
    assert replicas_seen == {1}, f"replica counts seen while the batch ran: {replicas_seen}"
    assert "dropped replica" not in fe.log_tail(100_000)


def test_sigterm_exits_cleanly(frontend: Frontend, spawn) -> None:
    proc = spawn("--predict", model("noop"), "--port", str(frontend.port))
    frontend.register()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT_S) == 0


NAMED = {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1"}
NOOP = ("--predict", "clipper.model_runtime.models:noop")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (NOOP, {"CLIPPER_MODEL_VERSION": "1"}, "model name is required: set CLIPPER_MODEL_NAME"),
        (NOOP, {"CLIPPER_MODEL_NAME": "m"}, "model version is required: set CLIPPER_MODEL_VERSION"),
        ((*NOOP, "--input-type", "complex"), NAMED, "unknown input type 'complex'"),
        (NOOP, {**NAMED, "CLIPPER_PORT": "x"}, "invalid port 'x'"),
        (NOOP, {**NAMED, "CLIPPER_RESOLVE_INTERVAL": "0"}, "argument --resolve-interval: '0' must be above 0"),
        ((), NAMED, "no model"),
        ((), {**NAMED, "CLIPPER_MODEL_PATH": "/nonexistent"}, "func.pkl does not exist"),
        (("--predict", "clipper.model_runtime.models"), NAMED, "module:function"),
        (("--predict", "clipper.model_runtime.models:nope"), NAMED, "no attribute 'nope'"),
    ],
)
def test_bad_configuration_exits_2(spawn, args, env, message) -> None:
    proc = spawn(*args, env=env, base_env=False)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 2
    assert message in err


def test_missing_model_module_exits_3(spawn) -> None:
    proc = spawn("--predict", "no_such_module_xyz:predict")
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 3
    assert "no_such_module_xyz" in err


# --- in-process: what the model receives ------------------------------------------------------


@pytest.mark.parametrize(
    ("input_type", "code", "dtype", "values"),
    [
        ("bytes", 0, np.uint8, [[0, 200, 255], [1, 2, 3]]),
        ("ints", 1, np.int32, [[1, -2], [3, 4]]),
        ("floats", 2, np.float32, [[1.5], [2.5]]),
        ("doubles", 3, np.float64, [[0.1, 0.2, 0.3]]),
    ],
)
def test_model_receives_typed_2d_arrays(frontend: Frontend, in_process, input_type, code, dtype,
                                        values) -> None:
    seen = []
    in_process(lambda xs: seen.append(xs) or ["ok"] * len(xs), input_type)
    ident, _ = frontend.register()
    inputs = [np.array(v, np.dtype(dtype).newbyteorder("<")).tobytes() for v in values]
    assert outputs_of(frontend.predict(ident, 0, code, inputs), 0) == [b"ok"] * len(values)
    (xs,) = seen
    assert isinstance(xs, np.ndarray) and xs.dtype == dtype and xs.shape == np.shape(values)
    np.testing.assert_array_equal(xs, np.array(values, dtype))
    assert xs.flags.writeable


def test_model_receives_list_for_unequal_lengths(frontend: Frontend, in_process) -> None:
    seen = []
    in_process(lambda xs: seen.append(xs) or ["ok"] * len(xs), "ints")
    ident, _ = frontend.register()
    frontend.predict(ident, 0, 1, [np.array([1, 2], "<i4").tobytes(), np.array([3], "<i4").tobytes()])
    (xs,) = seen
    assert isinstance(xs, list) and [x.tolist() for x in xs] == [[1, 2], [3]]
    assert all(x.dtype == np.int32 for x in xs)


def test_input_type_mismatch_fails_the_batch(frontend: Frontend, in_process) -> None:
    in_process(lambda xs: ["ok"] * len(xs), "ints")
    ident, _ = frontend.register()
    out = outputs_of(frontend.predict(ident, 1, 4, ["ä".encode(), b"x"]), 1)
    expected = b"\x00error:request input type strings does not match the container's input type integers"
    assert out == [expected] * 2
    assert outputs_of(frontend.predict(ident, 2, 1, [u32(5)]), 2) == [b"ok"]


def test_strings_are_str(frontend: Frontend, in_process) -> None:
    seen = []
    in_process(lambda xs: seen.append(xs) or [s.upper() for s in xs], "strings")
    ident, _ = frontend.register()
    assert outputs_of(frontend.predict(ident, 0, 4, [b"ab", "\u00e9".encode()]), 0) == [b"AB", "É".encode()]
    assert seen == [["ab", "é"]]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (["a", "b", "c"], b"model returned 3 outputs for a batch of 4"),
        ("abcd", b"model returned str, expected a list of 4 outputs"),
        (None, b"model returned NoneType, expected a list of 4 outputs"),
    ],
)
def test_bad_model_output_fails_the_batch(frontend: Frontend, in_process, result, message) -> None:
    calls = []

    def predict(xs):
        calls.append(xs)
        return result if len(calls) == 1 else ["fine"] * len(xs)

    in_process(predict)
    ident, _ = frontend.register()
    out = outputs_of(frontend.predict(ident, 0, 3, [f64(1.0)] * 4), 0)
    assert out == [ERROR_PREFIX + message] * 4
    assert outputs_of(frontend.predict(ident, 1, 3, [f64(1.0)] * 2), 1) == [b"fine"] * 2


def test_outputs_are_sent_as_their_str_and_outputs_that_cannot_be_fail_the_batch(frontend: Frontend,
                                                                                   in_process) -> None:
    results = iter([np.array([0.5, 2.0]), [1, None], ["ok", "\ud800"], (b"x", "\u00e9")])
    in_process(lambda xs: next(results))
    ident, _ = frontend.register()
    assert outputs_of(frontend.predict(ident, 0, 3, [f64(1.0)] * 2), 0) == [b"0.5", b"2.0"]
    assert outputs_of(frontend.predict(ident, 1, 3, [f64(1.0)] * 2), 1) == [b"1", b"None"]
    # A lone surrogate has no UTF-8: the whole batch fails, and says why.
    out = outputs_of(frontend.predict(ident, 2, 3, [f64(1.0)] * 2), 2)
    assert len(out) == 2 and out[0] == out[1] and out[0].startswith(ERROR_PREFIX + b"UnicodeEncodeError"), out
    assert outputs_of(frontend.predict(ident, 3, 3, [f64(1.0)] * 2), 3) == [b"b'x'", "\u00e9".encode()]


def test_long_error_messages_are_truncated(frontend: Frontend, in_process) -> None:
    def predict(xs):
        raise KeyError("x" * 2000)

    in_process(predict)
    ident, _ = frontend.register()
    (out,) = outputs_of(frontend.predict(ident, 0, 3, [f64(1.0)]), 0)
    assert out.startswith(ERROR_PREFIX + b"KeyError: 'xxx") and len(out) <= len(ERROR_PREFIX) + 500


def test_stop_event_stops_serve_while_nobody_answers(frontend: Frontend) -> None:
    stop = threading.Event()
    kwargs = {"name": "m", "version": "1", "port": frontend.port, "stop_event": stop,
              "session_timeout": 0.2}
    t = threading.Thread(target=serve, args=(len,), kwargs=kwargs)
    t.start()
    # A few session restarts: each new session's socket says hello with a new routing identity.
    sessions: set[bytes] = set()
    while len(sessions) < 3:
        ident, *frames = frontend.recv(timeout=TIMEOUT_S)
        assert frames == HEARTBEAT
        sessions.add(ident)
    stop.set()
    t.join(2.0)
    assert not t.is_alive()


# --- pure codec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "canonical", "code"),
    [
        ("integers ints integer int i", "integers", 1),
        ("floats float f", "floats", 2),
        ("doubles double d", "doubles", 3),
        ("strings string str strs s", "strings", 4),
        ("bytes byte b", "bytes", 0),
    ],
)
def test_input_type_aliases(names: str, canonical: str, code: int) -> None:
    for name in names.split():
        assert protocol.parse_input_type(name) == (canonical, code)


def test_unknown_input_type_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="unknown input type 'int32'.*doubles.*strings"):
        protocol.parse_input_type("int32")


def test_codec_round_trip() -> None:
    header = u64s(3, 2, 16, 8)
    frames = [b"", V3, u32(1), u32(9), u32(0), u64s(len(header)), header, f64(1.0, 2.0), f64(3.0)]
    req = protocol.parse_request(frames)
    assert req == protocol.PredictRequest(u32(9), 3, [f64(1.0, 2.0), f64(3.0)])
    assert protocol.parse_request([b"", V3, u32(2), u32(1)]) == protocol.Heartbeat(1)
    assert protocol.parse_request([b"", V3, u32(1), u32(9), u32(1)]) == protocol.FeedbackRequest(u32(9))
    with pytest.raises(protocol.ProtocolError, match="header"):
        protocol.parse_request(frames[:-1])
    with pytest.raises(protocol.ProtocolError, match="version"):
        protocol.parse_request([b"", u32(2), u32(2), u32(1)])
    assert protocol.prediction_response(u32(9), [b"x", b""]) == [
        b"", u32(1), u32(9), u64s(24), u64s(2, 1, 0), b"x", b""]
    assert protocol.error_output("ValueError: boom") == b"\x00error:ValueError: boom"
    assert json.loads(json.dumps(protocol.INPUT_TYPE_CODES)) == {
        "bytes": 0, "integers": 1, "floats": 2, "doubles": 3, "strings": 4}
