"""Exp3: pick one model at random by weight, learn from the feedback on the model that was asked.

Selection probability of model i among K: ``p_i = (1 - gamma) * w_i / sum(w) + gamma / K`` (the gamma
part keeps every model explored). Feedback on the one model asked for it (`feedback_models` draws it
like `select`) updates ``log w_i -= eta * loss_i / p_i``: the importance-weighted, unbiased loss
estimate of Clipper's removed Exp3 (``w_i *= exp(-eta * loss / (w_i / weight_sum))``), here in log
space so that it cannot underflow, with ``eta = 0.1`` by default (Clipper's 0.01 learns very slowly).
When several models were asked for the same feedback, each was observed for sure, so the update is
the full-information one, ``log w_i -= eta * loss_i``.

Log-weights are kept with the largest at 0 and none below ``-max_log_ratio`` (default 10): no model
falls further than e^-10 behind the best, so a model that turns bad loses its traffic within a few
hundred feedbacks instead of never, and a model that recovers can win it back.
"""

from __future__ import annotations

import math

from .base import RngLike, SelectionPolicy, State, as_rng, draw_index


def softmax(log_weights: list[float]) -> list[float]:
    top = max(log_weights)
    ws = [math.exp(x - top) for x in log_weights]
    total = math.fsum(ws)
    return [w / total for w in ws]


class Exp3Policy(SelectionPolicy):
    """Exp3 bandit over the app's models: one model per query."""

    name = "exp3"
    aliases = ("Exp3Policy",)
    defaults = {"eta": 0.1, "gamma": 0.05, "max_log_ratio": 10.0, "loss_scale": 1.0, "min_step": 0.01}

    def probabilities(self, state: State) -> dict[str, float]:
        k = len(state.arms)
        if k == 0:
            return {}
        gamma = min(max(float(state.params.get("gamma", 0.0)), 0.0), 1.0)
        soft = softmax([a.log_weight for a in state.arms])
        return {a.model: (1.0 - gamma) * s + gamma / k for a, s in zip(state.arms, soft, strict=True)}

    def select(self, state: State, rng: RngLike = None) -> list[str]:
        if not state.arms:
            return []
        probs = self.probabilities(state)
        return [state.arms[draw_index(list(probs.values()), as_rng(rng))].model]

    def rank(self, state: State) -> dict[str, float]:
        return {a.model: a.log_weight for a in state.arms}

    def _update(self, state: State, losses: dict[str, float], asked: list[str]) -> None:
        self._update_loss_stats(state, losses)
        eta = float(state.params.get("eta", 0.1))
        probs = self.probabilities(state)
        bandit = len(asked) <= 1
        for a in state.arms:
            if a.model in losses:
                p = max(probs[a.model], 1e-12) if bandit else 1.0
                a.log_weight -= eta * losses[a.model] / p
        self._normalise(state)
