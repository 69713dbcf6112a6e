"""Tiny built-in models for tests and benchmarks (``--predict clipper.model_runtime.models:noop``)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .. import metrics


def noop(inputs: Any) -> list[str]:
    """``"1.0"`` for every input."""
    return ["1.0"] * len(inputs)


def batch_size(inputs: Any) -> list[str]:
    """The batch length, as every output."""
    return [str(len(inputs))] * len(inputs)


def sum(inputs: Any) -> list[str]:
    """The sum of each numeric input (int64 for integer types, float64 otherwise)."""
    if isinstance(inputs, np.ndarray):
        acc = np.int64 if inputs.dtype.kind in "iu" else np.float64
        return list(map(str, inputs.sum(axis=1, dtype=acc).tolist()))
    if inputs and not isinstance(inputs[0], np.ndarray):
        raise TypeError("sum needs numeric inputs")
    return [str(x.sum(dtype=np.int64 if x.dtype.kind in "iu" else np.float64).item()) for x in inputs]


def echo_len(inputs: Any) -> list[str]:
    """The number of elements (characters for strings) of each input."""
    if isinstance(inputs, np.ndarray):
        return [str(inputs.shape[1])] * len(inputs)
    return [str(len(x)) for x in inputs]


def echo(inputs: Any) -> list[str]:
    """Each input back: strings as they are, arrays as a JSON list of their values."""
    return [x if isinstance(x, str) else json.dumps(x.tolist()) for x in inputs]


def sleep(inputs: Any) -> list[str]:
    """Sleep ``CLIPPER_SLEEP_FIXED_MS + CLIPPER_SLEEP_PER_ITEM_US * n``, return the batch size.

    When ``CLIPPER_BATCH_LOG`` names a file, a line with the batch size is appended to it as each batch
    starts, so that a test can count the batches that reached the model.
    """
    n = len(inputs)
    batch_log = os.environ.get("CLIPPER_BATCH_LOG")
    if batch_log:
        with open(batch_log, "a") as f:
            f.write(f"{n}\n")
    fixed_ms = float(os.environ.get("CLIPPER_SLEEP_FIXED_MS", "0"))
    per_item_us = float(os.environ.get("CLIPPER_SLEEP_PER_ITEM_US", "0"))
    delay = fixed_ms / 1e3 + per_item_us * n / 1e6
    if delay > 0:
        time.sleep(delay)
    return [str(n)] * n


def metered(inputs: Any) -> list[str]:
    """``"1.0"`` for every input, reporting user metrics (`clipper.metrics`): ``custom_inputs`` (Counter,
    exported as ``custom_inputs_total``), ``custom_batch_size`` (Histogram) and ``custom_last_batch`` (Gauge)."""
    n = len(inputs)
    metrics.add_metric("custom_inputs", "Counter", "Inputs the model saw.")  # again: ignored
    metrics.add_metric("custom_batch_size", "Histogram", "Batch sizes the model saw.", [1, 2, 4, 8])
    metrics.add_metric("custom_last_batch", "Gauge", "Size of the last batch.")
    metrics.report_metric("custom_inputs", n)
    metrics.report_metric("custom_batch_size", n)
    metrics.report_metric("custom_last_batch", n)
    return ["1.0"] * n


def fail(inputs: Any) -> list[str]:
    """Always raises ``ValueError("boom")``."""
    raise ValueError("boom")


def classifier(inputs: Any) -> list[str]:
    """A synthetic binary classifier of known accuracy, for selection-policy tests.

    The true class of an input is ``int(sum(x)) % 2``; the answer is right for a fraction
    ``CLIPPER_ACCURACY`` of inputs (chosen by a hash of the input and ``CLIPPER_SEED``, so the
    same input always gets the same answer), after ``CLIPPER_SLEEP_FIXED_MS``. When
    ``CLIPPER_ACCURACY_FILE`` names a file, the accuracy is read from it at every batch, so a test
    can make a model turn bad mid-stream.
    """
    accuracy_file = os.environ.get("CLIPPER_ACCURACY_FILE")
    if accuracy_file:
        with open(accuracy_file) as f:
            accuracy = float(f.read())
    else:
        accuracy = float(os.environ.get("CLIPPER_ACCURACY", "1.0"))
    seed = int(os.environ.get("CLIPPER_SEED", "0"))
    delay_ms = float(os.environ.get("CLIPPER_SLEEP_FIXED_MS", "0"))
    if delay_ms > 0:
        time.sleep(delay_ms / 1e3)
    outputs = []
    for x in inputs:
        value = int(np.asarray(x, dtype=np.float64).sum())
        truth = value % 2
        right = (value * 2654435761 + seed * 40503) % 1000 < accuracy * 1000
        outputs.append(str(truth if right else 1 - truth))
    return outputs
