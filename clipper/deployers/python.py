"""Deploy a Python function (closure) as a model, like `clipper_admin.deployers.python`.

The function is serialised with cloudpickle (protocol 2, as Clipper does) to ``func.pkl`` in a
fresh temporary directory, which is handed to `ClipperConnection.build_and_deploy_model` as the
model data path. The container manager builds its model "image" from it (`LocalContainerManager`
copies the directory, so the temporary one is removed afterwards), and each replica runs
``python -m clipper.model_runtime``, which loads ``<model path>/func.pkl``, calls the function with a
batch of inputs (a 2-D numpy array for equal-length numeric inputs, a list otherwise; a list of
``str`` for strings) and returns ``str()`` of each output.

Packages. Functions and classes defined in ``__main__`` or in a notebook are pickled by value;
anything imported is pickled by reference, so the replica must be able to import it: with
`LocalContainerManager` replicas use the same interpreter as your process, so installed packages
are there. `pkgs_to_install` pip-installs extra packages into ``<image>/modules`` (the runtime adds
that directory to ``sys.path``) when the image is built.

`base_image` is passed to `build_model`; the local manager records it and ignores it. Unlike
`clipper_admin`, any Python 3 interpreter is accepted (there is no per-version base image to pick).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..image_names import default_base_image

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["PREDICT_FNAME", "create_endpoint", "default_base_image", "deploy_python_closure",
           "save_python_function", "serialize_object"]

logger = logging.getLogger("clipper.deployers.python")

#: File name of the serialised function in a model directory.
PREDICT_FNAME = "func.pkl"


def serialize_object(obj: Any) -> bytes:
    """cloudpickle with pickle protocol 2 (what Clipper's containers read)."""
    return cloudpickle.dumps(obj, protocol=2)


def save_python_function(name: str, func: Callable[..., Any]) -> str:
    """Writes ``func.pkl`` to a new temporary directory (suffix ``clipper``) and returns its path."""
    data = serialize_object(func)
    serialization_dir = os.path.abspath(tempfile.mkdtemp(suffix="clipper"))
    logger.info(f"Saving function to {serialization_dir}")
    with open(os.path.join(serialization_dir, PREDICT_FNAME), "wb") as f:
        f.write(data)
    logger.info("Serialized and supplied predict function")
    return serialization_dir


def create_endpoint(clipper_conn: ClipperConnection, name: str, input_type: str, func: Callable[..., Any],
                    default_output: str = "None", version: Any = 1, slo_micros: int = 3000000,
                    labels: list[str] | None = None, registry: str | None = None, base_image: str = "default",
                    num_replicas: int = 1, batch_size: int = -1, pkgs_to_install: list[str] | None = None) -> None:
    """Registers an application called `name`, deploys `func` as model `name` and links the two."""
    clipper_conn.register_application(name, input_type, default_output, slo_micros)
    deploy_python_closure(clipper_conn, name, version, input_type, func, base_image, labels, registry,
                          num_replicas, batch_size, pkgs_to_install)
    clipper_conn.link_model_to_app(name, name)


def deploy_python_closure(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                          func: Callable[..., Any], base_image: str = "default", labels: list[str] | None = None,
                          registry: str | None = None, num_replicas: int = 1, batch_size: int = -1,
                          pkgs_to_install: list[str] | None = None, *,
                          gpus: int | list[int | str] | None = None) -> None:
    """Deploys an arbitrary Python function as model ``name:version`` (`gpus`: as `ClipperConnection.deploy_model`'s).

    The function takes a batch (list or array) of inputs of `input_type` and returns one output
    per input (outputs are sent as ``str()``). Returns once the replicas have registered and the
    model version is current.

    Example::

        def feature_sum(xs):
            return [str(sum(x)) for x in xs]

        deploy_python_closure(clipper_conn, name="sum-model", version=1, input_type="doubles",
                              func=feature_sum)
    """
    serialization_dir = save_python_function(name, func)
    if base_image == "default":
        base_image = default_base_image(registry)
    try:
        clipper_conn.build_and_deploy_model(name, version, input_type, serialization_dir, base_image, labels,
                                            registry, num_replicas, batch_size, pkgs_to_install, gpus=gpus)
    finally:
        shutil.rmtree(serialization_dir, ignore_errors=True)
