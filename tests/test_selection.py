"""Selection policies (clipper.selection): pure, seeded, no I/O. Synthetic models of known accuracy."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from clipper.selection import (
    Combined,
    DefaultOutputSelectionPolicy,
    EpsilonGreedyPolicy,
    Exp3Policy,
    Exp4Policy,
    State,
    UCBPolicy,
    UnknownPolicyError,
    canonical_name,
    combine_outputs,
    get_policy,
    loss,
    policy_allows_many,
)
from clipper.selection.selector import ModelSelector, StateUpdate

MODELS = ["m0:1", "m1:1", "m2:1"]


class World:
    """Binary classification: each model answers the true label with its own accuracy, independently.

    `accuracy(t)` gives the accuracies at step t (a model can turn bad mid-stream).
    """

    def __init__(self, accuracies: list[float], seed: int, turns_bad: tuple[int, int, float] | None = None) -> None:
        self.accuracies = accuracies
        self.rng = random.Random(seed)
        self.turns_bad = turns_bad  # (model index, from step, new accuracy)

    def step(self, t: int) -> tuple[int, dict[str, str]]:
        acc = list(self.accuracies)
        if self.turns_bad is not None and t >= self.turns_bad[1]:
            acc[self.turns_bad[0]] = self.turns_bad[2]
        y = self.rng.randint(0, 1)
        outputs = {m: str(y if self.rng.random() < a else 1 - y) for m, a in zip(MODELS, acc, strict=True)}
        return y, outputs


def run_bandit(policy, accuracies, steps, seed=0, turns_bad=None) -> tuple[list[str], State]:
    """Query + feedback loop of a one-model policy; returns the model picked at each step."""
    state = policy.init_state(MODELS, seed)
    rng = random.Random(seed)
    world = World(accuracies, seed + 1000, turns_bad)
    picks = []
    for t in range(steps):
        y, outputs = world.step(t)
        asked = policy.select(state, rng)
        assert len(asked) == 1
        picks.append(asked[0])
        state = policy.observe(state, {m: outputs[m] for m in asked}, float(y), asked=asked)
    return picks, state


def share(picks: list[str], model: str) -> float:
    return picks.count(model) / len(picks)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_clipper_aliases() -> None:
    assert canonical_name(None) == "default"
    assert canonical_name("") == "default"
    assert canonical_name("DefaultOutputSelectionPolicy") == "default"
    assert canonical_name("Exp3Policy") == "exp3"
    assert canonical_name("EXP4") == "exp4"
    assert canonical_name("EpsilonGreedyPolicy") == "epsilon_greedy"
    assert canonical_name("epsilon-greedy") == "epsilon_greedy"
    assert canonical_name("UCBPolicy") == "ucb"
    assert isinstance(get_policy(), DefaultOutputSelectionPolicy)
    assert isinstance(get_policy("exp3"), Exp3Policy)
    assert isinstance(get_policy("Exp4Policy"), Exp4Policy)
    assert isinstance(get_policy("epsilon_greedy"), EpsilonGreedyPolicy)
    assert isinstance(get_policy("ucb"), UCBPolicy)
    with pytest.raises(UnknownPolicyError, match=r"^bogus is an invalid selection_policy\.$"):
        get_policy("bogus")
    with pytest.raises(ValueError, match="unknown parameters"):
        get_policy("exp3", epsilon=0.2)
    assert get_policy("exp3", eta=0.5).init_state(MODELS).params["eta"] == 0.5


def test_policy_allows_many() -> None:
    for name in (None, "", "default", "DefaultOutputSelectionPolicy"):
        assert policy_allows_many(name) is False
    for name in ("exp3", "Exp4Policy", "epsilon_greedy", "ucb"):
        assert policy_allows_many(name) is True


# --------------------------------------------------------------------------- default policy


def test_default_policy_picks_the_one_model_and_returns_its_output() -> None:
    p = get_policy("default")
    state = p.init_state(["m:1"], seed=0)
    assert p.select(state, random.Random(0)) == ["m:1"]
    assert p.combine(state, {"m:1": "[1, 2]"}) == Combined("[1, 2]", ["m:1"])
    assert p.combine(state, {}) is None
    assert p.observe(state, {"m:1": "1"}, 0.0) is state  # nothing to learn, nothing to write
    assert p.select(p.init_state([]), None) == []
    # Several answers (Clipper only logs it): the first model in order.
    two = p.init_state(["a:1", "b:1"])
    assert p.select(two) == ["a:1"]
    assert p.combine(two, {"b:1": "2", "a:1": "1"}) == Combined("1", ["a:1"])


# --------------------------------------------------------------------------- learning


def test_exp3_sends_most_traffic_to_the_best_model() -> None:
    picks, state = run_bandit(get_policy("exp3"), [0.6, 0.85, 0.7], 3000, seed=1)
    assert share(picks[-1000:], "m1:1") >= 0.8
    probs = get_policy("exp3").probabilities(state)
    assert max(probs, key=probs.get) == "m1:1"
    assert probs["m1:1"] >= 0.9
    assert min(probs.values()) >= 0.05 / 3  # gamma exploration keeps every model alive
    assert math.isclose(sum(probs.values()), 1.0)


@pytest.mark.parametrize("name", ["epsilon_greedy", "ucb"])
def test_epsilon_greedy_and_ucb_converge_to_the_best_model(name: str) -> None:
    picks, state = run_bandit(get_policy(name), [0.7, 0.6, 0.9], 3000, seed=2)
    assert share(picks[-1000:], "m2:1") >= 0.8
    best = min(state.arms, key=lambda a: a.mean_loss)
    assert best.model == "m2:1"
    assert best.mean_loss == pytest.approx(0.1, abs=0.05)


@pytest.mark.parametrize("name", ["exp3", "epsilon_greedy"])
def test_a_model_that_turns_bad_loses_its_traffic(name: str) -> None:
    picks, _ = run_bandit(get_policy(name), [0.9, 0.75, 0.55], 3000, seed=3, turns_bad=(0, 1500, 0.2))
    assert share(picks[1000:1500], "m0:1") >= 0.8  # it was the best
    assert share(picks[2000:], "m0:1") <= 0.1  # and is abandoned within a few hundred feedbacks
    assert share(picks[2000:], "m1:1") >= 0.8  # for the new best


def test_exp4_combined_accuracy_at_least_the_best_single_model() -> None:
    p = get_policy("exp4")
    state = p.init_state(MODELS, seed=4)
    world = World([0.75, 0.85, 0.65], seed=5)
    correct = {m: 0 for m in MODELS}
    combined_correct = 0
    warmup, steps = 200, 3000
    for t in range(steps):
        y, outputs = world.step(t)
        asked = p.select(state, None)
        assert asked == MODELS
        c = p.combine(state, outputs)
        assert c is not None and c.models == MODELS
        if t >= warmup:
            combined_correct += int(c.output) == y
            for m in MODELS:
                correct[m] += int(outputs[m]) == y
        state = p.observe(state, outputs, float(y), asked=asked)
    n = steps - warmup
    assert combined_correct / n >= max(correct.values()) / n
    assert combined_correct / n >= 0.8
    weights = p.probabilities(state)
    assert max(weights, key=weights.get) == "m1:1"


def test_exp4_regression_combines_by_weighted_mean_and_learns() -> None:
    p = get_policy("exp4", loss_scale=1.0)
    state = p.init_state(["good", "bad"], seed=0)
    rng = random.Random(6)
    for _ in range(300):
        y = rng.uniform(-5, 5)
        outputs = {"good": repr(y + rng.gauss(0, 0.1)), "bad": repr(y + 3.0)}
        state = p.observe(state, outputs, y)
    w = p.probabilities(state)
    assert w["good"] > 0.99
    c = p.combine(state, {"good": "1.0", "bad": "4.0"})
    assert c is not None and float(c.output) == pytest.approx(w["good"] * 1.0 + w["bad"] * 4.0)


def test_exp3_with_several_models_asked_is_a_full_information_update() -> None:
    p = get_policy("exp3", gamma=0.0)
    s = p.init_state(["a", "b"])
    bandit = p.observe(s, {"a": "1"}, 0.0)  # p_a = 0.5: loss / p = 2
    full = p.observe(s, {"a": "1", "b": "0"}, 0.0)  # observed for sure: loss / 1
    assert bandit.arm("a").log_weight == pytest.approx(-0.2)
    assert full.arm("a").log_weight == pytest.approx(-0.1)
    assert full.arm("b").log_weight == 0.0
    # Stragglers: asked both, only "a" answered: still full information for "a".
    assert p.observe(s, {"a": "1"}, 0.0, asked=["a", "b"]).arm("a").log_weight == pytest.approx(-0.1)


def test_log_weights_stay_bounded() -> None:
    p = get_policy("exp3", max_log_ratio=5.0)
    s = p.init_state(["a", "b"])
    for _ in range(200):
        s = p.observe(s, {"a": "1"}, 0.0)
    assert s.arm("a").log_weight == -5.0 and s.arm("b").log_weight == 0.0
    assert all(math.isfinite(a.log_weight) for a in s.arms)


# --------------------------------------------------------------------------- combining


def exp4_state(weights: dict[str, float]) -> State:
    p = get_policy("exp4")
    s = p.init_state(list(weights))
    for a in s.arms:
        a.log_weight = math.log(weights[a.model])
    return s


def test_combine_with_stragglers_renormalises_over_those_that_answered() -> None:
    p = get_policy("exp4")
    s = exp4_state({"a": 0.5, "b": 0.3, "c": 0.2})
    full = p.combine(s, {"a": "1.0", "b": "3.0", "c": "10.0"})
    assert full is not None and float(full.output) == pytest.approx(0.5 * 1 + 0.3 * 3 + 0.2 * 10)
    part = p.combine(s, {"b": "3.0", "a": "1.0"})  # c straggled
    assert part is not None and part.models == ["a", "b"]
    assert float(part.output) == pytest.approx((0.5 * 1.0 + 0.3 * 3.0) / 0.8)
    only = p.combine(s, {"c": "10"})
    assert only == Combined("10", ["c"])  # a single answer is returned verbatim
    assert p.combine(s, {}) is None  # nothing arrived: the app default applies
    # Binary outputs: thresholded at 0.5 over the renormalised weights.
    assert p.combine(s, {"a": "1", "b": "0", "c": "0"}).output == "1"  # 0.5 vs 0.5: exact tie -> first model
    assert p.combine(s, {"a": "0", "b": "1"}).output == "0"  # 0.625 for 0 (c straggled)
    assert p.combine(s, {"b": "0", "c": "1"}).output == "0"  # 0.6 for 0


def test_string_outputs_weighted_vote() -> None:
    p = get_policy("exp4")
    s = exp4_state({"a": 0.4, "b": 0.35, "c": 0.25})
    assert p.combine(s, {"a": '"cat"', "b": '"dog"', "c": '"dog"'}) == Combined('"dog"', ["a", "b", "c"])
    assert p.combine(s, {"a": '"cat"', "b": '"dog"'}).output == '"cat"'  # c straggled: 0.4 vs 0.35
    # Raw text and its JSON string form render the same, so they vote together.
    assert p.combine(s, {"a": "cat", "b": '"dog"', "c": "dog"}).output == '"dog"'
    # Exact tie: the value of the earliest model in model order.
    tie = exp4_state({"a": 0.25, "b": 0.25, "c": 0.5})
    assert p.combine(tie, {"c": '"x"', "b": '"y"', "a": '"z"'}).output == '"x"'
    assert p.combine(tie, {"b": '"y"', "a": '"z"'}).output == '"z"'
    # Mixed numbers and strings: a vote, not a mean.
    assert p.combine(s, {"a": "1.5", "b": '"n/a"', "c": '"n/a"'}).output == '"n/a"'


def test_combine_outputs_rules() -> None:
    assert combine_outputs(["2.0", "4.0"], [1, 3]) == "3.5"
    assert combine_outputs(["1", "1.0"], [1, 1]) == "1"  # same value: first verbatim
    assert combine_outputs(["2", "4"], [0, 0]) == "3.0"  # no usable weight: uniform
    assert combine_outputs(["0", "1", "1"], [0.6, 0.3, 0.1]) == "0"  # binary: thresholded at 0.5
    assert float(combine_outputs(["0", "1", "1"], [0.6, 0.3, 0.1], mode="mean")) == pytest.approx(0.4)
    assert combine_outputs(["3", "7", "7"], [0.5, 0.3, 0.2], mode="vote") == "3"  # multi-class labels
    assert float(combine_outputs(["3", "7", "7"], [0.5, 0.3, 0.2])) == pytest.approx(5.0)
    assert combine_outputs(["[1,2]", "[1, 2]", "[3]"], [0.3, 0.3, 0.4]) == "[1,2]"
    assert json.loads(combine_outputs(["1e308", "1e308"], [0.5, 0.6])) == 1e308
    with pytest.raises(ValueError):
        combine_outputs([], [])
    with pytest.raises(ValueError):
        get_policy("exp4", combine="median")


def test_single_model_policies_answer_with_their_preferred_model() -> None:
    p = get_policy("epsilon_greedy")
    s = p.init_state(["a", "b"])
    s.arms[0].mean_loss, s.arms[1].mean_loss = 0.4, 0.1
    assert p.combine(s, {"a": "1", "b": "2"}) == Combined("2", ["b"])
    assert p.combine(s, {"a": "1"}) == Combined("1", ["a"])


def test_loss() -> None:
    assert loss("1.5", 1.0) == 0.5
    assert loss("10", 1.0) == 1.0  # clipped to [0, 1]
    assert loss("10", 1.0, loss_scale=20.0) == pytest.approx(0.45)
    assert loss("1", 1.0) == 0.0 and loss("0", 1.0) == 1.0
    assert loss('"cat"', "cat") == 0.0 and loss("cat", "cat") == 0.0 and loss('"dog"', "cat") == 1.0
    assert loss("1", "1") == 0.0  # a numeric string label is a number
    assert loss("oops", 1.0) == 1.0  # a non-numeric answer to a numeric label is wrong
    assert loss("NaN", 1.0) == 1.0


# --------------------------------------------------------------------------- state


@pytest.mark.parametrize("name", ["default", "exp3", "exp4", "epsilon_greedy", "ucb"])
def test_serialise_round_trip_mid_learning_gives_identical_next_selections(name: str) -> None:
    p = get_policy(name)
    state = p.init_state(MODELS, seed=7)
    rng = random.Random(7)
    world = World([0.6, 0.8, 0.7], seed=8)
    for t in range(500):
        y, outputs = world.step(t)
        asked = p.feedback_models(state, rng)
        state = p.observe(state, {m: outputs[m] for m in asked}, float(y), asked=asked)
    text = p.serialize(state)
    d = json.loads(text)
    assert list(d) == ["version", "policy", "seed", "t", "params", "arms"]
    assert d["version"] == 1 and d["policy"] == name and d["seed"] == 7
    assert [a["model"] for a in d["arms"]] == MODELS
    restored = get_policy(name).deserialize(text)
    assert restored == state
    assert p.serialize(restored) == text

    def continue_(s: State, seed: int) -> tuple[list[list[str]], str]:
        r, w, picks = random.Random(seed), World([0.6, 0.8, 0.7], seed=9), []
        for t in range(300):
            y, outputs = w.step(t)
            asked = p.select(s, r)
            picks.append(asked)
            s = p.observe(s, {m: outputs[m] for m in asked}, float(y), asked=asked)
        return picks, p.serialize(s)

    assert continue_(state, 11) == continue_(restored, 11)


def test_numpy_generator_is_an_accepted_rng_and_runs_are_reproducible() -> None:
    p = get_policy("exp3")
    s = p.init_state(MODELS)
    a = [p.select(s, np.random.default_rng(3))[0] for _ in range(5)]
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [p.select(s, g1) for _ in range(50)] == [p.select(s, g2) for _ in range(50)]
    assert len(set(a)) == 1  # a fresh generator with the same seed draws the same model
    assert p.select(s, 5) == p.select(s, 5)  # an int seeds a fresh generator
    assert set(m for _ in range(200) for m in p.select(s, None)) == set(MODELS)


def test_observe_does_not_change_the_state_it_is_given() -> None:
    for name in ("exp3", "exp4", "epsilon_greedy", "ucb"):
        p = get_policy(name)
        s = p.init_state(MODELS)
        before = p.serialize(s)
        after = p.observe(s, {"m0:1": "1", "new:1": "0"}, 1.0)
        assert p.serialize(s) == before
        assert after.t == 1 and after.models == [*MODELS, "new:1"]
        assert p.observe(s, {}, 1.0) is s  # nothing answered: nothing learned


def test_models_added_and_removed() -> None:
    p = get_policy("exp3")
    s = p.init_state(["a", "b", "c"])
    for a, lw in zip(s.arms, (0.0, math.log(0.5), math.log(0.25)), strict=True):
        a.log_weight = lw
    s.arms[0].n, s.arms[0].mean_loss = 10, 0.1
    s2 = p.with_models(s, ["b", "a", "d"])  # c removed, d added, order follows the new list
    assert s2.models == ["b", "a", "d"]
    assert s2.arm("a").n == 10 and s2.arm("a").mean_loss == 0.1
    assert math.exp(s2.arm("d").log_weight) == pytest.approx((1.0 + 0.5) / 2)  # mean weight of the kept ones
    assert s2.arm("d").n == 0
    assert s.models == ["a", "b", "c"]  # unchanged
    assert p.with_models(s, ["a", "b", "c"]) is s
    empty = p.with_models(s, [])
    assert empty.models == [] and p.select(empty, 0) == [] and p.combine(empty, {}) is None


def test_load_falls_back_to_a_fresh_state_and_adopts_other_policies_states() -> None:
    exp3, ucb = get_policy("exp3"), get_policy("ucb")
    assert exp3.load(None, MODELS, seed=1) == exp3.init_state(MODELS, seed=1)
    assert exp3.load('{"y_hat":"0.0"}', MODELS) == exp3.init_state(MODELS)  # Clipper's default-policy state
    assert exp3.load("not json", MODELS) == exp3.init_state(MODELS)
    picks, learned = run_bandit(ucb, [0.6, 0.9, 0.7], 300, seed=4)
    adopted = exp3.load(ucb.serialize(learned), [*MODELS, "m3:1"])
    assert adopted.policy == "exp3" and adopted.params == exp3.params
    assert adopted.arm("m1:1").n == learned.arm("m1:1").n and adopted.models[-1] == "m3:1"
    with pytest.raises(ValueError):
        exp3.deserialize('{"version": 1, "policy": "exp3"}')


# --------------------------------------------------------------------------- shared state (ModelSelector)


class SharedStore:
    """Stands in for Redis: the states of one app by uid, changed only by the updates selectors hand over."""

    def __init__(self) -> None:
        self.states: dict[int, str] = {}
        self.queued: list[tuple[int, StateUpdate]] = []

    def persist(self, app: str, uid: int, update: StateUpdate) -> None:
        self.queued.append((uid, update))

    def apply(self, order: list[int]) -> None:
        """Applies the queued updates in the given order (indices into `queued`), as two writers might."""
        for i in order:
            uid, update = self.queued[i]
            self.states[uid] = update(self.states.get(uid), self.states.get(0))
        self.queued.clear()


@pytest.mark.parametrize("name", ["exp3", "exp4", "epsilon_greedy", "ucb"])
def test_feedback_through_two_selectors_all_counts_in_the_shared_state(name: str) -> None:
    """Two frontends' selectors learn from their own feedback; the updates they hand over, applied to the
    shared state in any interleaving, teach it every feedback, and both selectors then serve that state."""
    store = SharedStore()
    models = {m: i for i, m in enumerate(MODELS)}
    a, b = (ModelSelector("app", name, models, persist=store.persist, seed=s) for s in (1, 2))
    world = World([0.6, 0.9, 0.7], seed=3)
    n = 200
    for t in range(n):
        for selector in (a, b):
            y, outputs = world.step(t)
            asked = [m for m, _ in selector.feedback_models(0)]
            selector.observe(0, {m: outputs[m] for m in asked}, float(y), asked)
    assert a.state(0).t == b.state(0).t == n  # each learned only its own feedback
    order = list(range(len(store.queued)))
    random.Random(4).shuffle(order)
    store.apply(order)
    shared = get_policy(name).deserialize(store.states[0])
    assert shared.t == 2 * n
    assert sum(arm.n for arm in shared.arms) >= 2 * n  # every feedback observed at least one model
    for selector in (a, b):
        selector.load(0, store.states[0], newer_only=True)
        assert selector.state(0) == get_policy(name).load(store.states[0], MODELS)


def test_a_stored_state_replaces_the_one_in_memory_unless_it_is_older() -> None:
    selector = ModelSelector("app", "exp3", {m: i for i, m in enumerate(MODELS)})
    for _ in range(3):
        selector.observe(0, {"m0:1": "1"}, 1.0, ["m0:1"])
    mine = selector.state(0)
    p = get_policy("exp3")
    older = p.serialize(p.observe(p.init_state(MODELS), {"m1:1": "1"}, 1.0, ["m1:1"]))
    selector.load(0, older, newer_only=True)
    assert selector.state(0) is mine  # read before this frontend's updates reached Redis
    same_t = p.init_state(MODELS)
    for _ in range(3):
        same_t = p.observe(same_t, {"m1:1": "0"}, 1.0, ["m1:1"])
    selector.load(0, p.serialize(same_t), newer_only=True)
    assert selector.state(0) == same_t, "Redis is the reference when it has learned as much"
    selector.load(0, older)  # a snapshot replaces whatever is in memory
    assert selector.state(0).t == 1
    selector.load(0, None)
    assert selector.state(0).t == 0  # forgotten (a reset): back to a fresh state


def test_a_state_update_is_pure_and_starts_new_users_from_the_default_user() -> None:
    store = SharedStore()
    selector = ModelSelector("app", "exp4", {m: i for i, m in enumerate(MODELS)}, persist=store.persist)
    selector.observe(7, {m: "1" for m in MODELS}, 0.0, list(MODELS))
    ((uid, update),) = store.queued
    p = get_policy("exp4")
    shared = p.init_state(MODELS)
    for _ in range(4):
        shared = p.observe(shared, {m: "1" for m in MODELS}, 1.0, list(MODELS))
    text = p.serialize(shared)
    first = update(None, text)
    assert update(None, text) == first, "the same inputs give the same state (a retried write is safe)"
    assert uid == 7 and p.deserialize(first).t == 5  # user 7 starts from what user 0 learned
    assert p.deserialize(update(first, text)).t == 6  # then from its own
    assert p.deserialize(update(None, None)).t == 1
