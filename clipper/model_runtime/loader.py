"""Finding the model function: ``module:function`` or a Clipper closure directory (``func.pkl``).

A closure directory written by a framework deployer (`clipper.deployers.framework`) also holds
``clipper_model.json``, naming the framework and its loader (``"module:function"``): the loader is
called once per replica, as ``loader(model_dir, func, manifest)``, loads the framework's artefact
(e.g. ``model.pt``, ``model.onnx``) and returns the function that serves each batch (typically
``func(model, inputs)`` inside the framework's inference context).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from .runtime import PredictFn


class ModelLoadError(Exception):
    """The model cannot be found or loaded; `exit_code` is 3 for import errors, else 2."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: File name of a framework model's manifest in a closure directory (`clipper.deployers.framework`).
MANIFEST_FNAME = "clipper_model.json"


def load_function(spec: str) -> PredictFn:
    """Import ``"package.module:function"`` (the attribute part may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelLoadError(f"predict function must look like module:function, got {spec!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelLoadError(f"cannot import {module_name!r} for {spec!r}: {e}", exit_code=3) from e
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise ModelLoadError(f"{module_name!r} has no attribute {attr!r}") from e
    if not callable(obj):
        raise ModelLoadError(f"{spec!r} is not callable")
    return obj


def load_closure(model_path: str | os.PathLike[str]) -> PredictFn:
    """Load ``<model_path>/func.pkl`` (cloudpickle) as Clipper's closure container does.

    ``<model_path>/modules`` (where ``pkgs_to_install`` go) is appended to ``sys.path`` when it exists, as Clipper's
    closure container does: packages of the image itself keep priority.
    """
    import cloudpickle

    path = Path(model_path)
    pkl = path / "func.pkl"
    if not pkl.is_file():
        raise ModelLoadError(f"no model function: {pkl} does not exist")
    modules = path / "modules"
    if modules.is_dir() and str(modules) not in sys.path:
        sys.path.append(str(modules))
    try:
        with pkl.open("rb") as f:
            func = cloudpickle.load(f)
    except ImportError as e:
        raise ModelLoadError(
            f"cannot load {pkl}: {e} (install the packages the function needs)", exit_code=3
        ) from e
    except Exception as e:
        raise ModelLoadError(f"cannot load {pkl}: {type(e).__name__}: {e}") from e
    manifest = read_manifest(path)
    if manifest is not None and (func is None or callable(func)):  # None: the framework loader's default
        return load_framework_model(path, func, manifest)
    if not callable(func):
        raise ModelLoadError(f"{pkl} does not hold a callable")
    return func


def read_manifest(model_path: str | os.PathLike[str]) -> dict | None:
    """The framework manifest (``clipper_model.json``) of a closure directory, or None when it has none."""
    f = Path(model_path) / MANIFEST_FNAME
    if not f.is_file():
        return None
    try:
        manifest = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {f}: {e}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("loader"), str):
        raise ModelLoadError(f"{f} must be a JSON object with a \"loader\" (module:function)")
    return manifest


def load_framework_model(model_path: str | os.PathLike[str], func: Any, manifest: dict) -> PredictFn:
    """Calls the manifest's loader once: ``loader(model_dir, func, manifest)`` -> the batch function.

    An ImportError (the framework is not installed) exits 3, like Clipper's containers; any other
    failure of the loader exits 2 with its message."""
    framework = manifest.get("framework", "the framework")
    loader = load_function(manifest["loader"])
    try:
        predict = loader(Path(model_path), func, manifest)
    except ImportError as e:
        raise ModelLoadError(f"cannot load the {framework} model in {model_path}: {e} "
                             f"(install {framework} where the replica runs)", exit_code=3) from e
    except Exception as e:
        raise ModelLoadError(f"cannot load the {framework} model in {model_path}: {type(e).__name__}: {e}") from e
    if not callable(predict):
        raise ModelLoadError(f"the loader {manifest['loader']} returned {type(predict).__name__}, not a function")
    return predict


def load_model(predict: str | None = None, model_path: str | None = None) -> PredictFn:
    """Load from `predict` (``module:function``) if given, else from the closure in `model_path`."""
    if predict:
        return load_function(predict)
    if model_path:
        return load_closure(model_path)
    raise ModelLoadError(
        "no model: pass --predict module:function, set CLIPPER_PREDICT, "
        "or set CLIPPER_MODEL_PATH to a directory holding func.pkl"
    )
