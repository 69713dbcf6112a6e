"""Epsilon-greedy: the model with the lowest expected loss, or with probability epsilon a random one.

Expected loss is a running mean of the model's feedback losses with step ``max(1/n, min_step)``:
the exact mean for the first ``1/min_step`` feedbacks, then an exponential moving average (default
``min_step = 0.01``, about the last 100 feedbacks), so that a model that turns bad loses its traffic
(``min_step = 0`` gives Clipper's plain running mean). Models not yet observed start at 0 in a new
state (each is tried once before exploiting) and at the mean of the others when added later.
"""

from __future__ import annotations

from .base import RngLike, SelectionPolicy, State, as_rng


def greedy_index(state: State) -> int:
    """Index of the arm with the lowest mean loss (ties: model order)."""
    best = 0
    for i, a in enumerate(state.arms):
        if a.mean_loss < state.arms[best].mean_loss:
            best = i
    return best


class EpsilonGreedyPolicy(SelectionPolicy):
    """Epsilon-greedy bandit over the app's models: one model per query."""

    name = "epsilon_greedy"
    aliases = ("EpsilonGreedyPolicy", "EpsilonGreedy", "egreedy", "eps_greedy")
    defaults = {"epsilon": 0.1, "min_step": 0.01, "loss_scale": 1.0}

    def probabilities(self, state: State) -> dict[str, float]:
        k = len(state.arms)
        if k == 0:
            return {}
        eps = min(max(float(state.params.get("epsilon", 0.1)), 0.0), 1.0)
        g = greedy_index(state)
        return {a.model: eps / k + (1.0 - eps if i == g else 0.0) for i, a in enumerate(state.arms)}

    def select(self, state: State, rng: RngLike = None) -> list[str]:
        k = len(state.arms)
        if k == 0:
            return []
        r = as_rng(rng)
        eps = float(state.params.get("epsilon", 0.1))
        if float(r.random()) < eps:
            return [state.arms[min(int(float(r.random()) * k), k - 1)].model]
        return [state.arms[greedy_index(state)].model]

    def rank(self, state: State) -> dict[str, float]:
        return {a.model: -a.mean_loss for a in state.arms}
