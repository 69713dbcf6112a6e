"""Helpers the framework deployers share for batches of numeric inputs and their outputs."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


def as_matrix(inputs: Any, dtype: Any = None) -> np.ndarray:
    """A batch as one 2-D array (one row per input): the runtime's 2-D array as it is, else a list of equal-length
    arrays stacked; `dtype` converts it (None: kept)."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2:
        array = inputs
    else:
        rows = [np.asarray(x) for x in inputs]
        if len({r.shape for r in rows}) > 1:
            raise ValueError(f"inputs of different lengths in one batch: {sorted({len(r) for r in rows})}; "
                             "this model takes rows of one length")
        array = np.stack(rows) if rows else np.empty((0, 0))
    return array if dtype is None else array.astype(dtype, copy=False)


def plain_rows(values: Any) -> list[Any]:
    """The rows of `values` (an array, tensor or list) as plain Python values: a number (or string) for a scalar row,
    a list otherwise; bytes become text."""
    if hasattr(values, "numpy") and not isinstance(values, np.ndarray):  # a TensorFlow tensor
        values = values.numpy()
    rows = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return [_plain(r) for r in rows]


def json_rows(values: Any) -> list[str]:
    """One JSON text per row of `values` (an array, tensor or list): a number for a scalar row, a list otherwise."""
    return [json.dumps(r) for r in plain_rows(values)]


def _plain(value: Any) -> Any:
    """`value` with numpy arrays and scalars as lists and Python scalars, bytes as text (for `json.dumps`)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def replica_threads(env: str, default: int = 1) -> int:
    """The number of threads a replica gives its model, from the environment variable `env` (default `default`;
    0: the framework's own default, all cores). Tree models predict small batches fastest on one thread (OpenMP's
    start-up per call costs more than the work); Clipper scales with replicas."""
    value = os.environ.get(env, "").strip()
    if not value:
        return default
    try:
        n = int(value)
        if n < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{env} must be a number of threads (0: the framework's default), got {value!r}") from None
    return n
