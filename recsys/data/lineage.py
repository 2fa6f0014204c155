"""Content hashes of input files, recorded in every model's lineage."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

CHUNK_BYTES = 1 << 22


def file_sha256(path: Path, *, max_bytes_per_s: float | None = None) -> str:
    """sha256 of one file's bytes, read no faster than ``max_bytes_per_s`` when given.

    The pace lets a server verify a new model version in the background without taking
    the CPU its requests need.
    """
    digest = hashlib.sha256()
    start, done = time.monotonic(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
            done += len(chunk)
            if max_bytes_per_s:
                time.sleep(max(0.0, start + done / max_bytes_per_s - time.monotonic()))
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path]) -> str:
    """One sha256 over several files, in the given order, each prefixed by its name."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()
