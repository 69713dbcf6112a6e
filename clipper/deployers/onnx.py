"""Serve ONNX models with ONNX Runtime; deploy a PyTorch model through ONNX export, like `clipper_admin.deployers.onnx`.

Clipper exported a PyTorch model to ONNX and served it with Caffe2's ONNX backend; Caffe2 is dead, so the ONNX
file is served by ONNX Runtime here. Clipper's functions keep their names and arguments:
``deploy_pytorch_model(clipper_conn, name, version, input_type, inputs, func, pytorch_model, ...)`` (`inputs`:
an example input for the export) and ``create_pytorch_endpoint``; `onnx_backend` is ``"onnxruntime"`` (Clipper's
``"caffe2"`` is accepted with a warning and served by ONNX Runtime too). New: ``deploy_onnx_model`` /
``create_endpoint`` serve any ONNX model (a file, its bytes or an ``onnx.ModelProto``: from PyTorch, or from
scikit-learn, TensorFlow... through their converters).

`func(model, inputs)` gets an `OnnxModel` and a batch of inputs and returns one output per input. The model's
``run(inputs)`` is Caffe2's backend call, so Clipper's functions work unchanged::

    def predict(model, inputs):
        return [str(row) for row in model.run(np.array(inputs).astype(np.float32))[0]]

and ``model.session`` is the ``onnxruntime.InferenceSession`` for anything else. `func` None (`default_predict`):
the batch goes to the model's first input (as its element type) and each row of the first output comes back
as JSON.

The export (``torch.onnx.export(..., dynamo=True)``, which needs ``onnx`` and ``onnxscript`` beside torch on the
admin side: ``pip install 'clipper-serving[onnx]'``) marks the first dimension of every input and output as the
batch dimension, so batches of any size run. The model is exported in eval mode.

Replicas (`load_model`, once per replica) open an ``InferenceSession`` with the CUDA execution provider when
ONNX Runtime has it (``onnxruntime-gpu``; ``CUDA_VISIBLE_DEVICES`` decides which GPU), else the CPU one;
``CLIPPER_ONNX_PROVIDERS`` (comma-separated, e.g. ``CPUExecutionProvider``) overrides the choice. Images: the
default base image is ``clipper/onnx-container`` (the CPU ``onnxruntime`` from PyPI, no torch; built locally
on first use by `clipper.images`). With `LocalContainerManager` the replicas use your interpreter, which needs
``onnxruntime``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework

if TYPE_CHECKING:
    import numpy as np

    from ..admin.connection import ClipperConnection

__all__ = ["IMAGE", "OnnxModel", "PROVIDERS_ENV", "create_endpoint", "create_pytorch_endpoint", "default_predict",
           "deploy_onnx_model", "deploy_pytorch_model", "export_pytorch_model", "load_model", "select_providers"]

logger = logging.getLogger("clipper.deployers.onnx")

#: The image recipe (`clipper.images`) the models are built from by default.
IMAGE = "onnx-container"
#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.onnx:load_model"
#: File of the model in a model directory (Clipper's name).
MODEL_RELATIVE_PATH = "model.onnx"
#: Environment variable that forces the replicas' execution providers (comma-separated).
PROVIDERS_ENV = "CLIPPER_ONNX_PROVIDERS"
#: Backends `onnx_backend` accepts: ONNX Runtime, and Clipper's Caffe2 (served by ONNX Runtime).
BACKENDS = ("onnxruntime", "caffe2")

# ONNX tensor element types -> numpy dtype names (ONNX Runtime's "tensor(<type>)" strings)
_ONNX_TYPES = {"float": "float32", "double": "float64", "float16": "float16", "int8": "int8", "int16": "int16",
               "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
               "uint64": "uint64", "bool": "bool", "string": "object"}


# ----------------------------------------------------------------------------- admin side


def _model_bytes(onnx_model: Any) -> bytes:
    """The serialised model: from a path, bytes, or anything with ``SerializeToString`` (``onnx.ModelProto``)."""
    if isinstance(onnx_model, (bytes, bytearray, memoryview)):
        return bytes(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        path = Path(onnx_model)
        if not path.is_file():
            raise ClipperException(f"ONNX model file {path} does not exist")
        return path.read_bytes()
    serialize = getattr(onnx_model, "SerializeToString", None)
    if callable(serialize):
        return serialize()
    model_proto = getattr(onnx_model, "model_proto", None)  # torch.onnx.ONNXProgram
    if model_proto is not None:
        return model_proto.SerializeToString()
    raise ClipperException(f"onnx_model must be a path, bytes or an onnx.ModelProto, got {type(onnx_model).__name__}")


def save_onnx_model(model_dir: Path, onnx_model: Any) -> dict[str, str]:
    """Writes `onnx_model` to ``model_dir/model.onnx``; the manifest fields."""
    (model_dir / MODEL_RELATIVE_PATH).write_bytes(_model_bytes(onnx_model))
    return {"model": MODEL_RELATIVE_PATH}


def export_pytorch_model(pytorch_model: Any, inputs: Any, path: str | os.PathLike[str]) -> None:
    """``torch.onnx.export`` of `pytorch_model` (in eval mode) with the example `inputs` (a tensor or a tuple of
    them) to `path`, the first dimension of every input and output dynamic (the batch)."""
    import torch

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    dynamic = tuple({0: torch.export.Dim.DYNAMIC} if isinstance(a, torch.Tensor) and a.dim() > 0 else None
                    for a in args)
    was_training = pytorch_model.training
    pytorch_model.eval()
    try:
        program = torch.onnx.export(pytorch_model, args, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    except ImportError as e:
        raise ClipperException(f"exporting to ONNX needs onnx and onnxscript beside torch "
                               f"(pip install 'clipper-serving[onnx]'): {e}") from e
    finally:
        pytorch_model.train(was_training)
    if program is None:
        raise ClipperException("torch.onnx.export returned no program")
    program.save(str(path))


def _check_backend(onnx_backend: str) -> None:
    if onnx_backend == "caffe2":
        warnings.warn("Caffe2 is no longer maintained: the ONNX model is served by ONNX Runtime (the model object "
                      "keeps Caffe2's run(inputs))", stacklevel=3)
    elif onnx_backend not in BACKENDS:
        raise ClipperException(f"{onnx_backend} ONNX backend is not supported: use onnxruntime")


def create_pytorch_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str, inputs: Any,
                            func: Callable[[Any, Any], Any] | None, pytorch_model: Any, default_output: str = "None",
                            version: Any = 1, slo_micros: int = 3000000, labels: list[str] | None = None,
                            registry: str | None = None, base_image: str | None = None, num_replicas: int = 1,
                            onnx_backend: str = "onnxruntime", batch_size: int = -1,
                            pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys `pytorch_model` through ONNX as model `name`, links them."""
    _check_backend(onnx_backend)
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_pytorch_model(clipper_conn, name, version, input_type, inputs, func, pytorch_model, base_image, labels,
                         registry, num_replicas, onnx_backend, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_pytorch_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str, inputs: Any,
                         func: Callable[[Any, Any], Any] | None, pytorch_model: Any, base_image: str | None = None,
                         labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                         onnx_backend: str = "onnxruntime", batch_size: int = -1,
                         pkgs_to_install: list[str] | None = None, *,
                         gpus: int | list[int | str] | None = None) -> None:
    """Exports `pytorch_model` to ONNX (`inputs`: an example input) and deploys it with `func`
    (``func(model, inputs)``, `model` an `OnnxModel`; None: `default_predict`) as model ``name:version``, served
    by ONNX Runtime from ``clipper/onnx-container`` (`base_image` None or ``"default"``). Errors of the export
    raise ClipperException (Clipper only logged them)."""
    _check_backend(onnx_backend)

    def save(model_dir: Path) -> dict[str, str]:
        export_pytorch_model(pytorch_model, inputs, model_dir / MODEL_RELATIVE_PATH)
        return {"model": MODEL_RELATIVE_PATH}

    model_dir = framework.save_framework_model(func, "onnx", LOADER, save)
    logger.info("Torch model has been serialized to ONNX format")
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image, labels,
                                     registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str, onnx_model: Any,
                    func: Callable[[Any, Any], Any] | None = None, default_output: str = "None", version: Any = 1,
                    slo_micros: int = 3000000, labels: list[str] | None = None, registry: str | None = None,
                    base_image: str = "default", num_replicas: int = 1, batch_size: int = -1,
                    pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys the ONNX model as model `name` and links the two."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_onnx_model(clipper_conn, name, version, input_type, onnx_model, func, base_image, labels, registry,
                      num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_onnx_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str, onnx_model: Any,
                      func: Callable[[Any, Any], Any] | None = None, base_image: str = "default",
                      labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                      batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                      gpus: int | list[int | str] | None = None) -> None:
    """Deploys an ONNX model (a ``.onnx`` path, its bytes or an ``onnx.ModelProto``) with `func`
    (``func(model, inputs)``; None: `default_predict`) as model ``name:version``, from ``clipper/onnx-container``."""
    model_dir = framework.save_framework_model(func, "onnx", LOADER, lambda d: save_onnx_model(d, onnx_model))
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image, labels,
                                     registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def _numpy_dtype(onnx_type: str) -> Any:
    import numpy as np

    inner = onnx_type[len("tensor("):-1] if onnx_type.startswith("tensor(") else onnx_type
    return np.dtype(_ONNX_TYPES.get(inner, "float32"))


