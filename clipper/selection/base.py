"""The selection-policy interface, the policy state and its JSON form.

A policy object holds no per-app data: everything it learns lives in a `State`, which the caller
keeps (in Redis, per app and per user id, shared by every query frontend) as the JSON string
`serialize` returns. All methods are pure: `observe` and `with_models` return a new state and never
change the one they are given; randomness comes only from the `rng` passed in, so a run is
reproducible from its seed.

State JSON (compact, keys in this order)::

    {"version": 1,
     "policy": "exp3",                        # registry name of the policy that wrote it
     "seed": 7,                               # the seed given to init_state (or null); provenance
     "t": 1234,                               # feedback updates applied so far
     "params": {"eta": 0.1, "gamma": 0.05, ...},   # the policy's parameters, fixed at init_state
     "arms": [                                # one per model, in model order (the tie-break order)
        {"model": "m:1", "log_weight": 0.0, "n": 812, "mean_loss": 0.093},
        ...]}

`log_weight` is the (natural) log of a model's weight, kept with the largest at 0 (Exp3, Exp4; the
other policies leave it at 0); `n` counts the feedbacks in which the model answered and `mean_loss`
is its recency-weighted mean loss (every policy but the default keeps these two).
"""

from __future__ import annotations

import copy
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .outputs import COMBINE_MODES, combine_outputs, loss

STATE_VERSION = 1


class Rng(Protocol):
    """What a policy needs from a random source: `random.Random` and numpy Generators qualify."""

    def random(self) -> float: ...


RngLike = Rng | int | None


_SYSTEM_RNG = random.Random()


def as_rng(rng: RngLike) -> Rng:
    """`rng` itself; `random.Random(rng)` for an int seed (a fresh generator: the same int gives the same
    draws); a process-wide generator seeded from the OS for None (not reproducible)."""
    if rng is None:
        return _SYSTEM_RNG
    if isinstance(rng, int):
        return random.Random(rng)
    return rng


def draw_index(probs: Sequence[float], rng: Rng) -> int:
    """An index drawn with the given probabilities (summing to ~1) from one `rng.random()` draw."""
    u = float(rng.random())
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return len(probs) - 1


def log_mean_exp(xs: Sequence[float]) -> float:
    """log(mean(exp(xs))), computed stably."""
    m = max(xs)
    return m + math.log(math.fsum(math.exp(x - m) for x in xs) / len(xs))


@dataclass
class Arm:
    """What a policy knows of one model."""

    model: str
    log_weight: float = 0.0
    n: int = 0
    mean_loss: float = 0.0


