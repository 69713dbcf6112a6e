"""Model-container implementations the conformance suite (tests/test_conformance.py) runs against.

Each ``impl_<name>.py`` in this folder defines ``IMPLEMENTATION``: how to start that language's
"conformance" example model (docs/containers.md says what it answers), when it can run here, and the
cases it is known not to pass (with the reason).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Implementation:
    """One model-container implementation of the conformance model.

    `available()` returns None when it can run here, else why not (the suite skips with that reason);
    `command(input_type)` is the argv of one container process for that input type (Clipper's
    environment variables are set by the suite); `env` is extra environment; `deviations` maps a
    case name of the suite to the reason the implementation does not pass it (those cases are skipped
    for it, never silently)."""

    name: str
    command: Callable[[str], list[str]]
    available: Callable[[], str | None] = lambda: None
    env: Mapping[str, str] = field(default_factory=dict)
    deviations: Mapping[str, str] = field(default_factory=dict)


#: The input types, as CLIPPER_INPUT_TYPE and the apps name them.
INPUT_TYPES = ("integers", "floats", "doubles", "bytes", "strings")

#: Every case of tests/test_conformance.py, by the name `Implementation.deviations` uses, and what it checks.
CASES: dict[str, str] = {
    **{name: what
       for t in INPUT_TYPES
       for name, what in (
           (f"{t}-single", f"one {t} input answered by the model"),
           (f"{t}-batch", f"an input_batch of 64 {t} inputs of different lengths, answered in order"),
           (f"{t}-batch-same", f"an input_batch of 64 {t} inputs of one length (numeric: one (n, k) array)"),
           (f"{t}-empty", f"an empty {t} input (no elements)"),
           (f"{t}-poison", f"a poisoned {t} input: the default answer, its explanation mentions the failure, "
                           "and the next input is answered by the model"),
       )},
    "doubles-large": "one input of 200,000 doubles",
    "bytes-large": "one input of 1 MiB of bytes",
    "strings-large": "one string of 1 MiB (UTF-8, multi-byte characters)",
    "heartbeat": "frontend --heartbeat-timeout 2: idle 5 s, the replica stays counted and answers",
    "reconnect": "the frontend is killed (SIGKILL) and started again on the same ports: the container registers "
                 "again and answers within 15 s",
}


def implementations() -> list[Implementation]:
    """Every ``impl_*.py`` module's IMPLEMENTATION, by name."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("impl_"):
            found.append(importlib.import_module(f"{__name__}.{info.name}").IMPLEMENTATION)
    return sorted(found, key=lambda impl: impl.name)
