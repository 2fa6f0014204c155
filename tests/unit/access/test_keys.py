"""The key store: keys stored hashed, shared through the registry folder, re-read when it changes."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsys.access import tokens
from recsys.access.keys import KEYS_FILE, KeyStore
from recsys.access.scopes import Scope, parse_scopes
from recsys.errors import DataFormatError, InvalidRequest, KeyNameTaken, KeyNotFound, UnknownScope

BOTH = {Scope.RECOMMEND, Scope.FEEDBACK}


def test_a_created_key_is_stored_as_its_hash_only(tmp_path: Path) -> None:
    record, key = KeyStore(tmp_path).create("web", BOTH)
    text = (tmp_path / KEYS_FILE).read_text()
    assert key not in text and key.split("_", 2)[2] not in text  # nor its secret part
    assert record.sha256 == hashlib.sha256(key.encode()).hexdigest() and record.sha256 in text
    assert key.startswith(record.key_id) and len(record.key_id) == len("rsk_") + 8
    assert record.scopes == (Scope.RECOMMEND, Scope.FEEDBACK) and not record.revoked


def test_keys_are_random_and_long(tmp_path: Path) -> None:
    keys = [KeyStore(tmp_path).create(f"k{i}", {Scope.ADMIN})[1] for i in range(20)]
    assert len(set(keys)) == 20
    secrets = [key[len(tokens.key_id(key) or "") + 1 :] for key in keys]
    assert all(len(secret) == 43 for secret in secrets)  # 32 random bytes, URL-safe base64
    assert len({tokens.key_id(key) for key in keys}) == 20


def test_create_list_and_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    _, web = store.create("web", BOTH, now=datetime(2025, 1, 1, tzinfo=UTC))
    _, ops = store.create("ops", {Scope.ADMIN}, now=datetime(2025, 1, 2, tzinfo=UTC))
    assert [r.name for r in store.records()] == ["web", "ops"]
    assert store.authenticate(web) is not None and store.authenticate(ops) is not None
    revoked = store.revoke("web", now=datetime(2025, 2, 1, tzinfo=UTC))
    assert revoked.revoked_at == datetime(2025, 2, 1, tzinfo=UTC)
    assert store.authenticate(web) is None and store.authenticate(ops) is not None
    again = store.revoke("web")  # already revoked: unchanged
    assert again.revoked_at == datetime(2025, 2, 1, tzinfo=UTC)
    assert [(r.name, r.revoked) for r in store.records()] == [("web", True), ("ops", False)]


@pytest.mark.parametrize(
    "presented",
    ["", "rsk_", "Bearer x", "rsk_00000000_" + "a" * 43, "\ud800", "rsk_1234abcd_" + "\x00" * 43],
)
def test_anything_but_a_stored_key_is_refused(tmp_path: Path, presented: str) -> None:
    store = KeyStore(tmp_path)
    _, key = store.create("web", BOTH)
    assert store.authenticate(presented) is None
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # one character off
    assert store.authenticate(key) is not None


def test_errors_name_the_problem(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.create("web", BOTH)
    store.revoke("web")
    with pytest.raises(KeyNameTaken, match="'web' exists"):
        store.create("web", BOTH)  # revoked keys keep their names
    with pytest.raises(KeyNotFound, match="no key named 'nobody'"):
        store.revoke("nobody")
    for bad in ("", "has space", "-leading", "x" * 65, "(admin token)"):
        with pytest.raises(InvalidRequest, match="key name"):
            store.create(bad, BOTH)
    with pytest.raises(InvalidRequest, match="at least one scope"):
        store.create("empty", set())
    assert [r.name for r in store.records()] == ["web"]


def test_scopes_are_parsed_from_a_comma_separated_list() -> None:
    assert parse_scopes("recommend, feedback") == frozenset(BOTH)
    assert parse_scopes("admin,admin") == frozenset({Scope.ADMIN})
    with pytest.raises(UnknownScope, match=r"'everything'.*recommend, feedback, admin"):
        parse_scopes("recommend,everything")
    with pytest.raises(InvalidRequest, match="at least one scope"):
        parse_scopes(" , ")


def test_two_stores_on_one_folder_share_the_keys(tmp_path: Path) -> None:
    """As two replicas over one registry: each sees the other's changes at its next lookup."""
    replica, cli = KeyStore(tmp_path), KeyStore(tmp_path)
    assert replica.authenticate(tokens.new_key()) is None  # no file yet
    _, key = cli.create("web", BOTH)
    assert replica.authenticate(key) is not None
    cli.revoke("web")
    assert replica.authenticate(key) is None
    _, other = replica.create("app", {Scope.FEEDBACK})
    assert cli.authenticate(other) is not None


def test_the_file_is_read_again_only_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(tmp_path)
    _, key = KeyStore(tmp_path).create("web", BOTH)
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        if self.name == KEYS_FILE:
            reads.append(1)
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", counting_open)
    for _ in range(50):
        assert store.authenticate(key) is not None
    assert len(reads) == 1
    KeyStore(tmp_path).create("other", BOTH)
    reads.clear()
    for _ in range(5):
        assert store.authenticate(key) is not None
    assert len(reads) == 1


def test_a_damaged_file_admits_no_key_and_is_refused_by_writers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyStore(tmp_path)
    _, key = store.create("web", BOTH)
    (tmp_path / KEYS_FILE).write_text('{"keys": [{"name": "web"')
    assert store.authenticate(key) is None
    assert store.authenticate(key) is None
    assert len([r for r in caplog.records if "no API key is accepted" in r.getMessage()]) == 1
    assert key not in caplog.text
    with pytest.raises(DataFormatError, match=KEYS_FILE):
        store.create("other", BOTH)


def test_concurrent_creates_lose_nothing(tmp_path: Path) -> None:
    """Writers hold the registry's lock: every key created at once is in the file, once."""
    created: dict[str, str] = {}
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            created[f"k{i}"] = KeyStore(tmp_path).create(f"k{i}", BOTH)[1]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    store = KeyStore(tmp_path)
    assert sorted(r.name for r in store.records()) == sorted(created)
    assert all(store.authenticate(key) is not None for key in created.values())
    assert json.loads((tmp_path / KEYS_FILE).read_text())["format"] == 1
    assert not list(tmp_path.glob(f".{KEYS_FILE}.*"))  # no temporary file left behind
