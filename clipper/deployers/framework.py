"""The shared base of the framework deployers (`pytorch`, `onnx`, ...): one way to package a model of a
framework and to load it in each replica.

A framework model is a closure directory (as `clipper.deployers.python` writes) holding:

* ``func.pkl``: the user's function ``func(model, inputs) -> outputs`` (cloudpickle, as Clipper's framework
  deployers took it: the model first, then the batch);
* the framework's own artefact(s), written the framework's own way by the deployer (``model.pt`` from
  ``torch.jit.save``, ``model.onnx``, ...);
* ``clipper_model.json`` (`MANIFEST_FNAME`): ``{"framework": "pytorch", "loader": "module:function", ...}``,
  plus whatever the loader needs to know (file names, formats).

The replica runtime (``python -m clipper.model_runtime``, `clipper.model_runtime.loader.load_closure`)
sees the manifest, imports the loader and calls it once per replica: ``loader(model_dir, func, manifest)``
loads the artefact (on the replica's device) and returns the function that serves each batch. The same
directory serves with `LocalContainerManager` (copied, run by your interpreter) and in Docker (``COPY``-ed to
``/model`` of an image built FROM the framework's image, ``clipper/<framework>-container``, built locally
on first use by `clipper.images`).

A framework module (``clipper/deployers/<framework>.py``) therefore has: ``deploy_<framework>_model`` and
``create_endpoint`` with Clipper's names and arguments, which call `save_framework_model` with a function
that writes the artefact, then `deploy_framework_model`; and the loader named in the manifest, which imports
the framework inside the function (the admin side and the replica may have different packages).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException
from ..image_names import DEFAULT_REGISTRY, REGISTRY_ENV, image_ref
from ..model_runtime.loader import MANIFEST_FNAME, read_manifest
from .python import PREDICT_FNAME, serialize_object

if TYPE_CHECKING:
    from ..admin.connection import ClipperConnection

__all__ = ["MANIFEST_FNAME", "deploy_framework_model", "framework_base_image", "read_manifest",
           "save_framework_model"]

logger = logging.getLogger("clipper.deployers.framework")

#: What a deployer's artefact writer gets (the model directory) and returns (extra manifest fields, or None).
SaveArtefacts = Callable[[Path], Mapping[str, Any] | None]


def framework_base_image(image: str, registry: str | None = None) -> str:
    """The default base image of a framework's models: ``<registry>/<image>:0.4.1`` (registry: `registry`, else
    ``$CLIPPER_REGISTRY``, else ``clipper``), e.g. ``clipper/pytorch-container:0.4.1``. Images of the ``clipper``
    registry are built locally when missing (`clipper.images`)."""
    return image_ref(image, registry=registry or os.environ.get(REGISTRY_ENV, DEFAULT_REGISTRY))


def save_framework_model(func: Callable[..., Any] | None, framework: str, loader: str,
                         save_artefacts: SaveArtefacts) -> str:
    """Writes a framework model directory (a new temporary one, suffix ``clipper``) and returns its path.

    `func` (``func(model, inputs)``; None when the loader has a default) goes to ``func.pkl``;
    `save_artefacts(model_dir)` writes the framework's files and returns extra manifest fields; the manifest
    names `framework` and `loader` (``"module:function"``, called in each replica). A failure removes the
    directory and raises ClipperException naming the framework."""
    if func is not None and not callable(func):
        raise ClipperException(f"func must be a function func(model, inputs), got {type(func).__name__}")
    model_dir = Path(tempfile.mkdtemp(suffix="clipper")).resolve()
    try:
        (model_dir / PREDICT_FNAME).write_bytes(serialize_object(func))
        extra = dict(save_artefacts(model_dir) or {})
        manifest = {"framework": framework, "loader": loader, **extra}
        (model_dir / MANIFEST_FNAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    except ClipperException:
        shutil.rmtree(model_dir, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(model_dir, ignore_errors=True)
        raise ClipperException(f"Error saving {framework} model: {type(e).__name__}: {e}") from e
    logger.info(f"Saved {framework} model to {model_dir}")
    return str(model_dir)


def deploy_framework_model(clipper_conn: ClipperConnection, name: str, version: Any, input_type: str,
                           model_dir: str, image: str, base_image: str | None = "default",
                           labels: list[str] | None = None, registry: str | None = None, num_replicas: int = 1,
                           batch_size: int = -1, pkgs_to_install: list[str] | None = None, *,
                           gpus: int | list[int | str] | None = None) -> None:
    """`ClipperConnection.build_and_deploy_model` of `model_dir` (removed afterwards, whatever happens);
    `base_image` ``"default"`` or None is the framework's image `image` (e.g. ``"pytorch-container"``); `gpus` as
    `ClipperConnection.deploy_model`'s."""
    if base_image in (None, "", "default"):
        base_image = framework_base_image(image, registry)
    try:
        clipper_conn.build_and_deploy_model(name, version, input_type, model_dir, base_image, labels, registry,
                                            num_replicas, batch_size, pkgs_to_install, gpus=gpus)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
