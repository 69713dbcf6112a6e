"""The Java model container library (containers/java) over real query frontends, and its Docker image.

Local tests build the jars once (cached by `tests.conformance.java_build`) and skip, with the apt packages
to install, when java/javac or a ZeroMQ Java binding is missing. The behaviour every container shares is
checked by tests/test_conformance.py (impl_java); these tests cover what is specific to the Java library:
the no-op example, a model compiled from its sources at start (CLIPPER_MODEL_PATH), a batch longer than the
frontend's heartbeat timeout, malformed frames, SIGTERM, and the clipper/java-container image (marked
``docker``), also as the base image of a user's model (`DockerContainerManager.build_model`).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Cluster, Frontend, docker_engine, needs_docker

from tests.conformance import java_build

REASON = java_build.unavailable()
needs_java = pytest.mark.skipif(REASON is not None, reason=REASON or "")
START_TIMEOUT_S = 30.0

SLEEPY_MODEL = """
import ai.clipper.container.Model;
import java.nio.DoubleBuffer;
import java.util.ArrayList;
import java.util.List;

/** Sleeps CLIPPER_SLEEP_MS per batch, then answers the sum of each input. */
public class SleepyModel implements Model {
    @Override
    public List<String> predictDoubles(List<DoubleBuffer> inputs) throws Exception {
        Thread.sleep(Long.parseLong(System.getenv().getOrDefault("CLIPPER_SLEEP_MS", "0")));
        List<String> out = new ArrayList<>();
        for (DoubleBuffer x : inputs) {
            double s = 0;
            for (int i = 0; i < x.remaining(); i++) s += x.get(i);
            out.add(Double.toString(s));
        }
        return out;
    }
}
"""


def config(*models: tuple[str, str]) -> dict[str, Any]:
    """One app per (model, input type), named like the model with an "a-" prefix."""
    return {
        "apps": [{"name": f"a-{m}", "input_type": t, "latency_slo_micros": 10_000_000, "default_output": "-1",
                  "models": [m]} for m, t in models],
        "models": [{"name": m, "version": "1", "input_type": t} for m, t in models],
    }


def start(cluster: Cluster, fe: Frontend | None, model: str, input_type: str, argv: list[str],
          env: dict[str, str] | None = None, port: int | None = None) -> subprocess.Popen:
    """A Java container process (killed by the cluster at the end of the test)."""
    log = cluster.workdir / f"java-{model}-{len(cluster.procs)}.log"
    container_env = {**os.environ, "CLIPPER_MODEL_NAME": model, "CLIPPER_MODEL_VERSION": "1",
                     "CLIPPER_IP": "127.0.0.1", "CLIPPER_PORT": str(port or fe.rpc_port),
                     "CLIPPER_INPUT_TYPE": input_type, **(env or {})}
    proc = cluster._spawn(argv, log, container_env)  # its own session: the cluster's close kills it
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def predict(fe: Frontend, model: str, body: dict[str, Any], proc: subprocess.Popen) -> dict[str, Any]:
    """POSTs until the model answers (not the default "no connected models"); the answer."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        answer = requests.post(f"{fe.url}/a-{model}/predict", json=body, timeout=30).json()
        first = answer["batch_predictions"][0] if "batch_predictions" in answer else answer
        if "No connected models" not in first.get("default_explanation", ""):
            return answer
        assert proc.poll() is None, f"container exited {proc.returncode}:\n{Path(proc.log_path).read_text()}"
        assert time.monotonic() < deadline, f"never registered:\n{Path(proc.log_path).read_text()}"
        time.sleep(0.1)


@needs_java
def test_noop_model_single_and_batch(cluster: Cluster) -> None:
    fe = cluster.frontend(config(("noop", "doubles"), ("noop-s", "strings")))
    procs = [start(cluster, fe, m, t, java_build.command("ai.clipper.examples.NoopModel"))
             for m, t in (("noop", "doubles"), ("noop-s", "strings"))]
    answer = predict(fe, "noop", {"input": [1.0, 2.0]}, procs[0])
    assert (answer["output"], answer["default"]) == (1.0, False)
    answer = predict(fe, "noop", {"input_batch": [[1.0], [2.0, 3.0], []]}, procs[0])
    assert [(p["output"], p["default"]) for p in answer["batch_predictions"]] == [(1.0, False)] * 3
    answer = predict(fe, "noop-s", {"input_batch": ["a", "héllo"]}, procs[1])
    assert [p["output"] for p in answer["batch_predictions"]] == [1.0, 1.0]


