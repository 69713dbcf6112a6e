"""Exp4: ask every model, answer with their outputs combined by weight, learn from every answer.

Weights ``w_i`` are kept as log-weights (largest at 0, none below ``-max_log_ratio``). `combine`
merges the answers with the weights renormalised over the models that answered in time (straggler
mitigation); see `clipper.selection.outputs` for the rules (numbers: weighted mean, 0/1 outputs:
thresholded at 0.5 as Clipper did, anything else: weighted vote; parameter ``combine`` =
"auto" | "vote" | "mean"). Feedback sees every model's output, so the update is the
full-information exponential-weights (Hedge) one: ``log w_i -= eta * loss_i`` (Clipper's removed
Exp4 divided the loss by ``w_i / weight_sum`` as Exp3 does, which punishes a model more the less it
weighs although its loss was observed for sure).
"""

from __future__ import annotations

from .base import RngLike, SelectionPolicy, State
from .exp3 import softmax


class Exp4Policy(SelectionPolicy):
    """Exp4 ensemble over the app's models: every model per query, answers combined by weight."""

    name = "exp4"
    aliases = ("Exp4Policy",)
    combines_all = True
    defaults = {"eta": 0.1, "max_log_ratio": 10.0, "loss_scale": 1.0, "min_step": 0.01, "combine": "auto"}

    def probabilities(self, state: State) -> dict[str, float]:
        if not state.arms:
            return {}
        soft = softmax([a.log_weight for a in state.arms])
        return {a.model: s for a, s in zip(state.arms, soft, strict=True)}

    def select(self, state: State, rng: RngLike = None) -> list[str]:
        return state.models

    def _update(self, state: State, losses: dict[str, float], asked: list[str]) -> None:
        self._update_loss_stats(state, losses)
        eta = float(state.params.get("eta", 0.1))
        for a in state.arms:
            if a.model in losses:
                a.log_weight -= eta * losses[a.model]
        self._normalise(state)
