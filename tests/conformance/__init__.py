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


def implementations() -> list[Implementation]:
    """Every ``impl_*.py`` module's IMPLEMENTATION, by name."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("impl_"):
            found.append(importlib.import_module(f"{__name__}.{info.name}").IMPLEMENTATION)
    return sorted(found, key=lambda impl: impl.name)
