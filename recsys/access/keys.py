"""The key store: API keys' records in ``keys.json`` in the registry folder, read by every replica.

Only a SHA-256 digest of each key is stored, with its name, scopes, public id and dates; the
key itself is shown once, when it is created. Writers hold the registry's writer lock and
replace the file atomically, so concurrent ``recsys keys`` commands never lose a change and
readers never see half a file. A replica re-reads the file only when its identity, size or
times change (one ``stat`` per check), so created and revoked keys apply without a restart.
A file that cannot be read admits no key at all (logged once per change of the file).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from recsys.access import tokens
from recsys.access.scopes import Scope
from recsys.errors import DataFormatError, InvalidRequest, KeyNameTaken, KeyNotFound
from recsys.registry.experiment_log import exclusive, fsync_dir

KEYS_FILE = "keys.json"
FORMAT = 1
NAME_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
log = logging.getLogger(__name__)

Signature = tuple[int, int, int, int]
"""What tells a replaced or rewritten file apart: inode, size, mtime and ctime (ns)."""


class KeyRecord(BaseModel):
    """One API key as stored: never the key itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    scopes: tuple[Scope, ...]
    key_id: str
    """The key's public id (``rsk_`` and 8 hex digits, its first characters), for listings."""
    sha256: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class KeyFile(BaseModel):
    """The content of ``keys.json``."""

    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    keys: list[KeyRecord]


class KeyStore:
    """API keys of one registry folder.

    Parameters
    ----------
    root : Path
        The registry folder; the keys are in ``root/keys.json``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / KEYS_FILE
        self._lock = threading.Lock()
        self._seen: Signature | None = None
        self._by_id: dict[str, KeyRecord] = {}

    # -- reading -------------------------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first.

        Raises
        ------
        DataFormatError
            ``keys.json`` exists but cannot be read.
        """
        return read_keys(self.path)

    def authenticate(self, key: str) -> KeyRecord | None:
        """The record of ``key`` if it is known and not revoked, else ``None``.

        Parameters
        ----------
        key : str
            The key as presented by a client.
        """
        found = self._current().get(tokens.key_id(key) or "")
        if found is None or found.revoked or not tokens.matches(key, found.sha256):
            return None
        return found

    def _current(self) -> dict[str, KeyRecord]:
        """The records by key id, re-read when the file has changed since the last look."""
        if _signature(self.path) != self._seen:
            with self._lock:
                self._reload()
        return self._by_id

    def _reload(self) -> None:
        try:
            with self.path.open("rb") as fh:
                seen = _of(os.fstat(fh.fileno()))
                if seen == self._seen:
                    return
                text = fh.read()
        except FileNotFoundError:
            self._by_id, self._seen = {}, None
            return
        try:
            records = _parse(text, self.path)
        except DataFormatError as exc:
            log.error("no API key is accepted until the key file is repaired: %s", exc.message)
            records = []
        self._by_id, self._seen = {r.key_id: r for r in records}, seen

    # -- writing -------------------------------------------------------------------------

    def create(
        self, name: str, scopes: Collection[Scope], *, now: datetime | None = None
    ) -> tuple[KeyRecord, str]:
        """Create a key; returns its record and the key, which is not stored and cannot be shown again.

        Parameters
        ----------
        name : str
            1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit; unique,
            revoked keys included.
        scopes : collection of Scope
            At least one.
        now : datetime, optional
            Its creation time (default: now, UTC).

        Raises
        ------
        InvalidRequest
            A malformed name, or no scope.
        KeyNameTaken
            A key by that name exists.
        """
        if not NAME_SHAPE.fullmatch(name):
            raise InvalidRequest(
                "a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if not scopes:
            raise InvalidRequest("a key needs at least one scope")
        with exclusive(self.root):
            records = read_keys(self.path)
            if any(r.name == name for r in records):
                raise KeyNameTaken(f"a key named {name!r} exists already (revoked keys keep their names)")
            key = _unused_key({r.key_id for r in records})
            record = KeyRecord(
                name=name,
                scopes=tuple(scope for scope in Scope if scope in set(scopes)),
                key_id=str(tokens.key_id(key)),
                sha256=tokens.digest(key),
                created_at=now or datetime.now(UTC),
            )
            _write(self.path, [*records, record])
        return record, key

    def revoke(self, name: str, *, now: datetime | None = None) -> KeyRecord:
        """Revoke the key named ``name`` (at once on every replica); a revoked key stays revoked.

        Returns
        -------
        KeyRecord
            The key's record, with the time it was revoked (the first time, if it already was).

        Raises
        ------
        KeyNotFound
            No key by that name.
        """
        with exclusive(self.root):
            records = read_keys(self.path)
            found = next((r for r in records if r.name == name), None)
            if found is None:
                raise KeyNotFound(f"no key named {name!r} in {self.path}")
            if found.revoked:
                return found
            revoked = found.model_copy(update={"revoked_at": now or datetime.now(UTC)})
            _write(self.path, [revoked if r.name == name else r for r in records])
        return revoked


def read_keys(path: Path) -> list[KeyRecord]:
    """The records in ``path`` (none when it does not exist).

    Raises
    ------
    DataFormatError
        The file is not a key file.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    return _parse(text, path)


def _parse(text: bytes, path: Path) -> list[KeyRecord]:
    try:
        return KeyFile.model_validate_json(text).keys
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "content"
        raise DataFormatError(path, f"not a key file ({where}: {first['msg']})") from exc


def _write(path: Path, records: list[KeyRecord]) -> None:
    """Replace ``path`` atomically (write a temporary file, fsync, rename, fsync the folder)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    data = KeyFile(keys=records).model_dump(mode="json")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _unused_key(taken: set[str]) -> str:
    key = tokens.new_key()
    while tokens.key_id(key) in taken:
        key = tokens.new_key()
    return key


def _signature(path: Path) -> Signature | None:
    try:
        return _of(os.stat(path))
    except FileNotFoundError:
        return None


def _of(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
