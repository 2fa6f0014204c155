"""One human line for a request that failed validation: the field at fault, never its value.

``events.3.listen_ms: input should be greater than or equal to 0 (and 2 more)``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_NAME_CHARS = 64
"""Longest field name quoted (an unknown key is the caller's text, of any length)."""
MAX_MESSAGE_CHARS = 300
JSON_INVALID = "json_invalid"
"""FastAPI's error type for a body that is not JSON (its ``loc`` is a byte offset)."""
NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})
"""Error types whose message names a class (``instance of FeedbackEvent``): said plainly instead."""
REASON_PREFIXES = ("Value error, ", "Assertion failed, ")
"""What pydantic puts before the text of a validator's ``ValueError`` or ``assert``."""


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """The first error as ``path: reason``, and how many more there are.

    Parameters
    ----------
    errors : sequence of mapping
        Pydantic's errors as FastAPI reports them (``loc`` starting with ``body``,
        ``query``, ``path`` or ``header``); their ``input`` is never read.

    Returns
    -------
    str
        One line of at most ``MAX_MESSAGE_CHARS`` printable characters.
    """
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = "body" if first.get("type") == JSON_INVALID else field(first.get("loc", ()))
    line = f"{where}: {reason(first)}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more)"
    return shorten(line)


def field(loc: Sequence[str | int]) -> str:
    """``body``, ``events.3.listen_ms``, ``k``: where the error is, without the part of the request."""
    source, *path = loc or ["body"]
    if not path:
        return str(source)
    return ".".join(str(part) if isinstance(part, int) else printable(part)[:MAX_NAME_CHARS] for part in path)


def reason(error: Mapping[str, Any]) -> str:
    """Pydantic's message, as the rest of a sentence (``field required``)."""
    if error.get("type") == JSON_INVALID:
        detail = error.get("ctx", {}).get("error", "")
        return f"invalid JSON ({detail})" if detail else "invalid JSON"
    if error.get("type") in NOT_AN_OBJECT:
        return "input should be a JSON object"
    message = str(error.get("msg", "invalid"))
    for prefix in REASON_PREFIXES:
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:]


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (``\\x00``, ``\\ud800``)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def shorten(text: str) -> str:
    """Printable and at most ``MAX_MESSAGE_CHARS`` long."""
    text = printable(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"
