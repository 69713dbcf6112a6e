"""Model-selection policies: which of an app's models to ask, how to combine their answers, and how
to learn from feedback. Pure Python, no I/O, deterministic given the random source passed in.

Typical use by a query frontend (the state string lives in Redis per app and user id)::

    policy = get_policy(app["policy"])                      # "exp3", "Exp3Policy", None -> default
    state = policy.load(stored_text, linked_model_ids, seed)  # fresh state when nothing is stored
    asked = policy.select(state, rng)                       # models to ask for this query
    combined = policy.combine(state, outputs_in_time)       # None -> app default output
    # feedback {"uid", "input", "label"}:
    asked = policy.feedback_models(state, rng)
    state = policy.observe(state, outputs, label, asked=asked)
    stored_text = policy.serialize(state)

Policies: "default" (Clipper's DefaultOutputSelectionPolicy), "exp3", "exp4", "epsilon_greedy",
"ucb". Combining rules and losses: `clipper.selection.outputs`; state JSON: `clipper.selection.base`.
"""

from .base import Arm, Combined, SelectionPolicy, State, as_rng
from .default import DefaultOutputSelectionPolicy
from .epsilon_greedy import EpsilonGreedyPolicy
from .exp3 import Exp3Policy
from .exp4 import Exp4Policy
from .outputs import combine_outputs, loss
from .registry import (
    DEFAULT,
    POLICIES,
    UnknownPolicyError,
    canonical_name,
    get_policy,
    is_known,
    policy_allows_many,
)
from .ucb import UCBPolicy

__all__ = [
    "DEFAULT",
    "POLICIES",
    "Arm",
    "Combined",
    "DefaultOutputSelectionPolicy",
    "EpsilonGreedyPolicy",
    "Exp3Policy",
    "Exp4Policy",
    "SelectionPolicy",
    "State",
    "UCBPolicy",
    "UnknownPolicyError",
    "as_rng",
    "canonical_name",
    "combine_outputs",
    "get_policy",
    "is_known",
    "loss",
    "policy_allows_many",
]
