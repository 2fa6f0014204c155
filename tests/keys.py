"""API keys for tests: one created in a test registry's key store, and the header that sends it."""

from __future__ import annotations

import uuid
from pathlib import Path

from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.access.tokens import authorization


def new_key(root: Path, *scopes: Scope, name: str | None = None) -> str:
    """A new key in the key store of registry ``root`` (every scope unless ``scopes`` are given)."""
    _, key = KeyStore(root).create(name or f"test-{uuid.uuid4().hex[:8]}", scopes or tuple(Scope))
    return key


bearer = authorization
"""The header that presents a key."""


def authorised(root: Path, *scopes: Scope) -> dict[str, str]:
    """The header of a new key in registry ``root`` (every scope unless ``scopes`` are given)."""
    return bearer(new_key(root, *scopes))
