"""The API key format: ``rsk_<id>_<secret>``, a public id and 256 random bits; stored as a SHA-256 digest.

The id (``rsk_`` and 8 hex digits) names the key in listings and finds its record; the
secret is ``secrets.token_urlsafe(32)``. A fast hash is enough for 256-bit random secrets
(nothing to guess, so nothing to slow down), and digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "rsk_"
ID_HEX_DIGITS = 8
SECRET_BYTES = 32
KEY_SHAPE = re.compile(rf"{PREFIX}[0-9a-f]{{{ID_HEX_DIGITS}}}_[A-Za-z0-9_-]{{20,128}}")


def new_key() -> str:
    """A new random key."""
    return f"{PREFIX}{secrets.token_hex(ID_HEX_DIGITS // 2)}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_id(key: str) -> str | None:
    """The public id of a key (``rsk_1a2b3c4d``), or ``None`` for a string not shaped like one."""
    if not KEY_SHAPE.fullmatch(key):
        return None
    return key[: len(PREFIX) + ID_HEX_DIGITS]


def digest(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def matches(key: str, stored: str) -> bool:
    """Whether ``key`` hashes to ``stored``, compared in constant time."""
    return hmac.compare_digest(digest(key), stored)


def authorization(key: str) -> dict[str, str]:
    """The HTTP header that presents ``key`` (``Authorization: Bearer KEY``)."""
    return {"Authorization": f"Bearer {key}"}
