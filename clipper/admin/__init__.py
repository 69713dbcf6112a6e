"""The admin API: `ClipperConnection` and its exceptions (compatible with `clipper_admin` 0.4.1).

`ClipperConnection` and the names of its module are loaded on first use (it imports `requests`,
numpy and the container managers); the exceptions live in `clipper.exceptions` and the image
defaults in `clipper.image_names`, which any layer can import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..exceptions import ClipperException, UnconnectedException
from ..image_names import CONTAINERLESS_MODEL_IMAGE, DEFAULT_IMAGE_VERSION, DEFAULT_REGISTRY

__all__ = [
    "CLIPPER_TEMP_DIR",
    "CONTAINERLESS_MODEL_IMAGE",
    "DEFAULT_IMAGE_VERSION",
    "DEFAULT_PREDICTION_CACHE_SIZE_BYTES",
    "DEFAULT_REGISTRY",
    "ClipperConnection",
    "ClipperException",
    "UnconnectedException",
    "validate_versioned_model_name",
]

_FROM_CONNECTION = {"CLIPPER_TEMP_DIR", "DEFAULT_PREDICTION_CACHE_SIZE_BYTES", "ClipperConnection",
                    "validate_versioned_model_name"}

if TYPE_CHECKING:
    from .connection import (
        CLIPPER_TEMP_DIR,
        DEFAULT_PREDICTION_CACHE_SIZE_BYTES,
        ClipperConnection,
        validate_versioned_model_name,
    )


def __getattr__(name: str) -> Any:
    if name not in _FROM_CONNECTION:
        raise AttributeError(f"module 'clipper.admin' has no attribute {name!r}")
    value = getattr(importlib.import_module(".connection", __name__), name)
    globals()[name] = value
    return value
