"""The API key a benchmark's clients present: created in the registry its server reads, revoked at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.access.tokens import authorization

__all__ = ["api_key", "authorization", "new_api_key"]


def new_api_key(registry: Path, purpose: str) -> tuple[str, str]:
    """A new key with every scope, named after ``purpose``: its name and the key."""
    record, key = KeyStore(registry).create(f"bench-{purpose}-{uuid.uuid4().hex[:6]}", tuple(Scope))
    return record.name, key


@contextmanager
def api_key(registry: Path, purpose: str) -> Iterator[str]:
    """A new key with every scope, named after ``purpose``, revoked when the block ends."""
    name, key = new_api_key(registry, purpose)
    try:
        yield key
    finally:
        KeyStore(registry).revoke(name)
