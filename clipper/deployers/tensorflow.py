"""Deploy a TensorFlow 2 model (a SavedModel) with a Python function, like `clipper_admin.deployers.tensorflow`.

Same functions and arguments as Clipper: ``deploy_tensorflow_model(clipper_conn, name, version, input_type, func,
tf_sess_or_saved_model_path, ...)`` and ``create_endpoint``. `func(model, inputs)` gets the loaded SavedModel
(``tf.saved_model.load``) and a batch of inputs (a 2-D numpy array for equal-length numeric inputs, a list of
``str`` for strings) and returns one output per input (sent as ``str()``; a JSON string is embedded as JSON in the
answer). `func` None: `default_predict` (the ``serving_default`` signature, each output row as JSON)::

    import json, tensorflow as tf
    from clipper.deployers.tensorflow import deploy_tensorflow_model

    def predict(model, inputs):
        out = model.signatures["serving_default"](x=tf.constant(inputs, tf.float32))["output_0"]
        return [json.dumps(row) for row in out.numpy().tolist()]

    deploy_tensorflow_model(clipper_conn, "tf-model", 1, "doubles", predict, "/path/to/saved_model")

`tf_sess_or_saved_model_path` (Clipper's argument name) may be:

* the path of a SavedModel directory (``tf.saved_model.save(module, path)``, or ``model.export(path)`` of a Keras
  model): copied into the model directory (``tfmodel/``);
* a Keras 3 model: exported as a SavedModel with ``model.export`` (endpoints ``serve`` and ``serving_default``);
  to serve the Keras model itself (``model.predict``), use `clipper.deployers.keras` and a ``.keras`` file;
* a ``tf.Module`` with ``tf.function``s that have input signatures: ``tf.saved_model.save``.

Clipper's TensorFlow 1 path is gone: a ``tf.compat.v1.Session``, a checkpoint (``.meta``/``.index``) or a frozen
graph ``.pb`` file is refused with a ClipperException. TensorFlow 2 has no sessions; save the model as a SavedModel
(in TF1 code, ``tf.compat.v1.saved_model.simple_save`` writes one that ``tf.saved_model.load`` reads).

Each replica loads the SavedModel once (`load_model`, named in the model's manifest). Images: the default base
image is ``clipper/tensorflow-container`` (PyPI's ``tensorflow-cpu`` and ``keras``; about 1.6 GB, built locally on
first use by `clipper.images`). With `LocalContainerManager` the replicas use your interpreter, which must have
TensorFlow (``pip install 'clipper-serving[tensorflow]'``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework
from ._batch import json_rows, plain_rows

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["IMAGE", "LOADER", "create_endpoint", "default_predict", "deploy_tensorflow_model", "load_model",
           "quiet_tensorflow_logs", "save_tensorflow_model"]

logger = logging.getLogger("clipper.deployers.tensorflow")

#: The image recipe (`clipper.images`) the models are built from by default (Keras models too).
IMAGE = "tensorflow-container"
#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.tensorflow:load_model"
#: Folder of the SavedModel in a model directory (Clipper's name).
SAVED_MODEL_RELATIVE_PATH = "tfmodel"
#: The signature `default_predict` calls.
DEFAULT_SIGNATURE = "serving_default"

_TF1_GONE = ("Clipper's TensorFlow 1 path (Session, checkpoint, frozen graph) is gone: TensorFlow 2 has no sessions. "
             "Save the model as a SavedModel (tf.saved_model.save, or model.export for Keras; TF1 code: "
             "tf.compat.v1.saved_model.simple_save) and pass its directory.")


def quiet_tensorflow_logs() -> None:
    """Keeps TensorFlow's C++ start-up messages (CPU features, oneDNN) out of the logs, unless
    ``TF_CPP_MIN_LOG_LEVEL`` says otherwise; call before importing TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ----------------------------------------------------------------------------- admin side


def _is_saved_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())


