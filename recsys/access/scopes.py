"""What an API key allows: the scopes ``recommend``, ``feedback`` and ``admin``."""

from __future__ import annotations

from enum import StrEnum

from recsys.errors import InvalidRequest, UnknownScope


class Scope(StrEnum):
    """One thing a key allows; a route needs one of a few scopes."""

    RECOMMEND = "recommend"
    """Ask for recommendations and read the registry, the plan and the dashboard."""
    FEEDBACK = "feedback"
    """Post plays, skips, loves and hates."""
    ADMIN = "admin"
    """Promote, roll back and change the rollout plan (and read what ``recommend`` reads)."""


def parse_scopes(text: str) -> frozenset[Scope]:
    """The scopes of a comma-separated list such as ``recommend,feedback``.

    Parameters
    ----------
    text : str
        Scope names separated by commas; blanks around them are ignored.

    Returns
    -------
    frozenset of Scope

    Raises
    ------
    UnknownScope
        A name that is not a scope.
    InvalidRequest
        No scope at all.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise InvalidRequest(f"a key needs at least one scope ({known()})")
    unknown = sorted({name for name in names if name not in Scope.__members__.values()})
    if unknown:
        raise UnknownScope(f"unknown scope {', '.join(map(repr, unknown))}; known scopes: {known()}")
    return frozenset(Scope(name) for name in names)


def known() -> str:
    """The scope names, comma-separated."""
    return ", ".join(scope.value for scope in Scope)


def listed(scopes: frozenset[Scope] | tuple[Scope, ...]) -> str:
    """``scopes`` comma-separated, in their declared order."""
    return ",".join(scope.value for scope in Scope if scope in scopes)
