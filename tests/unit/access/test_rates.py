"""Feedback rate limits: events count per API key and per listener, a refusal counts nothing.

Windows are an hour long so that no test depends on how fast this machine runs it.
"""

from __future__ import annotations

import pytest

from recsys.access.rates import KEY, USER, FeedbackLimits, parse_rate
from recsys.errors import InvalidRequest, RateLimited

LOOSE = "1000000/hour"


def refusal(limits: FeedbackLimits, client: str, events: dict[str, int]) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        limits.admit(client=client, events_per_user=events)
    return refused.value


@pytest.mark.parametrize("limit", [1, 7, 50, 1000])
@pytest.mark.parametrize("batch", [1, 3, 10])
def test_a_key_gets_its_limit_in_events_whatever_the_batch_size(limit: int, batch: int) -> None:
    limits = FeedbackLimits(per_key=f"{limit}/hour", per_user=LOOSE)
    if batch > limit:
        with pytest.raises(InvalidRequest, match="send smaller batches"):
            limits.admit(client="app", events_per_user={"u": batch})
        return
    admitted, users = 0, iter(range(10**6))
    while True:
        events = {f"u{next(users)}": 1 for _ in range(batch)}  # listeners all different
        try:
            limits.admit(client="app", events_per_user=events)
        except RateLimited as exc:
            assert exc.limit == KEY and 3000 < exc.retry_after_s <= 3600
            break
        admitted += batch
    assert limit - batch < admitted <= limit
    limits.admit(client="other-app", events_per_user={"u0": batch})  # each key its own count


@pytest.mark.parametrize("limit", [1, 5, 20])
@pytest.mark.parametrize("keys", [1, 3])
def test_a_listener_gets_its_limit_across_keys_and_others_are_not_held_back(limit: int, keys: int) -> None:
    limits = FeedbackLimits(per_key=LOOSE, per_user=f"{limit}/hour")
    for i in range(limit):
        limits.admit(client=f"app{i % keys}", events_per_user={"busy": 1, f"quiet{i}": 1})
    refused = refusal(limits, f"app{limit % keys}", {"busy": 1, "newcomer": 1})
    assert refused.limit == USER and "per listener (1 of this request's)" in refused.message
    for _ in range(limit):
        limits.admit(client="app0", events_per_user={"newcomer": 1})  # not counted when refused
    assert refusal(limits, "app0", {"newcomer": 1}).limit == USER


def test_a_refused_request_counts_toward_nothing() -> None:
    limits = FeedbackLimits(per_key="10/hour", per_user="3/hour")
    limits.admit(client="app", events_per_user={"full": 3})
    for _ in range(5):
        refusal(limits, "app", {"full": 1, "other": 2})
    limits.admit(client="app", events_per_user={"other": 3, "third": 3, "fourth": 1})  # 10 in all
    assert refusal(limits, "app", {"fifth": 1}).limit == KEY


def test_retry_after_is_whole_seconds_until_the_window_has_room() -> None:
    limits = FeedbackLimits(per_key="2/minute", per_user=LOOSE)
    limits.admit(client="app", events_per_user={"u": 2})
    refused = refusal(limits, "app", {"u": 1})
    assert isinstance(refused.retry_after_s, int) and 1 <= refused.retry_after_s <= 60
    assert f"retry in {refused.retry_after_s} s" in refused.message


@pytest.mark.parametrize("text", ["200/second", "20 per second", "600/minute", "5/hour", "10/2 minutes"])
def test_limits_notation_is_accepted(text: str) -> None:
    assert parse_rate(text).amount > 0


@pytest.mark.parametrize("text", ["", "fast", "200", "200/fortnight", "-1/second"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        parse_rate(text)