@needs_java
def test_conformance_model_answers_and_fails_batches_with_the_error_marker(cluster: Cluster) -> None:
    fe = cluster.frontend(config(("conf", "integers")))
    proc = start(cluster, fe, "conf", "integers", java_build.command("ai.clipper.examples.ConformanceModel"))
    assert predict(fe, "conf", {"input": [1, 2, 3]}, proc)["output"] == "3:6"
    answer = predict(fe, "conf", {"input": [-7, 1]}, proc)
    assert answer["default"] is True and answer["output"] == -1
    assert answer["default_explanation"].startswith("Model failed to predict: IllegalArgumentException: poison")
    assert predict(fe, "conf", {"input_batch": [[5], []]}, proc)["batch_predictions"][1]["output"] == "0:0"


@needs_java
def test_batch_longer_than_the_heartbeat_timeout_compiled_from_sources(cluster: Cluster) -> None:
    """A model compiled at start from CLIPPER_MODEL_PATH sleeps 2.5 s per batch, beyond the frontend's 1 s
    heartbeat timeout: the socket thread heartbeats meanwhile, so the replica is never dropped."""
    model_dir = cluster.workdir / "sleepy"
    model_dir.mkdir()
    (model_dir / "SleepyModel.java").write_text(SLEEPY_MODEL)
    fe = cluster.frontend(config(("sleepy", "doubles")), heartbeat_timeout=1.0)
    proc = start(cluster, fe, "sleepy", "doubles", java_build.command(),
                 {"CLIPPER_MODEL_PATH": str(model_dir), "CLIPPER_SLEEP_MS": "2500",
                  "CLIPPER_HEARTBEAT_INTERVAL": "0.2"})
    started = time.monotonic()
    answer = predict(fe, "sleepy", {"input": [1.5, 2.0]}, proc)
    assert answer["output"] == 3.5 and answer["default"] is False, answer
    assert time.monotonic() - started >= 2.5
    assert "dropped replica" not in fe.log_path.read_text()
    assert "compiled 1 Java source(s)" in Path(proc.log_path).read_text()


@needs_java
def test_malformed_frames_are_skipped_and_sigterm_exits_zero(cluster: Cluster) -> None:
    """A ROUTER playing the frontend sends garbage, then a well-formed handshake and batch (docs/protocol.md's
    worked example, answered by the conformance model): the container logs and skips the garbage."""
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.rcvtimeo = int(START_TIMEOUT_S * 1000)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        proc = start(cluster, None, "m", "doubles", java_build.command("ai.clipper.examples.ConformanceModel"),
                     port=port)
        ident, empty, hb = router.recv_multipart()
        assert (empty, hb) == (b"", struct.pack("<I", 2))
        u32 = struct.Struct("<I").pack
        garbage = [[b"x"], [b"", u32(4), u32(2), u32(1)], [b"", u32(3), b"\x01"], [b"", u32(3), u32(9), b""],
                   [b"", u32(3), u32(1), u32(7), u32(0), struct.pack("<Q", 32), struct.pack("<4Q", 3, 5, 8, 8)],
                   [b"", u32(3), u32(1), u32(7), u32(0), struct.pack("<Q", 24), struct.pack("<3Q", 3, 1, 16),
                    b"\0" * 8]]
        for frames in garbage:
            router.send_multipart([ident, *frames])
        router.send_multipart([ident, b"", u32(3), u32(2), u32(1)])  # please register
        while (msg := router.recv_multipart())[2] == u32(2):
            pass  # heartbeats
        assert msg[1:] == [b"", u32(0), b"m", b"1", b"3", u32(3)]
        request = [b"", u32(3), u32(1), u32(7), u32(0), struct.pack("<Q", 32), struct.pack("<4Q", 3, 2, 16, 16),
                   struct.pack("<2d", 1.0, 2.0), struct.pack("<2d", 3.0, 4.0)]
        router.send_multipart([ident, *request])
        while (msg := router.recv_multipart())[2] == u32(2):
            pass
        assert msg[1:] == [b"", u32(1), u32(7), struct.pack("<Q", 24), struct.pack("<3Q", 2, 3, 3), b"2:3", b"2:7"]
        log = Path(proc.log_path).read_text()
        assert log.count("dropping malformed message") == len(garbage), log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        router.close()
        ctx.term()


# ---------------------------------------------------------------------- Docker




CLIENT, _ = docker_engine()
LABEL = {"ai.clipper.test": "test_java_container"}

USER_MODEL = """
package com.example;

import ai.clipper.container.Model;
import java.util.ArrayList;
import java.util.List;

public class Shout implements Model {
    @Override
    public List<String> predictStrings(List<String> inputs) {
        List<String> out = new ArrayList<>();
        for (String s : inputs) out.add(s.toUpperCase() + "!");
        return out;
    }
}
"""


