"""The fast path of input validation (`rust_core/src/simple_input.rs`) against the full validator.

Bodies that are exactly `{"input": [numbers]}` skip the Python dict: the fast path must encode
every body it accepts to the same bytes as `_core.encode_input(orjson.loads(body)["input"])`, and
leave every other body (None) to the full validator.
"""

from __future__ import annotations

import random

import orjson
import pytest

from clipper import _core, rust_core
from clipper.input_types import INPUT_DOUBLES, INPUT_FLOATS, INPUT_INTS, INPUT_STRINGS

NUMERIC = [INPUT_INTS, INPUT_FLOATS, INPUT_DOUBLES]


def full_path(body: bytes, code: int) -> bytes | None:
    """What the full validator makes of a body: its element bytes, or None when it refuses it."""
    try:
        request = orjson.loads(body)
        return _core.encode_input(request["input"], code)
    except (ValueError, KeyError, TypeError):
        return None


def random_number(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return str(rng.randint(-(2**31) - 2, 2**31 + 1))
    if kind == 1:
        return str(rng.randint(-(2**70), 2**70))
    if kind == 2:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 3:
        return f"{rng.uniform(-10, 10):.3e}".replace("e+0", "E").replace("e-0", "e-")
    if kind == 4:
        return rng.choice(["-0", "0", "-0.0", "1e400", "-1e400", "1e-400", "3.5e38", "3.4028234663852886e38",
                           "01", "1.", ".5", "+1", "1e", "-", "NaN", "true", '"1"', "null", "[1]"])
    if kind == 5:
        return str(rng.choice([2**53 + 1, -(2**63), 2**63 - 1, 2**63, 2**64]))
    if kind == 6:
        return f"{rng.uniform(-1, 1) * 10 ** rng.randint(-30, 40):g}"
    return str(rng.randint(-100, 100))


def random_body(rng: random.Random) -> bytes:
    numbers = [random_number(rng) for _ in range(rng.randrange(5))]
    space = rng.choice(["", " ", "\n\t", "\r\n "])
    array = "[" + space + ("," + space).join(numbers) + space + "]"
    shape = rng.randrange(10)
    if shape == 0:
        return f'{{"input":{array},"uid":0}}'.encode()
    if shape == 1:
        return f'{{"input":{array},"input":[1]}}'.encode()
    if shape == 2:
        return f'{{"\\u0069nput":{array}}}'.encode()
    if shape == 3:
        return f'{{"input":{array}}}'.encode() + rng.choice([b"", b" ", b"x", b"}", b"\x00"])
    return f"{space}{{{space}\"input\"{space}:{space}{array}{space}}}{space}".encode()


@pytest.mark.parametrize("code", NUMERIC)
def test_the_fast_path_agrees_with_the_full_validator(code: int) -> None:
    rng = random.Random(code)
    accepted = 0
    for _ in range(20000):
        body = random_body(rng)
        fast = rust_core.encode_simple_input(body, code)
        if fast is not None:
            accepted += 1
            assert fast == full_path(body, code), body
    assert accepted > 2000, "the generator must reach the fast path often"


@pytest.mark.parametrize(
    "body, code, expected",
    [
        (b'{"input":[1,2]}', INPUT_INTS, (1).to_bytes(4, "little") + (2).to_bytes(4, "little")),
        (b'{"input":[-0]}', INPUT_DOUBLES, bytes(8)),  # an integer literal: +0.0, as in Python
        (b'{"input":[]}', INPUT_DOUBLES, b""),
    ],
)
def test_fast_path_bytes(body: bytes, code: int, expected: bytes) -> None:
    assert rust_core.encode_simple_input(body, code) == expected


@pytest.mark.parametrize(
    "body, code",
    [
        (b'{"input":[1.5]}', INPUT_INTS),  # the full validator explains the error
        (b'{"input":[2147483648]}', INPUT_INTS),
        (b'{"input":[3.5e38]}', INPUT_FLOATS),
        (b'{"input":[1e400]}', INPUT_DOUBLES),
        (b'{"input":[1],"version":"2"}', INPUT_DOUBLES),
        (b'{"input_batch":[[1]]}', INPUT_DOUBLES),
        (b'{"input":"abc"}', INPUT_STRINGS),
    ],
)
def test_other_bodies_take_the_full_path(body: bytes, code: int) -> None:
    assert rust_core.encode_simple_input(body, code) is None
