"""Input types: canonical names, Clipper's aliases and RPC wire codes (`docs/protocol.md`)."""

from __future__ import annotations

from . import rust_core

#: Canonical input type name -> wire code, as the engine defines them.
INPUT_TYPE_CODES: dict[str, int] = dict(rust_core.INPUT_TYPES)
#: Wire code -> canonical input type name.
INPUT_TYPE_NAMES: dict[int, str] = {code: name for name, code in INPUT_TYPE_CODES.items()}

INPUT_BYTES = INPUT_TYPE_CODES["bytes"]
INPUT_INTS = INPUT_TYPE_CODES["integers"]
INPUT_FLOATS = INPUT_TYPE_CODES["floats"]
INPUT_DOUBLES = INPUT_TYPE_CODES["doubles"]
INPUT_STRINGS = INPUT_TYPE_CODES["strings"]

_ALIASES: dict[str, str] = {
    alias: canonical
    for canonical, aliases in {
        "integers": "integers ints integer int i",
        "floats": "floats float f",
        "doubles": "doubles double d",
        "strings": "strings string str strs s",
        "bytes": "bytes byte b",
    }.items()
    for alias in aliases.split()
}


def parse_input_type(name: str) -> tuple[str, int]:
    """Map an input type name or Clipper alias (e.g. ``"d"``, ``"ints"``) to (canonical, code)."""
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical is None:
        allowed = ", ".join(f"{c} ({' '.join(a for a, v in _ALIASES.items() if v == c)})"
                            for c in INPUT_TYPE_CODES)
        raise ValueError(f"unknown input type {name!r}; allowed: {allowed}")
    return canonical, INPUT_TYPE_CODES[canonical]
