"""Model selection on the query path for apps with a bandit policy (`clipper.selection`).

Apps with Clipper's default policy never come here: the compiled path sends their queries straight
to their one model. For the others a `ModelSelector` picks the models to ask per query, combines the
answers that arrived by the SLO, and learns from feedback. Its state is kept per user id.

Every query frontend learns from the feedback it receives at once, in memory, and hands `persist` an
*update* of the shared state: a pure function that applies the same feedback (`policy.observe`) to
whatever state is stored when it runs. The frontend's writer applies it to Redis atomically
(read-modify-write, retried on a concurrent write), so feedback given through several frontends all
counts; the stored state, which every frontend then loads (`load`), has learned from all of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from .base import State
from .registry import get_policy

#: An update of one user's stored state: called with that user's stored state and the stored state of
#: user 0 (what a new user starts from), either None when absent, it returns the new state to store.
#: Pure, so it may run on any thread and be run again when a concurrent write forces a retry.
StateUpdate = Callable[[str | None, str | None], str]
Persist = Callable[[str, int, StateUpdate], None]


def _no_persist(app: str, uid: int, update: StateUpdate) -> None:
    """Static configurations keep policy state in memory only."""


class ModelSelector:
    """Selection for one app: which models to ask, how to combine them, what feedback teaches."""

    def __init__(self, app: str, policy: str, models: Mapping[str, int], *, persist: Persist = _no_persist,
                 seed: int | None = None) -> None:
        self.app = app
        self.policy = get_policy(policy)
        self.persist = persist
        self.seed = seed
        self.rng = random.Random(seed)
        self.model_ids: dict[str, int] = dict(models)
        self.states: dict[int, State] = {}

    def set_models(self, models: Mapping[str, int]) -> None:
        """The linked models (name -> engine id of its current version) changed."""
        self.model_ids = dict(models)
        self.states = {uid: self.policy.with_models(state, self.model_ids) for uid, state in self.states.items()}

    def load(self, uid: int, text: str | None, *, newer_only: bool = False) -> None:
        """A state read from Redis (None: forgotten, e.g. after a reset).

        With `newer_only`, a state that has learned from fewer feedbacks than the one in memory is
        ignored: it was read before this frontend's latest updates reached Redis. A stored state that
        has learned from as many replaces the one in memory: Redis is the reference.
        """
        if text is None:
            self.states.pop(uid, None)
            return
        loaded = self.policy.load(text, self.model_ids, self.seed)
        current = self.states.get(uid)
        if newer_only and current is not None and loaded.t < current.t:
            return
        self.states[uid] = loaded

    def state(self, uid: int) -> State:
        """The state of user `uid`; a new user starts from what was learned for everyone (uid 0)."""
        state = self.states.get(uid)
        if state is None:
            state = self.states.get(0) or self.policy.init_state(self.model_ids, self.seed)
            self.states[uid] = state
        return state

    def choose(self, uid: int) -> list[tuple[str, int]]:
        """(model name, engine id) of the models to ask for one query."""
        return [(m, self.model_ids[m]) for m in self.policy.select(self.state(uid), self.rng) if m in self.model_ids]

    def feedback_models(self, uid: int) -> list[tuple[str, int]]:
        """(model name, engine id) of the models whose outputs a feedback is compared with."""
        chosen = self.policy.feedback_models(self.state(uid), self.rng)
        return [(m, self.model_ids[m]) for m in chosen if m in self.model_ids]

    def combine(self, uid: int, outputs: Mapping[str, str]) -> tuple[str, list[str]] | None:
        """The combined output and the models behind it, or None when no model answered."""
        combined = self.policy.combine(self.state(uid), outputs)
        return None if combined is None else (combined.output, list(combined.models))

    def observe(self, uid: int, outputs: Mapping[str, str], label: Any, asked: list[str]) -> None:
        """Learns from one feedback, and hands the same lesson to `persist` for the shared state."""
        before = self.state(uid)
        after = self.policy.observe(before, outputs, label, asked)
        if after is not before:
            self.states[uid] = after
            self.persist(self.app, uid, self.update(outputs, label, asked))

    def update(self, outputs: Mapping[str, str], label: Any, asked: list[str]) -> StateUpdate:
        """The update that teaches a stored state one feedback (see `StateUpdate`), over the current models."""
        policy, models, seed = self.policy, list(self.model_ids), self.seed
        outputs, asked = dict(outputs), list(asked)

        def update(own: str | None, shared: str | None) -> str:
            stored = policy.load(own if own is not None else shared, models, seed)
            return policy.serialize(policy.observe(stored, outputs, label, asked))

        return update
