"""The one-line message of a failed validation: the field's path and pydantic's reason, no value."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from serving.validation import MAX_MESSAGE_CHARS, describe, field, printable


def error(loc: tuple[Any, ...], msg: str, kind: str = "value_error", **extra: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind, "input": "SECRET-INPUT"} | extra


def test_a_body_field_is_named_by_its_path() -> None:
    found = describe(
        [error(("body", "events", 3, "listen_ms"), "Input should be greater than or equal to 0")]
    )
    assert found == "events.3.listen_ms: input should be greater than or equal to 0"


def test_query_and_path_parameters_are_named_alone() -> None:
    assert describe([error(("query", "k"), "Field required", "missing")]) == "k: field required"
    assert field(("path", "version")) == "version"


def test_the_whole_body_is_called_body() -> None:
    assert describe([error(("body",), "Field required", "missing")]) == "body: field required"
    assert describe([error(("body",), "whatever", "model_type")]) == "body: input should be a JSON object"


def test_a_validators_text_loses_pydantics_prefix() -> None:
    found = describe([error(("body", "events", 0), "Value error, listen_ms is required for play events")])
    assert found == "events.0: listen_ms is required for play events"


def test_more_errors_are_counted_not_listed() -> None:
    errors = [error(("body", "user_id"), "Field required", "missing")] * 1001
    assert describe(errors) == "user_id: field required (and 1000 more)"


def test_malformed_json_says_why() -> None:
    bad = error(("body", 17), "JSON decode error", "json_invalid", ctx={"error": "trailing characters"})
    assert describe([bad]) == "body: invalid JSON (trailing characters)"


def test_no_errors_still_gives_a_line() -> None:
    assert describe([]) == "the request is not valid"


@given(key=st.text(max_size=10_000), reason=st.text(max_size=1000))
def test_any_field_name_gives_one_short_printable_line(key: str, reason: str) -> None:
    found = describe([error(("body", key), reason)])
    assert len(found) <= MAX_MESSAGE_CHARS and found.isprintable()
    assert "SECRET-INPUT" not in found
    found.encode("utf-8")  # never a lone surrogate


def test_control_characters_and_surrogates_are_escaped() -> None:
    assert printable("a\nb\x00c\ud800") == "a\\nb\\x00c\\ud800"
    assert printable("écoute 🎵") == "écoute 🎵"
