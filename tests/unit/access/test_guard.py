"""The access check: no key or a bad one is unauthenticated, a key without the scope is denied."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.access.guard import ADMIN_TOKEN_CLIENT, ANONYMOUS, Guard
from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.errors import AccessDenied, Unauthenticated

TOKEN = "an-admin-token-from-the-environment"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path)


@pytest.mark.parametrize(
    ("scopes", "needs", "allowed"),
    [
        ({Scope.RECOMMEND}, {Scope.RECOMMEND}, True),
        ({Scope.RECOMMEND}, {Scope.FEEDBACK}, False),
        ({Scope.FEEDBACK}, {Scope.RECOMMEND, Scope.ADMIN}, False),
        ({Scope.ADMIN}, {Scope.RECOMMEND, Scope.ADMIN}, True),
        ({Scope.ADMIN}, {Scope.FEEDBACK}, False),
        (set(Scope), {Scope.FEEDBACK}, True),
    ],
)
def test_a_key_needs_one_of_the_scopes(
    store: KeyStore, scopes: set[Scope], needs: set[Scope], allowed: bool
) -> None:
    record, key = store.create("client", scopes)
    guard = Guard(store)
    if allowed:
        client = guard.authorize(key, needs)
        assert client.name == "client" and client.scopes == frozenset(scopes)
    else:
        with pytest.raises(AccessDenied, match="'client' lacks the scope") as denied:
            guard.authorize(key, needs)
        assert key not in denied.value.message and record.sha256 not in denied.value.message


@pytest.mark.parametrize("key", [None, "", "wrong", "rsk_00000000_" + "x" * 43])
def test_no_key_or_an_unknown_one_is_unauthenticated(store: KeyStore, key: str | None) -> None:
    store.create("client", set(Scope))
    with pytest.raises(Unauthenticated) as refused:
        Guard(store, admin_token=TOKEN).authorize(key, {Scope.RECOMMEND})
    message = refused.value.message
    if key:
        assert key not in message and message == "unknown or revoked API key"
    else:
        assert message.startswith("missing API key")


def test_a_revoked_key_is_unauthenticated_at_its_next_use(store: KeyStore) -> None:
    _, key = store.create("client", {Scope.RECOMMEND})
    guard = Guard(store)
    assert guard.authorize(key, {Scope.RECOMMEND}).name == "client"
    KeyStore(store.root).revoke("client")  # another process, as `recsys keys revoke`
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        guard.authorize(key, {Scope.RECOMMEND})


def test_the_admin_token_is_a_key_with_the_admin_scope_only(store: KeyStore) -> None:
    guard = Guard(store, admin_token=TOKEN)
    client = guard.authorize(TOKEN, {Scope.ADMIN})
    assert client.name == ADMIN_TOKEN_CLIENT and client.scopes == {Scope.ADMIN}
    assert guard.authorize(TOKEN, {Scope.RECOMMEND, Scope.ADMIN}).name == ADMIN_TOKEN_CLIENT
    with pytest.raises(AccessDenied):
        guard.authorize(TOKEN, {Scope.FEEDBACK})
    with pytest.raises(Unauthenticated):
        Guard(store).authorize(TOKEN, {Scope.ADMIN})  # no token configured: just an unknown key
    with pytest.raises(Unauthenticated):
        guard.authorize(TOKEN[:-1], {Scope.ADMIN})


def test_with_keys_not_required_everyone_may_do_everything(store: KeyStore) -> None:
    guard = Guard(store, required=False)
    for key in (None, "anything"):
        client = guard.authorize(key, {Scope.ADMIN})
        assert client.name == ANONYMOUS and client.scopes == frozenset(Scope)
