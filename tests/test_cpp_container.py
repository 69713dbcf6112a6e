"""The C++ model-container library (containers/cpp), built with CMake into a cache (tests/conformance/cpp_build).

Wire level: the test plays the frontend's ROUTER with frames built by hand (`struct`), against the
``clipper-conformance``, ``clipper-noop`` and ``clipper-sleep`` binaries. Then over a real query frontend
(the `cluster` fixture), and under Docker (marked ``docker``): the ``clipper/cpp-container`` image, a model
built FROM it with ``build_and_deploy_model``, served by a `DockerContainerManager` cluster.

Skipped when cmake, a compiler, libzmq or cppzmq are missing (the reason names the Debian packages).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import zmq
from conftest import needs_docker

from tests.conformance import cpp_build
from tests.test_container_runtime import HEARTBEAT, TIMEOUT_S, V3, Frontend, outputs_of, u32, u64s

pytestmark = pytest.mark.skipif(cpp_build.unavailable() is not None, reason=str(cpp_build.unavailable()))


def pack(fmt: str, *xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}{fmt}", *xs)


CODES = {"bytes": 0, "integers": 1, "floats": 2, "doubles": 3, "strings": 4}


class Router(Frontend):
    """A bare ROUTER on a free port, speaking the frontend side of RPC v3 (tests/test_container_runtime.py's),
    whose `predict` returns the outputs after checking the response layout byte for byte."""

    def predict(self, ident: bytes, msg_id: int, code: int, inputs: list[bytes]) -> list[bytes]:
        return outputs_of(super().predict(ident, msg_id, code, inputs), msg_id)


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def router(ctx: zmq.Context) -> Iterator[Router]:
    r = Router(ctx)
    yield r
    r.sock.close(linger=0)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts a built example (``conformance`` by default) with Clipper's environment; killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(port: int | None, input_type: str = "doubles", example: str = "conformance",
              env: dict[str, str] | None = None, base_env: bool = True) -> subprocess.Popen:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CLIPPER_")}
        if base_env:
            full |= {"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "v1", "CLIPPER_INPUT_TYPE": input_type,
                     "CLIPPER_PORT": str(port)}
        full |= env or {}
        proc = subprocess.Popen([str(cpp_build.binary(f"clipper-{example}"))], env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT_S)


# --------------------------------------------------------------------------------------- wire level


def test_handshake_and_doubles_batch_byte_for_byte(router: Router, spawn, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    spawn(router.port, example="noop", env={"CLIPPER_READY_FILE": str(ready)})
    ident, frames = router.register()
    assert frames == [b"", u32(0), b"m", b"v1", b"3", u32(3)]
    assert router.predict(ident, 7, 3, [pack("d", 1.0, 2.0), pack("d", 3.0, 4.0)]) == [b"1.0", b"1.0"]
    assert ready.exists()


@pytest.mark.parametrize(("input_type", "inputs", "expected"), [
    ("integers", [pack("i", 1, 2, 3), b"", pack("i", -5, 2)], [b"3:6", b"0:0", b"2:-3"]),
    ("floats", [pack("f", 1.0, 2.0, 3.0), pack("f", -2.0)], [b"3:6", b"1:-2"]),
    ("doubles", [pack("d", 1, 2, 3.0), b"", pack("d", 2.0**20 - 1, -3.0)], [b"3:6", b"0:0", b"2:1048572"]),
    ("bytes", [b"\x01\x02\xff", b"", b"\x00"], [b"3:258", b"0:0", b"1:0"]),
    ("strings", ["héllo".encode(), b"", b"a b"], ["6:héllo".encode(), b"0:", b"3:a b"]),
])
def test_conformance_model_every_input_type(router: Router, spawn, input_type, inputs, expected) -> None:
    spawn(router.port, input_type)
    ident, frames = router.register()
    assert frames[4] == str(CODES[input_type]).encode()
    assert router.predict(ident, 1, CODES[input_type], inputs) == expected


@pytest.mark.parametrize(("input_type", "fmt"), [("integers", "i"), ("floats", "f"), ("doubles", "d")])
def test_misaligned_and_large_frames(router: Router, spawn, input_type: str, fmt: str) -> None:
    """Frames of several KB after frames of odd sizes land at any offset of libzmq's receive buffer (zero-copy):
    the views must read them right whether they are aligned or copied."""
    spawn(router.port, input_type)
    ident, _ = router.register()
    inputs, expected = [], []
    for k in range(1, 40):
        values = list(range(k, k + 100 * k % 700 + 1))
        inputs.append(pack(fmt, *values))
        expected.append(f"{len(values)}:{sum(values)}".encode())
    assert router.predict(ident, 2, CODES[input_type], inputs) == expected


@pytest.mark.parametrize(("input_type", "poison"), [
    ("integers", pack("i", -7, 1)), ("floats", pack("f", -7.0)), ("doubles", pack("d", -7.0, 3.0)),
    ("bytes", b"\xee\x01"), ("strings", b"poison"),
])
def test_poisoned_batch_answers_error_markers_and_keeps_serving(router: Router, spawn, input_type, poison) -> None:
    proc = spawn(router.port, input_type)
    ident, _ = router.register()
    good = {"integers": pack("i", 1), "floats": pack("f", 1.0), "doubles": pack("d", 1.0), "bytes": b"\x01",
            "strings": b"x"}[input_type]
    outputs = router.predict(ident, 3, CODES[input_type], [good, poison])
    assert len(outputs) == 2 and outputs[0] == outputs[1]
    assert outputs[0].startswith(b"\x00error:") and b"poison" in outputs[0]
    assert router.predict(ident, 4, CODES[input_type], [good]) == [b"1:x" if input_type == "strings" else b"1:1"]
    assert proc.poll() is None


def test_wrong_input_type_and_bad_sizes_fail_the_batch(router: Router, spawn) -> None:
    spawn(router.port, "integers")
    ident, _ = router.register()
    [out] = router.predict(ident, 5, 3, [pack("d", 1.0)])
    assert out == b"\x00error:request input type doubles does not match the container's input type integers"
    [out] = router.predict(ident, 6, 1, [b"\x01\x02\x03"])
    assert out.startswith(b"\x00error:") and b"not a multiple of 4" in out
    assert router.predict(ident, 7, 1, [pack("i", 2)]) == [b"1:2"]


def test_malformed_messages_and_feedback_are_dropped(router: Router, spawn) -> None:
    proc = spawn(router.port, "doubles")
    ident, _ = router.register()
    header = u64s(3, 2, 8, 8)
    for frames in (
        [b"x"],                                                               # too short
        [b"", V3],                                                            # too short
        [b"junk", V3, u32(2), u32(0)],                                        # no delimiter
        [b"", u32(4), u32(2), u32(0)],                                        # another RPC version
        [b"", V3, b"\x02\x00", u32(0)],                                       # a short u32
        [b"", V3, u32(9)],                                                    # unknown message type
        [b"", V3, u32(1), u32(1), u32(0), u64s(32), header, pack("d", 1.0)],  # 2 announced, 1 sent
        [b"", V3, u32(1), u32(1), u32(0), u64s(99), header, pack("d", 1.0), pack("d", 2.0)],  # bad length
        [b"", V3, u32(1), u32(1), u32(0), u64s(32), header, pack("d", 1.0), b"\x00"],  # sizes differ
        [b"", V3, u32(1), u32(1), u32(7)],                                    # unknown request type
        [b"", V3, u32(1), u32(1), u32(1)],                                    # feedback: ignored
    ):
        router.sock.send_multipart([ident, *frames])
    assert router.predict(ident, 8, 3, [pack("d", 2.0, 3.0)]) == [b"2:5"]
    proc.kill()
    err = proc.communicate(timeout=TIMEOUT_S)[1]
    assert err.count("dropping malformed message") == 10, err
    assert "feedback requests are not supported" in err


def test_keepalive_heartbeats_while_idle(router: Router, spawn) -> None:
    spawn(router.port, env={"CLIPPER_HEARTBEAT_INTERVAL": "0.1"})
    ident, _ = router.register()
    start = time.monotonic()
    beats = 0
    while time.monotonic() - start < 1.0:
        who, *frames = router.recv(1.0)
        assert who == ident and frames == HEARTBEAT
        beats += 1
        router.reply_heartbeat(ident, 0)
    assert 5 <= beats <= 15


def test_heartbeats_and_answers_while_a_long_batch_runs(router: Router, spawn) -> None:
    """A batch that takes 1.5 s: the keeper thread heartbeats every interval meanwhile, answers a request to
    register at once, keeps a batch that arrives meanwhile for afterwards."""
    spawn(router.port, example="sleep", env={"CLIPPER_HEARTBEAT_INTERVAL": "0.1", "CLIPPER_SLEEP_FIXED_MS": "1500"})
    ident, _ = router.register()
    router.send_predict(ident, 1, 3, [pack("d", 1.0)])
    start = time.monotonic()
    beats: list[float] = []
    asked = False
    while True:
        who, *frames = router.recv(timeout=5.0)
        assert who == ident
        if frames == HEARTBEAT:
            beats.append(time.monotonic() - start)
            if len(beats) == 3:
                router.reply_heartbeat(ident, 1)
                router.send_predict(ident, 2, 3, [pack("d", 1.0)])
                asked = True
            else:
                router.reply_heartbeat(ident, 0)
        elif frames[:2] == [b"", u32(0)]:
            assert asked and frames == [b"", u32(0), b"m", b"v1", b"3", u32(3)]
            assert time.monotonic() - start < 1.4, "registered only after the batch"
        else:
            break
    assert outputs_of(frames, 1) == [b"1"]
    assert len(beats) >= 10, f"heartbeats while the batch ran: {beats}"
    gaps = [b - a for a, b in itertools.pairwise([0.0, *beats])]
    assert max(gaps) < 0.5, f"longest silence while busy: {max(gaps):.2f} s"
    who, *frames = router.recv_content(timeout=5.0)
    assert outputs_of(frames, 2) == [b"1"]


def test_new_session_when_the_frontend_goes_silent(router: Router, spawn) -> None:
    proc = spawn(router.port, env={"CLIPPER_SESSION_TIMEOUT": "0.5", "CLIPPER_HEARTBEAT_INTERVAL": "0.1"})
    first, _ = router.register()
    start = time.monotonic()
    while True:  # ignore heartbeats: after 0.5 s a new socket (identity) says hello
        who, *frames = router.recv(timeout=3.0)
        if who != first:
            break
    assert frames == HEARTBEAT and time.monotonic() - start >= 0.4
    router.reply_heartbeat(who, 1)
    who2, *frames = router.recv_content()
    assert who2 == who and frames == [b"", u32(0), b"m", b"v1", b"3", u32(3)]
    proc.kill()
    assert "reconnecting" in proc.communicate(timeout=TIMEOUT_S)[1]


def test_reregisters_after_the_frontend_restarts(ctx: zmq.Context, spawn) -> None:
    r = Router(ctx)
    port = r.port
    spawn(port, env={"CLIPPER_SESSION_TIMEOUT": "1", "CLIPPER_HEARTBEAT_INTERVAL": "0.2"})
    ident, _ = r.register()
    r.sock.close(linger=0)
    time.sleep(0.3)
    r2 = Router(ctx, port)
    try:
        ident2, frames = r2.register(timeout=TIMEOUT_S)
        assert frames[2:4] == [b"m", b"v1"]
        assert r2.predict(ident2, 0, 3, [pack("d", 4.0)]) == [b"1:4"]
    finally:
        r2.sock.close(linger=0)


def test_sigterm_exits_0_at_once(router: Router, spawn) -> None:
    proc = spawn(router.port)
    router.register()
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT_S) == 0
    assert time.monotonic() - start < 1.0


def test_sigterm_while_nobody_answers(spawn) -> None:
    proc = spawn(1)  # nothing listens on port 1
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT_S) == 0


@pytest.mark.parametrize(("env", "message"), [
    ({"CLIPPER_MODEL_VERSION": "1"}, "set CLIPPER_MODEL_NAME"),
    ({"CLIPPER_MODEL_NAME": "m"}, "set CLIPPER_MODEL_VERSION"),
    ({"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1", "CLIPPER_INPUT_TYPE": "complex"},
     "unknown CLIPPER_INPUT_TYPE 'complex'"),
    ({"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1", "CLIPPER_PORT": "x"}, "invalid CLIPPER_PORT 'x'"),
    ({"CLIPPER_MODEL_NAME": "m", "CLIPPER_MODEL_VERSION": "1", "CLIPPER_SESSION_TIMEOUT": "0"},
     "invalid CLIPPER_SESSION_TIMEOUT"),
])
def test_bad_configuration_exits_2(spawn, env, message) -> None:
    proc = spawn(None, env=env, base_env=False)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 2 and message in err


@pytest.mark.parametrize("alias", ["d", "Doubles", "double"])
def test_input_type_aliases(router: Router, spawn, alias: str) -> None:
    spawn(router.port, alias)
    assert router.register()[1][4] == b"3"


# --------------------------------------------------------------------------------------- over a query frontend


def _config(*models: tuple[str, str]) -> dict:
    return {
        "apps": [{"name": f"{m}-app", "input_type": t, "latency_slo_micros": 5_000_000, "default_output": "-1.0",
                  "models": [m]} for m, t in models],
        "models": [{"name": m, "version": "1", "input_type": t} for m, t in models],
    }


def _start(cluster, fe, model: str, example: str, input_type: str, **env: str) -> subprocess.Popen:
    container_env = {"CLIPPER_MODEL_NAME": model, "CLIPPER_MODEL_VERSION": "1", "CLIPPER_IP": "127.0.0.1",
                     "CLIPPER_PORT": str(fe.rpc_port), "CLIPPER_INPUT_TYPE": input_type, **env}
    return cluster._spawn([str(cpp_build.binary(f"clipper-{example}"))],
                          cluster._log_file(f"cpp-{model}"), container_env)


def test_noop_and_conformance_through_the_query_frontend(cluster) -> None:
    fe = cluster.frontend(_config(("noop", "doubles"), ("conf", "integers"), ("words", "strings")))
    _start(cluster, fe, "noop", "noop", "doubles")
    _start(cluster, fe, "conf", "conformance", "integers")
    _start(cluster, fe, "words", "conformance", "strings")
    for model in ("noop", "conf", "words"):
        fe.wait_replicas(model, 1)
    assert fe.predict("noop-app", [1.0, 2.0]) == {"query_id": 0, "output": 1.0, "default": False}
    batch = fe.predict_batch("noop-app", [[1.0], [2.0, 3.0], []])
    assert [b["output"] for b in batch] == [1.0, 1.0, 1.0] and not any(b["default"] for b in batch)
    assert fe.predict("conf-app", [1, 2, 3])["output"] == "3:6"
    assert [b["output"] for b in fe.predict_batch("conf-app", [[4], [], [-1, -2]])] == ["1:4", "0:0", "2:-3"]
    assert fe.predict("words-app", "héllo")["output"] == "6:héllo"
    poisoned = fe.predict_batch("words-app", ["fine", "poison"])
    for answer in poisoned:
        assert answer["default"] is True and answer["output"] == -1.0
        assert answer["default_explanation"].startswith("Model failed to predict:") and "poison" in \
            answer["default_explanation"]
    assert fe.predict("words-app", "again")["output"] == "5:again"


def test_reregisters_after_the_query_frontend_is_killed(cluster) -> None:
    config = _config(("conf", "doubles"))
    fe = cluster.frontend(config)
    _start(cluster, fe, "conf", "conformance", "doubles", CLIPPER_SESSION_TIMEOUT="2")
    fe.wait_replicas("conf", 1)
    assert fe.predict("conf-app", [1.0, 2.0])["output"] == "2:3"
    fe.proc.send_signal(signal.SIGKILL)
    fe.proc.wait(TIMEOUT_S)
    fe2 = cluster.frontend(config, ports=(fe.port, fe.rpc_port))
    fe2.wait_replicas("conf", 1, timeout=20)
    assert fe2.predict("conf-app", [5.0])["output"] == "1:5"


def test_a_batch_longer_than_the_frontend_heartbeat_timeout(cluster) -> None:
    fe = cluster.frontend({
        "apps": [{"name": "slow", "input_type": "doubles", "latency_slo_micros": 20_000_000, "default_output": "-1.0",
                  "models": ["m"]}],
        "models": [{"name": "m", "version": "1", "input_type": "doubles"}],
    }, heartbeat_timeout=1)
    _start(cluster, fe, "m", "sleep", "doubles", CLIPPER_SLEEP_FIXED_MS="2500", CLIPPER_HEARTBEAT_INTERVAL="0.25")
    fe.wait_replicas("m", 1)
    start = time.monotonic()
    answer = fe.predict("slow", [1.0])
    assert answer["default"] is False and answer["output"] == 1
    assert time.monotonic() - start >= 2.5
    assert "dropped replica" not in fe.log_tail(100_000)


# --------------------------------------------------------------------------------------- Docker





USER_MODEL = r"""
#include <numeric>
#include <clipper/model.hpp>
struct Sum : clipper::Model {
  std::vector<std::string> predict_doubles(const clipper::Batch<double>& inputs) override {
    std::vector<std::string> out;
    for (auto x : inputs) out.push_back(std::to_string(std::accumulate(x.begin(), x.end(), 0.0)));
    return out;
  }
};
int main() { Sum m; return clipper::run(m); }
"""


@pytest.fixture(scope="module")
def cpp_image(current_images: float) -> str:
    from clipper import images

    started = time.monotonic()
    images.build_images(["cpp-container"], progress=None)
    print(f"\n[docker] clipper/cpp-container ready in {time.monotonic() - started:.1f} s")
    return images.image_ref("cpp-container")


@pytest.mark.docker
@needs_docker
def test_the_image_holds_the_binaries_and_no_compiler(cpp_image: str) -> None:
    import docker

    client = docker.from_env(timeout=120)
    out = client.containers.run(cpp_image, ["sh", "-c", "ls /usr/local/bin; command -v c++ cmake || echo none"],
                                remove=True).decode()
    assert {"clipper-model", "clipper-noop", "clipper-conformance", "clipper-build-model"} <= set(out.split())
    assert out.strip().endswith("none")


@pytest.mark.docker
@needs_docker
def test_docker_cluster_serves_the_cpp_noop_and_a_user_model(cpp_image: str, tmp_path: Path) -> None:
    """A DockerContainerManager cluster: the image as is (clipper-noop), and a model built FROM it with
    build_and_deploy_model from a folder holding model.cpp (compiled by the image's ONBUILD trigger)."""
    from clipper import ClipperConnection, DockerContainerManager
    from clipper.ports import free_ports

    name = f"cpp-{uuid.uuid4().hex[:8]}"
    query, mgmt, rpc, redis = free_ports(4)
    cm = DockerContainerManager(cluster_name=name, clipper_query_port=query, clipper_management_port=mgmt,
                                clipper_rpc_port=rpc, redis_port=redis, docker_network=f"{name}-net")
    conn = ClipperConnection(cm, health_check_timeout=120)
    url = f"http://127.0.0.1:{query}"
    model_dir = tmp_path / "sum"
    model_dir.mkdir()
    (model_dir / "model.cpp").write_text(USER_MODEL)
    try:
        conn.start_clipper()
        conn.register_application(name="noop-app", input_type="doubles", default_output="-1.0", slo_micros=5_000_000)
        conn.deploy_model(name="noop", version="1", input_type="doubles", image=cpp_image)
        conn.link_model_to_app(app_name="noop-app", model_name="noop")
        conn.register_application(name="sum-app", input_type="doubles", default_output="-1.0", slo_micros=5_000_000)
        conn.build_and_deploy_model(name="sum", version="1", input_type="doubles", model_data_path=str(model_dir),
                                    base_image=cpp_image)
        conn.link_model_to_app(app_name="sum-app", model_name="sum")
        for app, value, expected in (("noop-app", [1.0], 1.0), ("sum-app", [1.5, 2.0], 3.5)):
            deadline = time.monotonic() + 30
            while True:
                r = requests.post(f"{url}/{app}/predict", json={"input": value}, timeout=30)
                if r.status_code == 200 and r.json()["default"] is False:
                    break
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert r.json()["output"] == expected
        r = requests.post(f"{url}/sum-app/predict", json={"input_batch": [[1.0], [2.0, 3.0]]}, timeout=30)
        assert [b["output"] for b in r.json()["batch_predictions"]] == [1.0, 5.0]
    finally:
        with contextlib.suppress(Exception):
            conn.stop_all()
        import docker

        client = docker.from_env(timeout=120)
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{name}-"):
                    with contextlib.suppress(Exception):
                        client.images.remove(tag)
