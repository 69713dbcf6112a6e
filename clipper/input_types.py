"""Input types: canonical names, Clipper's aliases and RPC wire codes (REFERENCE §1.2, §3.1)."""

from __future__ import annotations

INPUT_BYTES = 0
INPUT_INTS = 1
INPUT_FLOATS = 2
INPUT_DOUBLES = 3
INPUT_STRINGS = 4

#: Canonical input type name -> wire code.
INPUT_TYPE_CODES: dict[str, int] = {
    "bytes": INPUT_BYTES,
    "integers": INPUT_INTS,
    "floats": INPUT_FLOATS,
    "doubles": INPUT_DOUBLES,
    "strings": INPUT_STRINGS,
}
#: Wire code -> canonical input type name.
INPUT_TYPE_NAMES: dict[int, str] = {code: name for name, code in INPUT_TYPE_CODES.items()}

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
