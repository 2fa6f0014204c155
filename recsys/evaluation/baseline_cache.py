"""Baseline results keyed by data and split, so retraining on unchanged data does not refit them.

A key covers the data's content hash, the split's seed and shape, and the
baselines' configuration; any change gives a new key. Entries are small JSON files
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from recsys.evaluation.split import HIDE_SHARE, MAX_TEST_PLAYLISTS, MIN_TRACKS, TEST_SHARE

CACHE_FORMAT = 1


class BaselineCache:
    """A folder of baseline metrics, one JSON file per (data, split, baseline config)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def key(*, data_sha256: str, split: dict[str, int], item_knn: tuple[int, float, float]) -> str:
        """Identity of a baseline evaluation."""
        identity = {
            "format": CACHE_FORMAT,
            "data": data_sha256,
            "split": split,
            "protocol": [MIN_TRACKS, TEST_SHARE, HIDE_SHARE, MAX_TEST_PLAYLISTS],
            "item_knn": list(item_knn),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = json.loads((self.folder / f"{key}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, self.folder / f"{key}.json")
