"""Finding the model function: ``module:function`` or a Clipper closure directory (``func.pkl``)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from .runtime import PredictFn


class ModelLoadError(Exception):
    """The model cannot be found or loaded; `exit_code` is 3 for import errors, else 2."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    if not callable(func):
        raise ModelLoadError(f"{pkl} does not hold a callable")
    return func


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