class OnnxModel:
    """What `func` gets: an ONNX Runtime session with Caffe2's backend call ``run(inputs)``.

    ``session``: the ``onnxruntime.InferenceSession``; ``input_names`` / ``output_names``; ``input_dtypes``:
    the numpy dtype of each input."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.input_dtypes = [_numpy_dtype(i.type) for i in session.get_inputs()]

    def _feed(self, index: int, value: Any) -> np.ndarray:
        import numpy as np

        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        want = self.input_dtypes[index]
        return array if array.dtype == want or want == np.dtype(object) else array.astype(want)

    def run(self, inputs: Any) -> list[np.ndarray]:
        """Runs the model as Caffe2's backend did: `inputs` is one array (the first input), a list/tuple of arrays
        (the inputs in order) or a dict ``{input name: array}``; arrays are cast to the inputs' element types.
        Returns the outputs, in order."""
        if isinstance(inputs, Mapping):
            feed = {k: self._feed(self.input_names.index(k), v) for k, v in inputs.items()}
        elif isinstance(inputs, (list, tuple)) and len(self.input_names) > 1:
            feed = {n: self._feed(i, v) for i, (n, v) in enumerate(zip(self.input_names, inputs, strict=True))}
        else:
            feed = {self.input_names[0]: self._feed(0, inputs)}
        return list(self.session.run(None, feed))


def default_predict(model: OnnxModel, inputs: Any) -> list[str]:
    """The batch function when `func` is None: the batch (stacked into one array) to the first input, each row
    of the first output as JSON."""
    import json

    import numpy as np

    batch = inputs if isinstance(inputs, np.ndarray) else np.stack([np.asarray(x) for x in inputs])
    out = model.run(batch)[0]
    return [json.dumps(row) for row in out.tolist()]


def select_providers(available: Sequence[str]) -> list[str]:
    """The execution providers of the replicas' sessions: ``$CLIPPER_ONNX_PROVIDERS`` when set, else CUDA (when
    `available` has it) then CPU."""
    forced = [p.strip() for p in os.environ.get(PROVIDERS_ENV, "").split(",") if p.strip()]
    if forced:
        return forced
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or list(available)


def load_model(model_dir: Path, func: Callable[[Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): an ``InferenceSession`` of ``model.onnx`` as an `OnnxModel`, and
    the batch function ``func(model, inputs)`` (`default_predict` when `func` is None)."""
    import onnxruntime as ort

    providers = select_providers(ort.get_available_providers())
    session = ort.InferenceSession(str(model_dir / manifest.get("model", MODEL_RELATIVE_PATH)), providers=providers)
    model = OnnxModel(session)
    logger.info(f"ONNX Runtime {ort.__version__}: model loaded with {', '.join(session.get_providers())}")
    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        return call(model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    return predict
