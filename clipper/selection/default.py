"""Clipper's `DefaultOutputSelectionPolicy`: one model, its answer verbatim, nothing to learn."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .base import RngLike, SelectionPolicy, State


class DefaultOutputSelectionPolicy(SelectionPolicy):
    """Asks the first (in practice the only) linked model and returns its output verbatim.

    With several answers (which Clipper only logs) the first model in order wins; with none the
    app's default output applies. Feedback changes nothing (`observe` returns the state it is given,
    so a caller can skip the write).
    """

    name = "default"
    aliases = ("DefaultOutputSelectionPolicy", "DefaultOutputPolicy")
    allows_many = False
    defaults: dict[str, Any] = {}

    def probabilities(self, state: State) -> dict[str, float]:
        return {m: (1.0 if i == 0 else 0.0) for i, m in enumerate(state.models)}

    def select(self, state: State, rng: RngLike = None) -> list[str]:
        return state.models[:1]

    def rank(self, state: State) -> dict[str, float]:
        return {m: -float(i) for i, m in enumerate(state.models)}

    def observe(
        self, state: State, outputs: Mapping[str, str], label: Any, asked: Iterable[str] | None = None
    ) -> State:
        return state
