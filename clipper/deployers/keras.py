"""Deploy a Keras 3 model with a Python function, like `clipper_admin.deployers.keras`.

Same functions and arguments as Clipper: ``deploy_keras_model(clipper_conn, name, version, input_type, func,
model_path_or_object, ...)`` and ``create_endpoint``. `func(model, inputs)` gets the loaded ``keras.Model`` and a
batch of inputs (a 2-D numpy array for equal-length numeric inputs) and returns one output per input (sent as
``str()``; a JSON string is embedded as JSON in the answer). `func` None: `default_predict`
(``model.predict_on_batch``, each output row as JSON)::

    import json, keras
    from clipper.deployers.keras import deploy_keras_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])

    def predict(model, inputs):
        return [json.dumps(row) for row in model.predict_on_batch(inputs).tolist()]

    deploy_keras_model(clipper_conn, "keras-model", 1, "doubles", predict, model)

`model_path_or_object` may be a ``keras.Model`` (saved with ``model.save`` to ``model.keras``, Keras 3's format),
or the path of a ``.keras`` file, or of a legacy ``.h5`` file (Clipper's format; Keras 3 still reads it). Each
replica loads it once with ``keras.models.load_model`` (`load_model`, named in the model's manifest); custom layers
must be registered (``keras.saving.register_keras_serializable``) in a module the replica can import
(`pkgs_to_install`). A SavedModel directory is TensorFlow's format, which Keras 3 does not load as a model: deploy
it with `clipper.deployers.tensorflow`.

The backend: Keras 3 uses ``$KERAS_BACKEND`` (default ``tensorflow``) where the replica runs; the default base image
is ``clipper/tensorflow-container`` (TensorFlow with Keras 3, CPU; built locally on first use by `clipper.images`).
With `LocalContainerManager` the replicas use your interpreter, which must have Keras and its backend
(``pip install 'clipper-serving[tensorflow]'``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from . import framework
from ._batch import as_matrix, json_rows, plain_rows
from .tensorflow import IMAGE, quiet_tensorflow_logs

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["IMAGE", "LOADER", "create_endpoint", "default_predict", "deploy_keras_model", "load_model",
           "save_keras_model"]

logger = logging.getLogger("clipper.deployers.keras")

#: Loader the replica runtime calls (named in the model's manifest).
LOADER = "clipper.deployers.keras:load_model"
#: Files of the model in a model directory.
KERAS_RELATIVE_PATH = "model.keras"
H5_RELATIVE_PATH = "keras_model.h5"  # Clipper's name


# ----------------------------------------------------------------------------- admin side


def save_keras_model(model_dir: Path, model_path_or_object: Any) -> dict[str, Any]:
    """Writes the Keras model (a ``keras.Model``, or the path of a ``.keras``/``.h5`` file) into `model_dir` and
    returns the manifest fields."""
    if isinstance(model_path_or_object, (str, os.PathLike)):
        src = Path(model_path_or_object)
        if src.is_dir():
            raise ClipperException(f"{src} is a directory (a SavedModel?): Keras 3 loads .keras and .h5 files; "
                                   "deploy a SavedModel with clipper.deployers.tensorflow")
        if not src.is_file():
            raise ClipperException(f"Keras model file {src} not found")
        if src.suffix not in (".keras", ".h5", ".hdf5"):
            raise ClipperException(f"{src} should be a Keras model file (.keras, or legacy .h5)")
        dest = KERAS_RELATIVE_PATH if src.suffix == ".keras" else H5_RELATIVE_PATH
        shutil.copyfile(src, model_dir / dest)
        return {"format": src.suffix.lstrip("."), "model": dest}
    quiet_tensorflow_logs()
    import keras

    if not isinstance(model_path_or_object, keras.Model):
        raise ClipperException(f"{type(model_path_or_object).__name__} should be either a Keras Model object or "
                               "the path of a saved model (.keras, or legacy .h5)")
    model_path_or_object.save(str(model_dir / KERAS_RELATIVE_PATH))
    return {"format": "keras", "model": KERAS_RELATIVE_PATH, "keras_version": keras.__version__,
            "backend": keras.backend.backend()}


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str,
                    func: Callable[[Any, Any], Any] | None, model_path_or_object: Any, default_output: str = "None",
                    version: Any = 1, slo_micros: int = 3000000, labels: list[str] | None = None,
                    registry: str | None = None, base_image: str = "default", num_replicas: int = 1,
                    batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys the Keras model with `func` as model `name` and links them."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_keras_model(clipper_conn, name, version, input_type, func, model_path_or_object, base_image, labels,
                       registry, num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_keras_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                       func: Callable[[Any, Any], Any] | None, model_path_or_object: Any,
                       base_image: str = "default", labels: list[str] | None = None, registry: str | None = None,
                       num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                       gpus: int | list[int | str] | None = None) -> None:
    """Deploys a Keras model (a ``keras.Model``, or a ``.keras``/``.h5`` file) with `func` (``func(model, inputs) ->
    outputs``; None: `default_predict`) as model ``name:version``.

    `base_image` ``"default"``: ``clipper/tensorflow-container`` (built locally on first use). Returns once the
    replicas have registered and the version is current. Errors saving the model raise ClipperException.

    `gpus`: the GPUs each replica gets (as `ClipperConnection.deploy_model`'s). The image is a CPU build; see
    `clipper.deployers.tensorflow`."""
    model_dir = framework.save_framework_model(func, "keras", LOADER,
                                               lambda d: save_keras_model(d, model_path_or_object))
    framework.deploy_framework_model(clipper_conn, name, version, input_type, model_dir, IMAGE, base_image,
                                     labels, registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)


# ----------------------------------------------------------------------------- replica side


def default_predict(model: Any, inputs: Any) -> list[str]:
    """The batch function when `func` is None: ``model.predict_on_batch(inputs)``, each output row as JSON (a list
    of the outputs' rows for a model with several outputs)."""
    out = model.predict_on_batch(as_matrix(inputs))
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        import json

        columns = [plain_rows(o) for o in out]
        return [json.dumps(list(row)) for row in zip(*columns, strict=True)]
    return json_rows(out)


def load_model(model_dir: Path, func: Callable[[Any, Any], Any] | None,
               manifest: dict[str, Any]) -> Callable[[Any], Any]:
    """The runtime's loader (once per replica): ``keras.models.load_model`` of the saved file, and the batch function
    ``func(model, inputs)`` (`default_predict` when `func` is None)."""
    quiet_tensorflow_logs()
    import keras

    path = str(model_dir / manifest["model"])
    model = keras.models.load_model(path, compile=False)
    logger.info(f"Keras {keras.__version__} ({keras.backend.backend()} backend): model loaded from {path}")
    call = func if func is not None else default_predict

    def predict(inputs: Any) -> Any:
        return call(model, inputs)

    predict.model = model  # type: ignore[attr-defined]  # for tests and introspection
    return predict
