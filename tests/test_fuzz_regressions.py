"""The fuzz corpora, replayed as ordinary tests, and one regression test per crash the fuzzers found.

Every input under fuzz/corpus/<target>/ goes through its target's invariant check (fuzz/target_*.py:
the same code atheris runs, without atheris). The Rust corpora (rust_core/fuzz/corpus/) are replayed
end to end: decode_inbound's messages are sent to a real engine over ZeroMQ, which must drop them and
keep answering; json_fragment's model outputs go through the query path as a model's answer, and the
response must stay valid JSON. `bash fuzz/run.sh` runs the fuzzers themselves.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from clipper.state import redis_server_binary  # noqa: E402
from fuzz import PYTHON_TARGETS, corpus_files  # noqa: E402
from fuzz.common import split_frames  # noqa: E402

RUST_CORPUS = REPO / "rust_core" / "fuzz" / "corpus"

needs_redis = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")


def _cases(target: str, root: Path | None = None) -> list:
    files = corpus_files(target) if root is None else corpus_files(target, root)
    marks = [needs_redis] if target == "admin_json" else []
    return [pytest.param(f, id=f"{target}/{f.name}", marks=marks) for f in files]


_targets: dict = {}


@pytest.fixture(scope="module")
def targets():
    """Target name -> its set-up harness (made on first use, closed after the module)."""
    yield _get_target
    for target in _targets.values():
        target.close()
    _targets.clear()


def _get_target(name: str):
    if name not in _targets:
        import importlib

        _targets[name] = importlib.import_module(PYTHON_TARGETS[name]).setup()
    return _targets[name]


def test_every_target_has_a_corpus():
    for name in PYTHON_TARGETS:
        assert corpus_files(name), f"fuzz/corpus/{name} is empty"
    for name in ("decode_inbound", "json_fragment"):
        assert corpus_files(name, RUST_CORPUS), f"rust_core/fuzz/corpus/{name} is empty"


def test_corpora_stay_small():
    total = sum(f.stat().st_size for root in (REPO / "fuzz" / "corpus", RUST_CORPUS) for f in root.rglob("*")
                if f.is_file())
    assert total < 1 << 20, f"the committed corpora hold {total} bytes; keep them under 1 MiB"


@pytest.mark.parametrize("path", [c for name in PYTHON_TARGETS for c in _cases(name)])
def test_python_corpus(targets, path: Path):
    targets(path.parent.name).check(path.read_bytes())


# ---------------------------------------------------------------------- Rust corpora, end to end

@pytest.fixture(scope="module")
def engine():
    from clipper import rust_core

    engine = rust_core.Engine("tcp://127.0.0.1:0", heartbeat_timeout=60.0)
    yield engine
    engine.close()


def _heartbeat_answered(sock, timeout_ms: int = 5000) -> bool:
    from clipper.model_runtime import protocol

    sock.send_multipart(protocol.heartbeat())
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg = protocol.parse_request(sock.recv_multipart())
            if isinstance(msg, protocol.Heartbeat):
                return True
    return False


@pytest.mark.parametrize("path", _cases("decode_inbound", RUST_CORPUS))
def test_decode_inbound_corpus_through_the_engine(engine, path: Path):
    """The engine's RPC thread takes each message (as a container would send it) and still answers heartbeats."""
    import zmq

    frames = split_frames(path.read_bytes())
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(engine.rpc_endpoint)
        if frames:
            sock.send_multipart(frames)
        assert _heartbeat_answered(sock), "the engine stopped answering after this message"
    finally:
        sock.close(linger=0)


@pytest.mark.parametrize("path", _cases("json_fragment", RUST_CORPUS))
def test_json_fragment_corpus_through_the_query_path(targets, path: Path):
    """Each input is a model's raw output: the echo_b app's model answers with its (base64-decoded) input."""
    body = json.dumps({"input": base64.b64encode(path.read_bytes()).decode()}).encode()
    request = b"POST /echo_b/predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    targets("http_request").check(b"\x00" + request)


# ---------------------------------------------------------------------- crashes the fuzzers found

def _echo_request(app: str, value: str) -> bytes:
    body = json.dumps({"input": value}).encode()
    return b"\x00POST /%s/predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (app.encode(), len(body), body)


#: Model outputs the json_fragment fuzzer found (its crash inputs, as the model returned them) that reached a 200
#: body which was not valid JSON: rust_core::engine::json_fragment checked outputs with serde_json IgnoredAny,
#: which skips strings without validating UTF-8 or \\u escapes and numbers without checking their range, and
#: spliced them in verbatim (fixed: it parses into serde_json::Value; such outputs are embedded as strings).
JSON_FRAGMENT_CRASHES = [
    pytest.param(b'":\x98"', id="invalid-utf8-in-string"),  # crash input [34, 58, 152, 34]
    pytest.param(b'"ca\\udc00"', id="lone-surrogate-escape"),  # serde_json: lone leading surrogate in hex escape
    pytest.param(b"20E2000", id="number-out-of-range"),  # serde_json: number out of range (orjson: infinity)
]


@pytest.mark.parametrize("output", JSON_FRAGMENT_CRASHES)
def test_model_output_keeps_the_response_json(targets, output: bytes):
    """The echo_b app's model answers with its input: the output reaches the body through the real engine."""
    targets("http_request").check(_echo_request("echo_b", base64.b64encode(output).decode()))


@needs_redis
def test_admin_body_with_a_lone_surrogate_is_a_400(targets):
    from fuzz.target_admin import routes

    # the fuzzer's crash input: route byte 8 (get_application in today's route order), then the body
    body = b'{"name": "a0\\udc00"}'
    targets("admin_json").check(bytes([routes().index("/admin/get_application")]) + body)


@needs_redis
def test_admin_error_text_with_a_lone_surrogate_is_answered(targets):
    from fuzz.target_admin import routes

    body = (b'{"model_name":"\\ud800:","model_version":"1","labels":[],"input_type":"d","container_name":"c",'
            b'"model_data_path":"p","batch_size":1}')
    targets("admin_json").check(bytes([routes().index("/admin/add_model")]) + body)


def test_feedback_label_with_deep_nesting_is_answered(targets):
    body = b'{"uid": 0, "input": "1", "label": "' + b"[" * 1200 + b'"}'
    request = b"\x00POST /vote/update HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    targets("http_request").check(request)
