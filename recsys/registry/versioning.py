"""Model version numbers as ML engineers say them: ``2.1``, ``2.2``, ``3.1``.

The major number names the algorithm and feature set (a new one bumps it); the
minor counts retrainings within it. Versions order numerically (``2.10`` > ``2.9``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from recsys.errors import InvalidRequest

ALS_MAJOR = 2
"""Major version of ALS on BM25-weighted playlist and feedback interactions."""
_PATTERN = re.compile(r"^(\d+)\.(\d+)$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A ``major.minor`` model version."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``"2.1"``; raises :class:`InvalidRequest` for anything else."""
        match = _PATTERN.match(text.strip())
        if not match:
            raise InvalidRequest(f"{text!r} is not a model version (expected MAJOR.MINOR, e.g. 2.1)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def is_version(cls, text: str) -> bool:
        return bool(_PATTERN.match(text.strip()))

    def next_minor(self) -> Version:
        return Version(self.major, self.minor + 1)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def next_version(existing: list[Version], *, major: int = ALS_MAJOR) -> Version:
    """The next minor of ``major`` (``major.1`` when that major has none yet)."""
    same = [v for v in existing if v.major == major]
    return max(same).next_minor() if same else Version(major, 1)
