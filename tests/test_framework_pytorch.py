"""PyTorch models (`clipper.deployers.pytorch`): deployed through a real cluster, answered over real HTTP.

Each model is made in the test (no download). Predictions through ``POST /<app>/predict``, alone and as one
batch, must equal the model's own output for the same inputs (tests/framework_checks.py); a model that raises
answers the app's default with the reason. With `LocalContainerManager` the replicas use this interpreter's
torch; the test marked ``docker`` and ``heavy`` builds ``clipper/pytorch-container`` (4.8 GB, about 5 minutes
the first time) and serves from it: it is left out of .ci/run, run it with ``python -m pytest -m heavy tests``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from conftest import needs_docker
from framework_checks import check_default_with_reason, check_predictions, docker_cluster, local_cluster

from clipper import ClipperConnection
from clipper.deployers import pytorch as pytorch_deployer

torch = pytest.importorskip("torch")

# The functions and classes of this module go to the replicas by value (the replicas cannot import tests/).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server)")

RNG = np.random.default_rng(7)
#: Inputs of the apps with 4 features: one app's inputs, alone and as a batch.
INPUTS = [[float(v) for v in row] for row in RNG.normal(size=(6, 4))]


def make_net() -> Any:
    """A small network whose class is defined here (so cloudpickle takes it by value), with a buffer that is not in
    the state dict (it must reach the replica all the same)."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, 16)
            self.out = torch.nn.Linear(16, 3)
            self.register_buffer("scale", torch.tensor([1.0, 2.0, 3.0]), persistent=False)

        def forward(self, x: Any) -> Any:
            return self.out(torch.relu(self.hidden(x))) * self.scale

    torch.manual_seed(0)
    return Net()


def rows_as_json(model: Any, inputs: Any) -> list[str]:
    """The deployed function: each output row as JSON (Clipper's `func(model, inputs)`)."""
    return [json.dumps(row) for row in model(pytorch_deployer.as_tensor(inputs, model)).tolist()]


def own_output(model: Any, x: list[float]) -> list[float]:
    """What the model says for one input, here."""
    with torch.inference_mode():
        return model(torch.tensor([x], dtype=torch.float32))[0].tolist()


class Raising(torch.nn.Module):
    """Raises on a negative first feature; otherwise the sum of the features."""

    def forward(self, x: Any) -> Any:
        if bool((x[:, 0] < 0).any()):
            raise ValueError("negative first feature")
        return x.sum(dim=1)


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipperConnection]:
    with local_cluster("test-pytorch", tmp_path_factory.mktemp("pytorch-cluster")) as c:
        yield c


# ---------------------------------------------------------------------- LocalContainerManager


def test_module_state_dict(conn: ClipperConnection) -> None:
    net = make_net()
    pytorch_deployer.create_endpoint(conn, "torch-net", "doubles", rows_as_json, net, default_output="-1",
                                     slo_micros=5_000_000)
    check_predictions(conn, "torch-net", INPUTS, lambda x: own_output(net, x))


def test_torchscript_with_the_default_function(conn: ClipperConnection) -> None:
    net = make_net().eval()
    scripted = torch.jit.trace(net, torch.zeros(1, 4))
    conn.register_application("torch-script", "doubles", "-1", 5_000_000)
    pytorch_deployer.deploy_pytorch_model(conn, "torch-script", 1, "doubles", None, scripted)
    conn.link_model_to_app("torch-script", "torch-script")
    check_predictions(conn, "torch-script", INPUTS, lambda x: own_output(net, x))


