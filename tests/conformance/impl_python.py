"""Our Python runtime, ``python -m clipper.model_runtime``, serving `python_model.predict`."""

from __future__ import annotations

import sys

from . import Implementation


def command(input_type: str) -> list[str]:
    """The argv of one container (the input type comes from CLIPPER_INPUT_TYPE)."""
    return [sys.executable, "-m", "clipper.model_runtime", "--predict", "tests.conformance.python_model:predict"]


IMPLEMENTATION = Implementation(name="python", command=command)
