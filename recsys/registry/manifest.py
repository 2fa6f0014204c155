"""``manifest.json``: what a model version is, where it came from, how good it is, and its checksums."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 1


class Stage(StrEnum):
    """Lifecycle stage of a version in the registry."""

    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class Shapes(BaseModel):
    """Sizes of the version's arrays."""

    items: int
    rows: int
    factors: int


class Manifest(BaseModel):
    """Everything recorded about one model version."""

    schema_version: int = SCHEMA_VERSION
    version: str
    parent_version: str | None = None
    algorithm: str = "als"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    params: dict[str, Any]
    device: str
    lineage: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    shapes: Shapes
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")

    def primary_metric(self, name: str) -> float | None:
        """The model's own value of an offline metric, when evaluated."""
        value = self.metrics.get("methods", {}).get(self.algorithm, {}).get(name)
        return None if value is None else float(value)
