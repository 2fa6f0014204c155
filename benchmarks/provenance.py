"""Where a benchmark result came from: the commit, the date, the machine and the package versions.

Every results file in ``benchmarks/results`` carries this record under the key
``provenance``, so that a number can be traced to the code and the machine that produced it.
Scripts attach it with :func:`with_provenance` when they write their JSON; a table written as
markdown ends with :func:`markdown`'s block.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""

KEY = "provenance"
"""The key of the record in a results file."""

PACKAGES = (
    "implicit",
    "onnxruntime",
    "onnxruntime-gpu",
    "numpy",
    "scipy",
    "faust-streaming",
    "aiokafka",
    "fastapi",
    "uvicorn",
    "rocksdict",
    "faiss-cpu",
    "pyarrow",
)
"""The runtime packages whose versions move the numbers; those not installed are left out."""

FIELDS = ("commit", "date", "machine", "packages")
"""What every record holds."""


def _run(*command: str) -> str | None:
    """``command``'s standard output, stripped; ``None`` when it cannot run or fails."""
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> str:
    """The checked-out commit's full sha, with ``-dirty`` when tracked files differ from it.

    Results files are left out of the comparison: results written by earlier runs of a
    series do not make the code differ from the commit.

    Returns
    -------
    str
        40 hexadecimal digits, optionally followed by ``-dirty``; ``"unknown"`` outside a
        git checkout.
    """
    head = _run("git", "rev-parse", "HEAD")
    if not head:
        return "unknown"
    changes = _run(
        "git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"
    )
    return f"{head}-dirty" if changes else head


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def _gpus() -> list[str] | None:
    """One line per GPU from ``nvidia-smi`` (name, memory, driver); ``None`` without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    listing = _run("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader")
    return [line.strip() for line in listing.splitlines() if line.strip()] if listing else None


def machine() -> dict[str, Any]:
    """The machine this process runs on.

    Returns
    -------
    dict
        ``cpu`` (model name), ``cores``, ``memory_gib``, ``platform`` and ``gpu`` (a list of
        ``nvidia-smi`` lines, or ``None`` where there is no NVIDIA driver).
    """
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "gpu": _gpus(),
    }


def packages() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES`, and Python's own under ``python``."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def provenance() -> dict[str, Any]:
    """Where a result produced now comes from.

    Returns
    -------
    dict
        ``commit`` (see :func:`commit`), ``date`` (UTC, ISO 8601, to the second),
        ``command`` (how this process was started), ``machine`` (see :func:`machine`) and
        ``packages`` (see :func:`packages`).
    """
    return {
        "commit": commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "packages": packages(),
    }


def with_provenance(result: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
    """``result`` with its provenance first, under :data:`KEY`.

    Parameters
    ----------
    result
        What a benchmark measured; left unchanged.
    record
        The provenance to attach; :func:`provenance` of this run when not given.

    Returns
    -------
    dict
        A new dict: the record, then every entry of ``result``.
    """
    return {KEY: provenance() if record is None else record, **result}


def markdown(record: dict[str, Any] | None = None) -> str:
    """A provenance block that ends a results table written as markdown.

    Parameters
    ----------
    record
        The provenance to render; :func:`provenance` of this run when not given.

    Returns
    -------
    str
        A ``## Provenance`` heading, one ``- field: value`` line per field, and the same record
        as JSON in an HTML comment (``<!-- provenance {...} -->``) for tools.
    """
    record = provenance() if record is None else record
    lines = ["## Provenance", ""]
    lines += [f"- {field}: {_text(value)}" for field, value in record.items()]
    lines += ["", f"<!-- provenance {json.dumps(record, sort_keys=True)} -->"]
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    """A record's value on one line: mappings as ``key value`` pairs, lists joined by ``;``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)
