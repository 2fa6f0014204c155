"""What every benchmark script does with its result: print it, and write it where asked.

Every result carries where it came from (``provenance``): the commit and whether the tree
had changes, the date, the machine and the versions of the packages that matter, so a
number can always be traced to the code and the machine that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "scipy", "implicit", "onnxruntime", "faiss-cpu", "faust-streaming", "fastapi", "uvicorn")
ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu() -> str:
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
    except (ValueError, OSError):
        return None
    return round(pages * size / 2**30, 1)


def provenance() -> dict[str, Any]:
    """Commit, date, command, machine and package versions of this run."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "commit": _git("rev-parse", "HEAD"),
        # results written by earlier runs of a series do not make the code differ from the commit
        "tree_changed": bool(
            _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": {
            "cpu": _cpu(),
            "cores": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "system": platform.platform(),
        },
        "python": platform.python_version(),
        "packages": versions,
    }


def emit(result: dict[str, Any], output: Path | None) -> int:
    """Print ``result`` as JSON with its :func:`provenance`, write it to ``output`` when given;
    the script's exit status."""
    text = json.dumps({"provenance": provenance(), **result}, indent=2)
    print(text)
    if output:
        output.write_text(text)
    return 0