def test_exported_program_with_integer_inputs(conn: ClipperConnection) -> None:
    torch.manual_seed(1)
    bag = torch.nn.Sequential(torch.nn.Embedding(10, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2)).eval()
    program = torch.export.export(bag, (torch.zeros(2, 2, dtype=torch.int64),),
                                  dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    pytorch_deployer.create_endpoint(conn, "torch-exported", "integers", rows_as_json, program, default_output="-1",
                                     slo_micros=5_000_000)
    inputs = [[int(a), int(b)] for a, b in RNG.integers(0, 10, size=(5, 2))]
    check_predictions(conn, "torch-exported", inputs,
                      lambda x: bag(torch.tensor([x], dtype=torch.int64))[0].tolist())


def test_model_that_raises_answers_the_default_with_the_reason(conn: ClipperConnection) -> None:
    def total(model: Any, inputs: Any) -> list[str]:
        return [str(v) for v in model(pytorch_deployer.as_tensor(inputs, model)).tolist()]

    pytorch_deployer.create_endpoint(conn, "torch-raising", "doubles", total, Raising(), default_output="-1",
                                     slo_micros=5_000_000)
    check_predictions(conn, "torch-raising", [[1.0, 2.0, 3.0]], lambda x: sum(x))
    check_default_with_reason(conn, "torch-raising", [-1.0, 2.0, 3.0], -1, "ValueError: negative first feature")


def test_the_replica_loads_the_model_on_the_selected_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader the runtime calls: the model goes to ``select_device()`` (cuda when visible, else cpu;
    CLIPPER_TORCH_DEVICE forces it), in eval mode, and batches run under inference_mode."""
    from clipper.deployers import framework
    from clipper.model_runtime.loader import load_closure

    net = make_net()

    def probe(model: Any, inputs: Any) -> list[str]:
        if not torch.is_inference_mode_enabled() or model.training:
            raise AssertionError("not in inference mode, or the model is in training mode")
        return rows_as_json(model, inputs)

    model_dir = framework.save_framework_model(probe, "pytorch", pytorch_deployer.LOADER,
                                               lambda d: pytorch_deployer.save_pytorch_model(d, net))
    try:
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert pytorch_deployer.select_device().type == expected
        predict = load_closure(model_dir)
        assert predict.device.type == expected
        assert pytorch_deployer.model_device(predict.model).type == expected
        out = [json.loads(o) for o in predict(np.array(INPUTS))]
        assert np.allclose(out, [own_output(net, x) for x in INPUTS], rtol=1e-5, atol=1e-6)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible (torch reads it when CUDA initialises)
        monkeypatch.setenv(pytorch_deployer.DEVICE_ENV, "cpu")
        assert load_closure(model_dir).device == torch.device("cpu")
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


def test_a_model_that_is_not_a_module_is_refused(conn: ClipperConnection) -> None:
    from clipper import ClipperException

    with pytest.raises(ClipperException, match="pytorch_model must be a torch.nn.Module"):
        pytorch_deployer.deploy_pytorch_model(conn, "torch-bad", 1, "doubles", rows_as_json, object())


# ---------------------------------------------------------------------- Docker


@pytest.mark.docker
@pytest.mark.heavy  # clipper/pytorch-container: 4.8 GB, ~5 min to build; not in .ci/run
@needs_docker
def test_pytorch_container(current_images: float) -> None:
    """clipper/pytorch-container built (or brought up to date) with progress, then a module and a raising model
    served from it by DockerContainerManager."""
    from clipper import images

    started = time.monotonic()
    ref = images.ensure_image(pytorch_deployer.IMAGE, progress=print)
    size = images._inspect(images.docker_client(), ref)["Size"]
    print(f"\n[pytorch] {ref}: {size / 1e6:.0f} MB, ensure_image took {time.monotonic() - started:.0f} s")
    net = make_net()
    with docker_cluster("fw-torch") as dconn:
        pytorch_deployer.create_endpoint(dconn, "torch-net", "doubles", rows_as_json, net, default_output="-1",
                                         slo_micros=10_000_000)
        check_predictions(dconn, "torch-net", INPUTS, lambda x: own_output(net, x))

        def total(model: Any, inputs: Any) -> list[str]:
            return [str(v) for v in model(pytorch_deployer.as_tensor(inputs, model)).tolist()]

        pytorch_deployer.create_endpoint(dconn, "torch-raising", "doubles", total, Raising(), default_output="-1",
                                         slo_micros=10_000_000)
        check_default_with_reason(dconn, "torch-raising", [-1.0, 2.0], -1, "ValueError: negative first feature")
