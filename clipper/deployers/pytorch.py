"""Deploy a PyTorch model with a Python function, like `clipper_admin.deployers.pytorch`.

Same functions and arguments as Clipper: ``deploy_pytorch_model(clipper_conn, name, version, input_type, func,
pytorch_model, ...)`` and ``create_endpoint``. `func(model, inputs)` gets the model and a batch of inputs and
returns one output per input (sent as ``str()``; a JSON string is embedded as JSON in the answer)::

    import json, torch
    from clipper.deployers.pytorch import as_tensor, deploy_pytorch_model

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    def predict(model, inputs):
        return [json.dumps(row) for row in model(as_tensor(inputs, model)).tolist()]

    deploy_pytorch_model(clipper_conn, "iris-net", 1, "doubles", predict, model)

How the model is saved (the framework's own way), in the model directory (`clipper.deployers.framework`):

* a ``torch.export.ExportedProgram`` (``torch.export.export``; export it with a dynamic batch dimension, e.g.
  ``dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)``, since batches vary in size): ``torch.export.save`` to
  ``model.pt2``; the replica needs no Python code of the model, and the program keeps the mode it was exported
  in (export it after ``model.eval()``);
* a TorchScript module (``torch.jit.script``/``trace``; deprecated by PyTorch in favour of ``torch.export``):
  ``torch.jit.save`` to ``model.pt``; no Python code of the model either;
* any other ``torch.nn.Module``: its ``state_dict()`` with ``torch.save`` to ``pytorch_weights.pt`` (loaded with
  ``weights_only=True``; buffers kept out of the state dict are saved beside it), and the module's structure
  with cloudpickle, its tensors on the ``meta`` device (no weights), to ``pytorch_model.pkl``. As with the closure
  deployer, classes defined in ``__main__``/a notebook travel by value; classes of an importable module travel
  by reference, so that module must be importable by the replicas (`pkgs_to_install`).

Each replica (`load_model`, called once by the runtime) loads the model on its device: ``cuda`` when
``torch.cuda.is_available()`` (which honours ``CUDA_VISIBLE_DEVICES``), else ``cpu``; ``CLIPPER_TORCH_DEVICE``
(e.g. ``cpu``, ``cuda:1``) overrides it. The model is put in ``eval()`` mode (an exported program keeps its
own, see above) and every batch runs under ``torch.inference_mode()``. `as_tensor` turns a batch into one
tensor on the model's device.

Images: the default base image is ``clipper/pytorch-container`` (PyPI's torch with its CUDA libraries, built
locally on first use by `clipper.images`; several GB). With `LocalContainerManager` the replicas use your
interpreter, which must have torch (``pip install 'clipper-serving[torch]'``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework
from .python import serialize_object

if TYPE_CHECKING:
    import torch

    from ..admin.connection import ClipperConnection

__all__ = ["DEVICE_ENV", "IMAGE", "as_tensor", "create_endpoint", "default_predict", "deploy_pytorch_model",
           "load_model",
           "model_device", "save_pytorch_model", "select_device"]

logger = logging.getLogger("clipper.deployers.pytorch")

#: The image recipe (`clipper.images`) the models are built from by default.
IMAGE = "pytorch-container"
#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.pytorch:load_model"
#: Files of a model directory.
EXPORTED_PROGRAM_RELATIVE_PATH = "model.pt2"
TORCHSCRIPT_RELATIVE_PATH = "model.pt"
PYTORCH_MODEL_RELATIVE_PATH = "pytorch_model.pkl"
PYTORCH_WEIGHTS_RELATIVE_PATH = "pytorch_weights.pt"
#: Environment variable that forces the replicas' device (``cpu``, ``cuda``, ``cuda:1``...).
DEVICE_ENV = "CLIPPER_TORCH_DEVICE"


# ----------------------------------------------------------------------------- admin side


def save_pytorch_model(model_dir: Path, pytorch_model: Any) -> dict[str, str]:
    """Writes `pytorch_model` into `model_dir` (``torch.export`` program: ``model.pt2``; TorchScript: ``model.pt``;
    any other module: state dict + module structure) and returns the manifest fields that say how."""
    import torch

    if isinstance(pytorch_model, torch.export.ExportedProgram):
        torch.export.save(pytorch_model, str(model_dir / EXPORTED_PROGRAM_RELATIVE_PATH))
        return {"format": "exported_program", "model": EXPORTED_PROGRAM_RELATIVE_PATH}
    if isinstance(pytorch_model, torch.jit.ScriptModule):
        torch.jit.save(pytorch_model, str(model_dir / TORCHSCRIPT_RELATIVE_PATH))
        return {"format": "torchscript", "model": TORCHSCRIPT_RELATIVE_PATH}
    if not isinstance(pytorch_model, torch.nn.Module):
        raise ClipperException(f"pytorch_model must be a torch.nn.Module (or a TorchScript module), "
                               f"got {type(pytorch_model).__name__}")
    state = pytorch_model.state_dict()
    # buffers registered with persistent=False are not in the state dict, yet the model needs them
    extra_buffers = {n: b.detach().cpu() for n, b in pytorch_model.named_buffers() if n not in state}
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in state.items()}, "buffers": extra_buffers},
               str(model_dir / PYTORCH_WEIGHTS_RELATIVE_PATH))
    skeleton = copy.deepcopy(pytorch_model).to("meta")  # the structure only: no weights twice
    (model_dir / PYTORCH_MODEL_RELATIVE_PATH).write_bytes(serialize_object(skeleton))
    return {"format": "state_dict", "module": PYTORCH_MODEL_RELATIVE_PATH, "weights": PYTORCH_WEIGHTS_RELATIVE_PATH}


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func: Callable[[Any, Any], Any] | None,
                    pytorch_model: Any, default_output: str = "None", version: Any = 1, slo_micros: int = 3000000,
                    labels: list[str] | None = None, registry: str | None = None, base_image: str = "default",
                    num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys `pytorch_model` with `func` as model `name` and links them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_pytorch_model(clipper_conn, name, version, input_type, func, pytorch_model, base_image, labels, registry,
                         num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_pytorch_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                         func: Callable[[Any, Any], Any] | None, pytorch_model: Any, base_image: str = "default",
                         labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                         batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                         gpus: int | list[int | str] | None = None) -> None:
    """Deploys `pytorch_model` with `func` (``func(model, inputs) -> outputs``; None: `default_predict`, each
    output row as JSON) as model ``name:version``. `gpus`: the GPUs each replica gets
    (`ClipperConnection.deploy_model`); the model runs on ``cuda`` where one is visible.

    `base_image` ``"default"``: ``clipper/pytorch-container`` (built locally on first use). Returns once the
    replicas have registered and the version is current. Errors saving the model raise ClipperException."""
    model_dir = framework.save_framework_model(func, "pytorch", LOADER,
                                               lambda d: save_pytorch_model(d, pytorch_model))
    logger.info("Torch model saved")
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image,
                                     labels, registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def select_device() -> torch.device:
    """The replicas' device: ``$CLIPPER_TORCH_DEVICE`` when set, else ``cuda`` when a GPU is visible
    (``torch.cuda.is_available()`` honours ``CUDA_VISIBLE_DEVICES``), else ``cpu``."""
    import torch

    forced = os.environ.get(DEVICE_ENV, "").strip()
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: Any) -> torch.device:
    """The device of `model`'s first parameter (or buffer); ``cpu`` for a model with neither."""
    import torch

    for tensors in (model.parameters(), model.buffers()):
        for t in tensors:
            return t.device
    return torch.device("cpu")


