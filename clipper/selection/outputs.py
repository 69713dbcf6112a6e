"""Model outputs as values: parsing, per-model loss against a feedback label, and weighted combining.

Model outputs are the raw strings the containers return. The query frontend renders one in the
response by parsing it as JSON and, when that fails, embedding it as a JSON string,
so two outputs *mean the same thing* when they render to the same value: ``"1"`` and ``"1.0"`` (the
same number), ``"cat"`` and ``"\\"cat\\""`` (the same string), ``"[1, 2]"`` and ``"[1,2]"``.

Loss of one output against a label (always in [0, 1], as the bandit algorithms assume):

* both numeric: ``min(1, |output - label| / loss_scale)``: absolute error (regression; for 0/1
  classification it is the 0/1 loss);
* otherwise: 0 when the two render to the same value, else 1 (string and class labels).

Combining the outputs of the models that answered (``combine_outputs``), with their weights
renormalised over those models alone (straggler mitigation):

* one output: returned verbatim;
* all outputs render to the same value: the first one, verbatim;
* mode ``"auto"`` (default): when every output is a JSON number, a weighted **mean** (regression) --
  except when every output is 0 or 1 (binary classification), where the mean is **thresholded at
  0.5** as Clipper's Exp4 did, which is exactly a weighted vote between 0 and 1 (an exact tie goes
  to the class of the first model in order). Any non-numeric output (strings, objects, arrays,
  booleans, or text that is not JSON) makes it a weighted **vote**;
* mode ``"vote"``: always a weighted vote (use it for multi-class labels such as 0..9, whose mean is
  meaningless);
* mode ``"mean"``: weighted mean whenever every output is numeric, 0/1 included (a probability-like
  average); otherwise a vote.

A weighted vote sums the weights of the models behind each distinct value; the value with the
highest total wins, an exact tie going to the value of the earliest model in model order. The
output is the winning value's raw string as the earliest model of that group returned it. A weighted
mean is written as Python's ``repr`` of the float (``"2.5"``, ``"1e-05"``), always valid JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

COMBINE_MODES = ("auto", "vote", "mean")
#: Relative tolerance under which two vote totals count as a tie.
TIE_TOLERANCE = 1e-12


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def parse_value(raw: str) -> Any:
    """The value `raw` renders to in a response: parsed strict JSON (no NaN/Infinity), else the string."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, TypeError, RecursionError):  # RecursionError: absurdly deep nesting
        return raw


def as_number(value: Any) -> float | None:
    """`value` as a finite float when it is a JSON number (bool is not a number), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def value_key(value: Any) -> tuple[str, Any]:
    """A hashable key equal for values that mean the same (numbers compare numerically)."""
    x = as_number(value)
    if x is not None:
        return ("n", x)
    if isinstance(value, str):
        return ("s", value)
    return ("j", json.dumps(value, sort_keys=True, separators=(",", ":")))


def label_value(label: Any) -> Any:
    """A feedback label as a value: a string label that is strict JSON (``"1"``) is parsed."""
    if isinstance(label, bool):
        return float(label)
    if isinstance(label, str):
        return parse_value(label)
    return label


def loss(raw_output: str, label: Any, loss_scale: float = 1.0) -> float:
    """The loss in [0, 1] of one raw model output against a feedback label (see the module doc)."""
    out = parse_value(raw_output)
    lab = label_value(label)
    xo, xl = as_number(out), as_number(lab)
    if xo is not None and xl is not None:
        scale = loss_scale if loss_scale > 0 else 1.0
        return min(1.0, abs(xo - xl) / scale)
    return 0.0 if value_key(out) == value_key(lab) else 1.0


def _format_number(x: float) -> str:
    return repr(float(x))


def _normalised(weights: Sequence[float]) -> list[float]:
    ws = [w if (math.isfinite(w) and w > 0.0) else 0.0 for w in weights]
    total = sum(ws)
    if total <= 0.0 or not math.isfinite(total):
        return [1.0 / len(ws)] * len(ws)
    return [w / total for w in ws]


def weighted_vote(raws: Sequence[str], weights: Sequence[float], keys: Sequence[tuple[str, Any]]) -> str:
    """The raw output of the value with the highest total weight (ties: earliest model wins)."""
    totals: dict[tuple[str, Any], float] = {}
    first: dict[tuple[str, Any], int] = {}
    for i, (k, w) in enumerate(zip(keys, weights, strict=True)):
        totals[k] = totals.get(k, 0.0) + w
        first.setdefault(k, i)
    best_key = None
    best_total = -1.0
    for k, total in totals.items():  # insertion order == order of first appearance
        if best_key is None or total > best_total * (1.0 + TIE_TOLERANCE) + TIE_TOLERANCE:
            best_key, best_total = k, total
    assert best_key is not None
    return raws[first[best_key]]


def combine_outputs(raws: Sequence[str], weights: Sequence[float], mode: str = "auto") -> str:
    """Combines raw outputs (in model order) with their weights, renormalised over these outputs.

    See the module documentation for the rules. `raws` must not be empty.
    """
    if not raws:
        raise ValueError("no outputs to combine")
    if len(raws) != len(weights):
        raise ValueError("one weight per output")
    if mode not in COMBINE_MODES:
        raise ValueError(f"combine mode must be one of {COMBINE_MODES}, not {mode!r}")
    if len(raws) == 1:
        return raws[0]
    ws = _normalised(weights)
    values = [parse_value(r) for r in raws]
    keys = [value_key(v) for v in values]
    if all(k == keys[0] for k in keys):
        return raws[0]
    nums = [as_number(v) for v in values]
    numeric = all(x is not None for x in nums)
    binary = numeric and all(x in (0.0, 1.0) for x in nums)
    if mode == "vote" or not numeric or (mode == "auto" and binary):
        return weighted_vote(raws, ws, keys)
    mean = math.fsum(w * x for w, x in zip(ws, nums, strict=True))  # type: ignore[operator]
    if not math.isfinite(mean):
        return weighted_vote(raws, ws, keys)
    return _format_number(mean)