def save_tensorflow_model(model_dir: Path, tf_sess_or_saved_model_path: Any) -> dict[str, Any]:
    """Writes the SavedModel of `tf_sess_or_saved_model_path` (a SavedModel directory, a Keras model or a
    ``tf.Module``) to ``model_dir/tfmodel`` and returns the manifest fields; TF1 objects and files are refused."""
    dest = model_dir / SAVED_MODEL_RELATIVE_PATH
    obj = tf_sess_or_saved_model_path
    if isinstance(obj, (str, os.PathLike)):
        src = Path(obj)
        if _is_saved_model_dir(src):
            shutil.copytree(src, dest)
            return {"format": "saved_model", "model": SAVED_MODEL_RELATIVE_PATH, "source": "directory"}
        if src.suffix == ".pb" or (src.is_dir() and any(src.glob("*.meta"))):
            raise ClipperException(f"{src}: {_TF1_GONE}")
        if src.suffix in (".keras", ".h5"):
            raise ClipperException(f"{src} is a Keras file: deploy it with clipper.deployers.keras")
        raise ClipperException(f"TensorFlow SavedModel {src} not found (a directory holding saved_model.pb)")
    quiet_tensorflow_logs()
    import tensorflow as tf

    if isinstance(obj, tf.compat.v1.Session):
        raise ClipperException(_TF1_GONE)
    try:
        import keras
    except ImportError:  # pragma: no cover - TensorFlow 2.16+ depends on keras
        keras = None
    if keras is not None and isinstance(obj, keras.Model):
        obj.export(str(dest), format="tf_saved_model", verbose=False)
        return {"format": "saved_model", "model": SAVED_MODEL_RELATIVE_PATH, "source": "keras.Model.export"}
    if isinstance(obj, tf.Module):
        tf.saved_model.save(obj, str(dest))
        return {"format": "saved_model", "model": SAVED_MODEL_RELATIVE_PATH, "source": "tf.saved_model.save"}
    raise ClipperException("tf_sess_or_saved_model_path must be the path of a SavedModel directory, a Keras model or "
                           f"a tf.Module, got {type(obj).__name__}")


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func: Callable[[Any, Any], Any] | None, tf_sess_or_saved_model_path: Any,
                    default_output: str = "None", version: Any = 1, slo_micros: int = 3000000,
                    labels: list[str] | None = None, registry: str | None = None, base_image: str = "default",
                    num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys the SavedModel with `func` as model `name` and links them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_tensorflow_model(clipper_conn, name, version, input_type, func, tf_sess_or_saved_model_path, base_image,
                            labels, registry, num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_tensorflow_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                            func: Callable[[Any, Any], Any] | None, tf_sess_or_saved_model_path: Any,
                            base_image: str = "default", labels: list[str] | None = None,
                            registry: str | None = None, num_replicas: int = 1, batch_size: int = -1,
                            pkgs_to_install: list[str] | None = None, *,
                            gpus: int | list[int | str] | None = None) -> None:
    """Deploys a SavedModel (a directory, a Keras model or a ``tf.Module``) with `func` (``func(model, inputs) ->
    outputs``, `model` being ``tf.saved_model.load``'s object; None: `default_predict`) as model ``name:version``.

    `base_image` ``"default"``: ``clipper/tensorflow-container`` (built locally on first use). Returns once the
    replicas have registered and the version is current. Errors saving the model raise ClipperException.

    `gpus`: the GPUs each replica gets (as `ClipperConnection.deploy_model`'s). The image is a CPU build
    (``tensorflow-cpu``): TensorFlow uses a GPU where a GPU build runs (a `base_image` of yours, or
    `LocalContainerManager` with ``tensorflow[and-cuda]``)."""
    model_dir = framework.save_framework_model(func, "tensorflow", LOADER,
                                               lambda d: save_tensorflow_model(d, tf_sess_or_saved_model_path))
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image,
                                     labels, registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def default_predict(model: Any, inputs: Any) -> list[str]:
    """The batch function when `func` is None: the SavedModel's ``serving_default`` signature (its only one when it
    has a single signature) called with the batch as its single input (converted to the input's dtype); each row
    of the output as JSON (of each output, as a JSON object, when the signature has several)."""
    import numpy as np
    import tensorflow as tf

    signatures = dict(model.signatures)
    if DEFAULT_SIGNATURE in signatures:
        fn = signatures[DEFAULT_SIGNATURE]
    elif len(signatures) == 1:
        fn = next(iter(signatures.values()))
    else:
        raise ValueError(f"the SavedModel has no {DEFAULT_SIGNATURE!r} signature (it has {sorted(signatures)}): "
                         "deploy it with a func(model, inputs)")
    specs = fn.structured_input_signature[1]
    if len(specs) != 1:
        raise ValueError(f"the signature takes {len(specs)} inputs ({sorted(specs)}): deploy it with a "
                         "func(model, inputs)")
    (arg, spec), = specs.items()
    batch = inputs if isinstance(inputs, np.ndarray) else (list(inputs) if spec.dtype == tf.string
                                                          else np.stack([np.asarray(x) for x in inputs]))
    outputs = fn(**{arg: tf.constant(batch, dtype=spec.dtype)})
    if len(outputs) == 1:
        return json_rows(next(iter(outputs.values())))
    columns = {k: plain_rows(v) for k, v in outputs.items()}
    return [json.dumps(dict(zip(columns, row, strict=True))) for row in zip(*columns.values(), strict=True)]


def load_model(model_dir: Path, func: Callable[[Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): ``tf.saved_model.load`` of the SavedModel, and the batch function
    ``func(model, inputs)`` (`default_predict` when `func` is None)."""
    quiet_tensorflow_logs()
    import tensorflow as tf

    if manifest.get("format") != "saved_model":
        raise ValueError(f"unknown TensorFlow model format {manifest.get('format')!r} in the manifest")
    path = str(model_dir / manifest["model"])
    model = tf.saved_model.load(path)
    devices = [d.name for d in tf.config.list_logical_devices()]
    logger.info(f"TensorFlow {tf.__version__}: SavedModel loaded from {path} (signatures "
                f"{sorted(model.signatures)}; devices {devices})")
    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        return call(model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    return predict