@pytest.fixture(scope="module")
def docker_stack(tmp_path_factory: pytest.TempPathFactory, current_images: float) -> Iterator[dict[str, Any]]:
    """clipper/java-container (built when missing or out of date) and a query frontend container on a network
    (the default images are up to date: `conftest.current_images`)."""
    from clipper import images

    if images._inspect(CLIENT, images.image_ref("base")) is None and not os.environ.get(images.BASE_ENV):
        pytest.skip("clipper/base is missing: build it first (python -m clipper.images build base)")
    images.build_images(["java-container"], progress=print)
    suffix = uuid.uuid4().hex[:8]
    conf = tmp_path_factory.mktemp("config")
    conf.chmod(0o755)
    (conf / "apps.json").write_text(json.dumps(config(("noop", "doubles"), ("shout", "strings"))))
    made: list[Any] = []
    try:
        net = CLIENT.networks.create(f"clipper-java-{suffix}", driver="bridge", labels=LABEL)
        made.append(net)
        frontend = CLIENT.containers.run(
            images.image_ref("query_frontend"), ["--config", "/config/apps.json", "--insecure"],
            name=f"query_frontend-{suffix}", detach=True, network=net.name, labels=LABEL,
            volumes={str(conf): {"bind": "/config", "mode": "ro"}}, ports={"1337/tcp": ("127.0.0.1", None)})
        made.append(frontend)
        frontend.reload()
        port = int(frontend.attrs["NetworkSettings"]["Ports"]["1337/tcp"][0]["HostPort"])
        yield {"net": net, "frontend": frontend, "url": f"http://127.0.0.1:{port}", "made": made, "suffix": suffix,
               "images": images}
    finally:
        for thing in reversed(made):
            try:
                thing.remove(force=True) if hasattr(thing, "logs") else thing.remove()
            except Exception as e:  # noqa: BLE001 - keep cleaning
                print(f"cleanup of {thing}: {e}")


def _run_model(stack: dict[str, Any], image: str, model: str, input_type: str, command: list[str]) -> Any:
    container = CLIENT.containers.run(
        image, command, name=f"{model}_1-{stack['suffix']}", detach=True, network=stack["net"].name, labels=LABEL,
        environment={"CLIPPER_MODEL_NAME": model, "CLIPPER_MODEL_VERSION": "1", "CLIPPER_INPUT_TYPE": input_type,
                     "CLIPPER_IP": stack["frontend"].name})
    stack["made"].append(container)
    return container


def _predict_until(stack: dict[str, Any], model: str, body: dict[str, Any], *containers: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    answer: Any = None
    while time.monotonic() < deadline:
        try:
            answer = requests.post(f"{stack['url']}/a-{model}/predict", json=body, timeout=10).json()
            if answer.get("default") is False:
                return answer
        except requests.RequestException as e:
            answer = e
        time.sleep(0.5)
    logs = "\n".join(f"--- {c.name}\n{c.logs(tail=40).decode(errors='replace')}" for c in containers)
    raise AssertionError(f"{model}: {answer}\n{logs}")


@pytest.mark.docker
@needs_docker
def test_image_serves_the_noop_example_and_stops_on_sigterm(docker_stack: dict[str, Any]) -> None:
    image = docker_stack["images"].image_ref("java-container")
    noop = _run_model(docker_stack, image, "noop", "doubles", ["ai.clipper.examples.NoopModel"])
    assert _predict_until(docker_stack, "noop", {"input": [1.0, 2.0]}, noop, docker_stack["frontend"])["output"] == 1.0
    deadline = time.monotonic() + 30
    while (health := CLIENT.api.inspect_container(noop.id)["State"].get("Health", {}).get("Status")) != "healthy":
        assert time.monotonic() < deadline, f"noop is {health}"
        time.sleep(0.5)
    started = time.monotonic()
    noop.stop(timeout=10)
    assert noop.wait(timeout=10)["StatusCode"] == 0
    assert time.monotonic() - started < 5


@pytest.mark.docker
@needs_docker
def test_image_as_the_base_of_a_user_model(docker_stack: dict[str, Any], tmp_path: Path) -> None:
    """`build_model(..., base_image="clipper/java-container:0.1.0")` with a folder holding a Java source: the
    ONBUILD step compiles it into the image, which serves the one Model class it finds."""
    from clipper import DockerContainerManager

    model_dir = tmp_path / "shout"
    (model_dir / "com" / "example").mkdir(parents=True)
    (model_dir / "com" / "example" / "Shout.java").write_text(USER_MODEL)
    manager = DockerContainerManager(cluster_name=f"javatest-{docker_stack['suffix']}")
    tag = manager.build_model("shout", "1", str(model_dir), docker_stack["images"].image_ref("java-container"))
    try:
        shout = _run_model(docker_stack, tag, "shout", "strings", [])
        assert _predict_until(docker_stack, "shout", {"input": "héllo"}, shout)["output"] == "HÉLLO!"
        assert "compiled" not in shout.logs().decode()  # compiled when the image was built, not at start
        shout.remove(force=True)
    finally:
        CLIENT.images.remove(tag, force=True)
