"""The conformance model (docs/containers.md) for our Python runtime.

``python -m clipper.model_runtime --predict tests.conformance.python_model:predict``.

Also used, through `answer`, by the driver of Clipper's rpc.py (`clipper_rpc_driver.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Numeric inputs whose first element is this, bytes whose first byte is POISON_BYTE, and the string POISON_STRING
#: make the model fail for the whole batch.
POISON_NUMBER = -7
POISON_BYTE = 0xEE
POISON_STRING = "poison"


class PoisonedInput(ValueError):
    """A poisoned input was in the batch."""


def answer(x: Any) -> str:
    """The conformance answer for one input: ``"<n>:<sum>"`` for arrays, ``"<utf-8 length>:<x>"`` for a str."""
    if isinstance(x, str):
        return f"{len(x.encode())}:{x}"
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        total = int(a.astype(np.int64).sum())
    else:  # floats and doubles: each element truncated toward zero to int64
        total = int(np.trunc(a.astype(np.float64)).astype(np.int64).sum())
    return f"{a.size}:{total}"


def poisoned(x: Any) -> bool:
    """True for a poisoned input (uint8 arrays are bytes inputs)."""
    if isinstance(x, str):
        return x == POISON_STRING
    a = np.asarray(x)
    if a.size == 0:
        return False
    return bool(a.flat[0] == (POISON_BYTE if a.dtype == np.uint8 else POISON_NUMBER))


def predict(inputs: Sequence[Any]) -> list[str]:
    """One answer per input; raises `PoisonedInput` when any input of the batch is poisoned."""
    if any(poisoned(x) for x in inputs):
        raise PoisonedInput("poisoned input in the batch")
    return [answer(x) for x in inputs]
