"""`clipper._core.encode_input(value, code)`: a decoded JSON input checked against an app's input type.

Input format: byte 0 picks the input type code (`b & 7`: 0-4 are the five types, 5-7 are invalid
codes) and the JSON decoder (`b >> 3 & 1`: 0 orjson, as the query path; 1 Python's json, which also
lets lone surrogates and integers of any size through); the rest is the JSON document.

Invariants: for codes 0-4 it returns bytes or raises `InputError`, nothing else; the bytes are the
elements the RPC request carries (int32/float32/float64 little-endian, UTF-8 text); invalid codes
raise ValueError. Atheris sees no coverage inside the compiled function, only the outcome features.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import orjson

from .common import FEATURES, Failure, template

NAME = "encode_input"


def decode(data: bytes) -> tuple[int, Any] | None:
    """(code, value) of a fuzz input, or None when the rest is not JSON."""
    if not data:
        return None
    code, use_json = data[0] & 7, data[0] >> 3 & 1
    try:
        if use_json:
            return code, json.loads(data[1:].decode("utf-8", "surrogatepass"))
        return code, orjson.loads(data[1:])
    except (ValueError, RecursionError):
        return None


def _expected_numbers(value: Any, fmt: str) -> bytes:
    return b"".join(struct.pack(fmt, float(x) if fmt != "<i" else x) for x in value)


class Target:
    def __init__(self) -> None:
        from clipper import _core

        self.core = _core

    def check(self, data: bytes) -> None:
        decoded = decode(data)
        if decoded is None:
            FEATURES("not json")
            return
        code, value = decoded
        try:
            out = self.core.encode_input(value, code)
        except self.core.InputError as e:
            if code > 4:
                raise Failure(f"code {code}: InputError instead of ValueError: {e}") from e
            FEATURES(code, "InputError", template(str(e)))
            return
        except ValueError as e:
            if code <= 4:
                raise Failure(f"code {code}: ValueError that is not an InputError: {e!r}") from e
            FEATURES(code, "ValueError")
            return
        if code > 4:
            raise Failure(f"invalid code {code} accepted: {out!r}")
        if type(out) is not bytes:
            raise Failure(f"returned {type(out).__name__}, not bytes")
        FEATURES(code, "ok", type(value).__name__, min(len(out), 64))
        if code == 4 and out != value.encode("utf-8"):
            raise Failure(f"strings: {out!r} is not the UTF-8 of {value!r}")
        if code in (1, 2, 3):
            if not isinstance(value, list):
                raise Failure(f"code {code}: accepted a {type(value).__name__}")
            for x in value:
                if type(x) not in (int, float) or (code == 1 and type(x) is not int):
                    raise Failure(f"code {code}: accepted element {x!r}")
                if code == 2 and not (math.isfinite(x) and abs(x) <= 3.4028234663852886e38):
                    raise Failure(f"floats: accepted {x!r}, out of float32 range")
            expected = _expected_numbers(value, {1: "<i", 2: "<f", 3: "<d"}[code])
            if out != expected:
                raise Failure(f"code {code}: {out!r} != {expected!r}")

    def close(self) -> None:
        pass


def setup() -> Target:
    return Target()
