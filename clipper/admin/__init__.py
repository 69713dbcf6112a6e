"""The admin API: `ClipperConnection` and its exceptions (compatible with `clipper_admin` 0.4.1).

Names are loaded on first use, so that `clipper.admin.exceptions` can be imported by the
container managers without importing `ClipperConnection` (which imports the managers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import ClipperException, UnconnectedException

__all__ = [
    "CLIPPER_TEMP_DIR",
    "DEFAULT_PREDICTION_CACHE_SIZE_BYTES",
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
