"""Policy names: the registry, Clipper's aliases, and which policies may serve several models."""

from __future__ import annotations

import re
from typing import Any

from .base import SelectionPolicy
from .default import DefaultOutputSelectionPolicy
from .epsilon_greedy import EpsilonGreedyPolicy
from .exp3 import Exp3Policy
from .exp4 import Exp4Policy
from .ucb import UCBPolicy

#: Registry name -> policy class.
POLICIES: dict[str, type[SelectionPolicy]] = {
    cls.name: cls for cls in (DefaultOutputSelectionPolicy, Exp3Policy, Exp4Policy, EpsilonGreedyPolicy, UCBPolicy)
}
DEFAULT = DefaultOutputSelectionPolicy.name


class UnknownPolicyError(ValueError):
    """A policy name that is not registered; the message is Clipper's 400 text."""

    def __init__(self, name: object) -> None:
        super().__init__(f"{name} is an invalid selection_policy.")
        self.name = name


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


_BY_ALIAS: dict[str, str] = {_norm(alias): cls.name for cls in POLICIES.values() for alias in (cls.name, *cls.aliases)}


def canonical_name(name: str | None) -> str:
    """The registry name of `name` (case, `_`, `-` and spaces ignored; Clipper's class names accepted).

    None or "" means the default policy. Unknown names raise UnknownPolicyError.
    """
    if name is None or (isinstance(name, str) and not name.strip()):
        return DEFAULT
    if not isinstance(name, str):
        raise UnknownPolicyError(name)
    try:
        return _BY_ALIAS[_norm(name)]
    except KeyError:
        raise UnknownPolicyError(name) from None


def is_known(name: str | None) -> bool:
    """Whether `name` names a registered policy (None and "" do: the default)."""
    try:
        canonical_name(name)
    except UnknownPolicyError:
        return False
    return True


def get_policy(name: str | None = None, **params: Any) -> SelectionPolicy:
    """A policy object for `name` with `params` overriding its defaults (see each class's `defaults`)."""
    return POLICIES[canonical_name(name)](**params)


def policy_allows_many(name: str | None) -> bool:
    """Whether an app with this policy may link several models: False only for the default policy
    (None, "", "default", "DefaultOutputSelectionPolicy", ...). Names it does not know get True (they
    are not the default; validate names with `canonical_name`)."""
    try:
        return POLICIES[canonical_name(name)].allows_many
    except UnknownPolicyError:
        return True
