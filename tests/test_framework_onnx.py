"""ONNX models served by ONNX Runtime (`clipper.deployers.onnx`): through a real cluster, over real HTTP.

An ONNX graph made in the test with ``onnx.helper`` (no torch) and a PyTorch network exported to ONNX (Clipper's
``deploy_pytorch_model`` of its ``onnx`` deployer, with a Clipper-style function calling Caffe2's ``model.run``).
Predictions through ``POST /<app>/predict``, alone and as one batch, must equal ONNX Runtime's (or PyTorch's) own
output for the same inputs (tests/framework_checks.py); an input the model rejects answers the app's default
with ONNX Runtime's reason. The test marked ``docker`` serves from ``clipper/onnx-container``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest
from conftest import needs_docker
from framework_checks import check_default_with_reason, check_predictions, docker_cluster, local_cluster

from clipper import ClipperConnection
from clipper.deployers import onnx as onnx_deployer

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# The functions and classes of this module go to the replicas by value (the replicas cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

RNG = np.random.default_rng(11)
INPUTS = [[float(v) for v in row] for row in RNG.normal(size=(6, 4))]


def affine_model() -> bytes:
    """``y = relu(x @ W + b)`` with x of shape (batch, 4), as ONNX (opset 17), made with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper

    w = RNG.normal(size=(4, 3)).astype(np.float32)
    b = RNG.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def runtime_output(model_bytes: bytes, x: list[float]) -> list[float]:
    """ONNX Runtime's own output for one input, here."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.array([x], dtype=np.float32)})[0][0].tolist()


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    with local_cluster("test-onnx", tmp_path_factory.mktemp("onnx-cluster")) as c:
        yield c


# ---------------------------------------------------------------------- LocalContainerManager


def test_onnx_file_with_the_default_function(conn: ClipperConnection, tmp_path: Any) -> None:
    model = affine_model()
    path = tmp_path / "affine.onnx"
    path.write_bytes(model)
    onnx_deployer.create_endpoint(conn, "onnx-affine", "doubles", path, default_output="-1", slo_micros=5_000_000)
    check_predictions(conn, "onnx-affine", INPUTS, lambda x: runtime_output(model, x))


def test_input_the_model_rejects_answers_the_default_with_the_reason(conn: ClipperConnection) -> None:
    model = affine_model()
    onnx_deployer.create_endpoint(conn, "onnx-rejects", "doubles", model, default_output="-1", slo_micros=5_000_000)
    check_predictions(conn, "onnx-rejects", INPUTS[:1], lambda x: runtime_output(model, x))
    check_default_with_reason(conn, "onnx-rejects", [1.0, 2.0, 3.0, 4.0, 5.0], -1, "invalid dimensions for input")


def test_pytorch_through_onnx_with_a_clipper_function(conn: ClipperConnection) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    def predict(model: Any, inputs: Any) -> list[str]:  # as Clipper's tests wrote it for Caffe2's backend
        return [json.dumps(row) for row in model.run(np.array(inputs).astype(np.float32))[0].tolist()]

    onnx_deployer.create_pytorch_endpoint(conn, "onnx-torch", "doubles", torch.zeros(1, 4), predict, net,
                                          default_output="-1", slo_micros=5_000_000)
    assert net.training  # the export put it back as it was

    def own(x: list[float]) -> list[float]:
        with torch.inference_mode():
            return net.eval()(torch.tensor([x]))[0].tolist()

    check_predictions(conn, "onnx-torch", INPUTS, own)


def test_backends(conn: ClipperConnection) -> None:
    from clipper import ClipperException

    with pytest.raises(ClipperException, match="tensorrt ONNX backend is not supported"):
        onnx_deployer.deploy_pytorch_model(conn, "onnx-x", 1, "doubles", None, None, None, onnx_backend="tensorrt")
    with pytest.raises(ClipperException, match="onnx_model must be a path, bytes or an onnx.ModelProto"):
        onnx_deployer.deploy_onnx_model(conn, "onnx-x", 1, "doubles", 42)


def test_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert onnx_deployer.select_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"]
    assert onnx_deployer.select_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setenv(onnx_deployer.PROVIDERS_ENV, "CPUExecutionProvider")
    assert onnx_deployer.select_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"]


# ---------------------------------------------------------------------- Docker


@pytest.mark.docker
@needs_docker
def test_onnx_container(current_images: float) -> None:
    """clipper/onnx-container built (or brought up to date) with progress, then an ONNX model and a rejected
    input served from it by DockerContainerManager."""
    from clipper import images

    started = time.monotonic()
    ref = images.ensure_image(onnx_deployer.IMAGE, progress=print)
    size = images._inspect(images.docker_client(), ref)["Size"]
    print(f"\n[onnx] {ref}: {size / 1e6:.0f} MB, ensure_image took {time.monotonic() - started:.0f} s")
    model = affine_model()
    with docker_cluster("fw-onnx") as dconn:
        onnx_deployer.create_endpoint(dconn, "onnx-affine", "doubles", model, default_output="-1",
                                      slo_micros=10_000_000)
        check_predictions(dconn, "onnx-affine", INPUTS, lambda x: runtime_output(model, x))
        check_default_with_reason(dconn, "onnx-affine", [1.0, 2.0], -1, "invalid dimensions for input")
