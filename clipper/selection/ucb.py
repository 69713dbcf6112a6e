"""UCB: the model whose loss could plausibly be lowest, optimism in the face of uncertainty.

Picks the argmin of ``mean_loss_i - c * sqrt(2 ln N / n_i)`` (a lower confidence bound on the loss;
N = feedbacks observed over all models, n_i = those of model i; never-observed models first, in model
order). Clipper's removed UCB *added* ``sqrt(2 ln(#models) / times_selected)`` to the loss and took
the argmin, which steers away from little-tried models; this is UCB1 for losses. ``c = 0.5`` by
default: losses lie in [0, 1], so they are sub-Gaussian with sigma 1/2 (``c = 1`` is Auer's more
cautious UCB1, which explores several times longer).

The mean loss is the plain running mean by default (``min_step = 0``), which UCB's guarantee needs:
a model that turns bad is then abandoned only slowly (its mean carries its whole history). Setting
``min_step`` (e.g. 0.002) makes it a moving average that tracks change, at the price of occasional
long detours to a worse model; for drifting models prefer Exp3 or epsilon-greedy.
"""

from __future__ import annotations

import math

from .base import RngLike, SelectionPolicy, State


class UCBPolicy(SelectionPolicy):
    """UCB1 bandit over the app's models (deterministic): one model per query."""

    name = "ucb"
    aliases = ("UCBPolicy", "UCB1")
    defaults = {"c": 0.5, "min_step": 0.0, "loss_scale": 1.0}

    def index(self, state: State) -> int:
        """Index of the arm to ask next."""
        total = sum(a.n for a in state.arms)
        log_n = math.log(max(total, 1))
        c = float(state.params.get("c", 0.5))
        best, best_score = 0, math.inf
        for i, a in enumerate(state.arms):
            if a.n == 0:
                return i
            score = a.mean_loss - c * math.sqrt(2.0 * log_n / a.n)
            if score < best_score:
                best, best_score = i, score
        return best

    def probabilities(self, state: State) -> dict[str, float]:
        if not state.arms:
            return {}
        b = self.index(state)
        return {a.model: (1.0 if i == b else 0.0) for i, a in enumerate(state.arms)}

    def select(self, state: State, rng: RngLike = None) -> list[str]:
        return [state.arms[self.index(state)].model] if state.arms else []

    def rank(self, state: State) -> dict[str, float]:
        return {a.model: -a.mean_loss for a in state.arms}