def _model_float_dtype(model: Any) -> torch.dtype:
    import torch

    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def as_tensor(inputs: Any, model: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A batch of inputs (the runtime's 2-D array, or a list of equal-length arrays) as one tensor on `model`'s
    device (cpu without a model). `dtype` default: the model's floating dtype (float32 without a model) for
    ``floats``/``doubles`` inputs, int64 for ``integers``."""
    import numpy as np
    import torch

    array = inputs if isinstance(inputs, np.ndarray) else np.stack([np.asarray(x) for x in inputs])
    if dtype is None:
        if array.dtype.kind == "f":
            dtype = _model_float_dtype(model) if model is not None else torch.float32
        elif array.dtype.kind in "iu":
            dtype = torch.int64
    device = model_device(model) if model is not None else torch.device("cpu")
    return torch.as_tensor(array, dtype=dtype, device=device)


def default_predict(model: Any, inputs: Any) -> list[str]:
    """The batch function when `func` is None: ``model(as_tensor(inputs, model))``, each row of the output as JSON
    (a number for a scalar row)."""
    import json

    out = model(as_tensor(inputs, model))
    return [json.dumps(row) for row in out.detach().cpu().tolist()]


def load_model(model_dir: Path, func: Callable[[Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): the model on `select_device()`, in eval mode, and the batch
    function ``func(model, inputs)`` (`default_predict` when `func` is None) run under ``torch.inference_mode()``."""
    import cloudpickle
    import torch

    device = select_device()
    fmt = manifest.get("format")
    if fmt == "exported_program":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(torch.export.load(str(model_dir / manifest["model"])), device)
        model = program.module()  # in the mode it was exported in: eval() is not supported there
    elif fmt == "torchscript":
        model = torch.jit.load(str(model_dir / manifest["model"]), map_location=device)
    elif fmt == "state_dict":
        with open(model_dir / manifest["module"], "rb") as f:
            skeleton = cloudpickle.load(f)
        saved = torch.load(str(model_dir / manifest["weights"]), map_location=device, weights_only=True)
        model = skeleton.to_empty(device=device)
        model.load_state_dict(saved["state_dict"])
        with torch.no_grad():
            for buffer_name, value in saved.get("buffers", {}).items():
                model.get_buffer(buffer_name).copy_(value)
    else:
        raise ValueError(f"unknown PyTorch model format {fmt!r} in the manifest")
    if fmt != "exported_program":
        model.eval()
    logger.info(f"PyTorch {torch.__version__}: model loaded on {device}"
                   + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        with torch.inference_mode():
            return call(model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    predict.device = device  # type: ignore[attr-defined]
    return predict