@dataclass
class State:
    """The learned state of one (app, user id): see the module documentation for its JSON form."""

    policy: str
    arms: list[Arm] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    t: int = 0

    @property
    def models(self) -> list[str]:
        return [a.model for a in self.arms]

    def arm(self, model: str) -> Arm | None:
        for a in self.arms:
            if a.model == model:
                return a
        return None

    def copy(self) -> State:
        """A deep copy (arms and params are not shared)."""
        return State(
            policy=self.policy,
            arms=[Arm(a.model, a.log_weight, a.n, a.mean_loss) for a in self.arms],
            params=dict(self.params),
            seed=self.seed,
            t=self.t,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "policy": self.policy,
                "seed": self.seed,
                "t": self.t,
                "params": self.params,
                "arms": [
                    {"model": a.model, "log_weight": a.log_weight, "n": a.n, "mean_loss": a.mean_loss}
                    for a in self.arms
                ],
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @staticmethod
    def from_json(text: str | bytes) -> State:
        """Parses `to_json`'s output; ValueError on anything else."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"selection state is not JSON: {e}") from None
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise ValueError("not a selection state of version 1")
        try:
            arms = [
                Arm(
                    model=str(a["model"]),
                    log_weight=float(a["log_weight"]),
                    n=int(a["n"]),
                    mean_loss=float(a["mean_loss"]),
                )
                for a in d["arms"]
            ]
            seed = d.get("seed")
            params = d.get("params") or {}
            if not isinstance(params, dict):
                raise TypeError("params must be an object")
            return State(
                policy=str(d["policy"]),
                arms=arms,
                params=dict(params),
                seed=None if seed is None else int(seed),
                t=int(d.get("t", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed selection state: {e}") from None


@dataclass(frozen=True)
class Combined:
    """A combined answer: the output string (as a model would return it) and the models behind it."""

    output: str
    models: list[str]


class SelectionPolicy(ABC):
    """A model-selection policy. Subclasses set `name`, `aliases`, `defaults` and the abstract methods.

    `params` given to the constructor override `defaults`; unknown names are a ValueError.
    """

    #: Registry key ("default", "exp3", ...).
    name: ClassVar[str]
    #: Other accepted spellings, e.g. Clipper's class names.
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Whether an app with this policy may link several models.
    allows_many: ClassVar[bool] = True
    #: Whether `select` asks several models whose answers `combine` merges by weight (Exp4).
    combines_all: ClassVar[bool] = False
    #: Parameter names and default values.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown parameters for selection policy {self.name}: {sorted(unknown)}")
        self.params: dict[str, Any] = {**self.defaults, **params}
        mode = self.params.get("combine")
        if mode is not None and mode not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, not {mode!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    # ------------------------------------------------------------------ state life cycle

    def init_state(self, models: Iterable[str], seed: int | None = None) -> State:
        """A fresh state over `models` (order kept, duplicates dropped)."""
        arms: list[Arm] = []
        seen: set[str] = set()
        for m in models:
            if m not in seen:
                seen.add(m)
                arms.append(Arm(model=m))
        return State(policy=self.name, arms=arms, params=dict(self.params), seed=seed, t=0)

    def with_models(self, state: State, models: Iterable[str]) -> State:
        """`state` over exactly `models`, in that order: removed models are dropped, what was learned of
        the others is kept, and new models start at the mean weight (and the mean loss, unobserved).

        Returns `state` itself when nothing changes.
        """
        wanted = list(dict.fromkeys(models))
        if wanted == state.models:
            return state
        old = {a.model: a for a in state.arms}
        kept = [old[m] for m in wanted if m in old]
        if kept:
            mean_lw = log_mean_exp([a.log_weight for a in kept])
            mean_loss = math.fsum(a.mean_loss for a in kept) / len(kept)
        else:
            mean_lw, mean_loss = 0.0, 0.0
        arms = [
            copy.copy(old[m]) if m in old else Arm(model=m, log_weight=mean_lw, n=0, mean_loss=mean_loss)
            for m in wanted
        ]
        new = State(policy=state.policy, arms=arms, params=dict(state.params), seed=state.seed, t=state.t)
        self._normalise(new)
        return new

    def load(self, text: str | bytes | None, models: Iterable[str], seed: int | None = None) -> State:
        """The state to use for `models`: `text` (a stored state) when it parses, else a fresh one.

        A state written by another policy keeps what it learned and takes this policy's parameters
        (the app's policy changed); Clipper's own state (``{"y_hat": ...}``) counts as absent.
        """
        models = list(models)
        if text is None:
            return self.init_state(models, seed)
        try:
            state = self.deserialize(text)
        except ValueError:
            return self.init_state(models, seed)
        return self.with_models(state, models)

    def serialize(self, state: State) -> str:
        """`state` as a JSON string (see the module documentation)."""
        return state.to_json()

    def deserialize(self, text: str | bytes) -> State:
        """A state from `serialize`'s string; ValueError when it is not one.

        A state written by a different policy is adopted: learned arms kept, parameters replaced.
        """
        state = State.from_json(text)
        if state.policy != self.name:
            state.policy = self.name
            state.params = dict(self.params)
        else:
            state.params = {**self.defaults, **state.params}
        return state

    # ------------------------------------------------------------------ the policy proper

    @abstractmethod
    def probabilities(self, state: State) -> dict[str, float]:
        """Each model's share of `select` (single-model policies) or its combining weight (Exp4)."""

    @abstractmethod
    def select(self, state: State, rng: RngLike = None) -> list[str]:
        """The models to ask for one query ([] when the state has no model)."""

    def feedback_models(self, state: State, rng: RngLike = None) -> list[str]:
        """The models to ask for the input of a feedback, whose outputs go to `observe`."""
        return self.select(state, rng)

    def combine(self, state: State, outputs: Mapping[str, str]) -> Combined | None:
        """The answer from the outputs of the models that answered in time (maybe a subset of those
        asked: stragglers), or None when `outputs` is empty (the app's default output applies).

        Policies that ask several models (`combines_all`) combine every answer by weight, renormalised
        over the models that answered; the others return the answer of the answering model they rank
        highest (`rank`; ties: model order). Outputs of models the state does not know are used as if
        the model had the mean weight.
        """
        if not outputs:
            return None
        st, answered = self._answered(state, outputs)
        if self.combines_all:
            probs = self.probabilities(st)
            raws = [outputs[m] for m in answered]
            out = combine_outputs(raws, [probs.get(m, 0.0) for m in answered], st.params.get("combine", "auto"))
            return Combined(out, answered)
        rank = self.rank(st)
        best = answered[0]
        for m in answered[1:]:
            if rank.get(m, -math.inf) > rank.get(best, -math.inf):
                best = m
        return Combined(outputs[best], [best])

    def rank(self, state: State) -> dict[str, float]:
        """How much the policy prefers each model's answer (higher is better); default: `probabilities`."""
        return self.probabilities(state)

    def observe(
        self, state: State, outputs: Mapping[str, str], label: Any, asked: Iterable[str] | None = None
    ) -> State:
        """A new state that has learned from one feedback: the outputs of the models asked for the
        feedback's input (`asked`, default: those in `outputs`; stragglers may be missing from
        `outputs`) and the true `label` (a number, or a string for string/class outputs)."""
        if not outputs:
            return state
        new = self._ensure_models(state, outputs)
        scale = float(new.params.get("loss_scale", 1.0))
        losses = {m: loss(raw, label, scale) for m, raw in outputs.items()}
        asked_list = list(dict.fromkeys(asked)) if asked is not None else list(outputs)
        self._update(new, losses, asked_list)
        new.t += 1
        return new

    # ------------------------------------------------------------------ helpers for subclasses

    def _update(self, state: State, losses: dict[str, float], asked: list[str]) -> None:
        """Applies one feedback's losses to `state` (a private copy) in place."""
        self._update_loss_stats(state, losses)

    def _update_loss_stats(self, state: State, losses: dict[str, float]) -> None:
        min_step = float(state.params.get("min_step", 0.0))
        for a in state.arms:
            if a.model in losses:
                a.n += 1
                step = max(1.0 / a.n, min_step)
                a.mean_loss += step * (losses[a.model] - a.mean_loss)

    def _ensure_models(self, state: State, models: Iterable[str]) -> State:
        """A private copy of `state` that also covers `models` (unknown ones appended, mean weight)."""
        missing = [m for m in models if state.arm(m) is None]
        if missing:
            return self.with_models(state, state.models + missing)
        return state.copy()

    def _normalise(self, state: State) -> None:
        """Keeps log-weights bounded: the largest at 0, none below -max_log_ratio."""
        if not state.arms:
            return
        top = max(a.log_weight for a in state.arms)
        floor = -float(state.params.get("max_log_ratio", math.inf))
        for a in state.arms:
            a.log_weight = max(a.log_weight - top, floor)

    def _answered(self, state: State, outputs: Mapping[str, str]) -> tuple[State, list[str]]:
        """(state covering every answering model, answering models in model order)."""
        st = self._ensure_models(state, outputs) if any(state.arm(m) is None for m in outputs) else state
        return st, [m for m in st.models if m in outputs]
