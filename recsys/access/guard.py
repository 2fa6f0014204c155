"""Whether a presented API key may use a route: the key store, the admin token and the off switch."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from recsys.access import tokens
from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.errors import AccessDenied, Unauthenticated

ADMIN_TOKEN_CLIENT = "(admin token)"
"""The client name of the configured admin token (no key name can take it: it has parentheses)."""
ANONYMOUS = "(anonymous)"
"""The one client of a service with authentication off."""
MISSING = "missing API key: send the header Authorization: Bearer KEY"
REFUSED = "unknown or revoked API key"


@dataclass(frozen=True)
class Client:
    """Who is calling, as far as access and rate limits go: a key's name and scopes."""

    name: str
    scopes: frozenset[Scope]


class Guard:
    """Checks the key a request presents against the scopes its route needs.

    Parameters
    ----------
    keys : KeyStore
        The keys of the registry the service serves from.
    admin_token : str, optional
        A secret accepted as a key with the ``admin`` scope (``RECSYS_ADMIN_TOKEN``).
    required : bool
        ``False`` opens every route to every caller, key or not (local experiments).
    """

    def __init__(self, keys: KeyStore, *, admin_token: str | None = None, required: bool = True) -> None:
        self.keys, self.required = keys, required
        self._admin_digest = tokens.digest(admin_token) if admin_token else None

    def authorize(self, key: str | None, needs: Collection[Scope]) -> Client:
        """The client presenting ``key``, which must hold one of the scopes ``needs``.

        Parameters
        ----------
        key : str or None
            The key sent, ``None`` when none was.
        needs : collection of Scope
            Scopes any one of which allows the route (empty: any valid key).

        Returns
        -------
        Client
            The key's name and scopes (:data:`ANONYMOUS` with every scope when keys are not required).

        Raises
        ------
        Unauthenticated
            No key, or one that is unknown or revoked (the message never repeats it).
        AccessDenied
            A valid key without any of ``needs``.
        """
        if not self.required:
            return Client(ANONYMOUS, frozenset(Scope))
        client = self.identify(key)
        if needs and client.scopes.isdisjoint(needs):
            wanted = " or ".join(scope.value for scope in Scope if scope in needs)
            raise AccessDenied(f"the key {client.name!r} lacks the scope this route needs: {wanted}")
        return client

    def identify(self, key: str | None) -> Client:
        """The client of a valid key; :class:`Unauthenticated` for none, an unknown or a revoked one."""
        if not key:
            raise Unauthenticated(MISSING)
        record = self.keys.authenticate(key)
        if record is not None:
            return Client(record.name, frozenset(record.scopes))
        if self._admin_digest is not None and tokens.matches(key, self._admin_digest):
            return Client(ADMIN_TOKEN_CLIENT, frozenset({Scope.ADMIN}))
        raise Unauthenticated(REFUSED)
