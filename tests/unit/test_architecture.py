"""The layering the product relies on: a framework-free core; processes that never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = {
    "fastapi",
    "starlette",
    "faust",
    "aiokafka",
    "kafka",
    "uvicorn",
    "confluent_kafka",
    "mode",
}
PROCESSES = ("training", "serving", "streams")


def imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of a package (including lazy imports)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_core_imports_no_web_stream_or_kafka_framework() -> None:
    offenders = {f: sorted(n & FRAMEWORKS) for f, n in imported_roots("recsys").items() if n & FRAMEWORKS}
    assert offenders == {}


def test_core_imports_no_process_package() -> None:
    offenders = {
        f: sorted(n & set(PROCESSES)) for f, n in imported_roots("recsys").items() if n & set(PROCESSES)
    }
    assert offenders == {}


@pytest.mark.parametrize("process", PROCESSES)
def test_processes_do_not_import_each_other(process: str) -> None:
    others = set(PROCESSES) - {process}
    offenders = {f: sorted(n & others) for f, n in imported_roots(process).items() if n & others}
    assert offenders == {}


def test_the_walker_sees_imports(tmp_path: Path) -> None:
    """Guard against a walker that finds nothing: the training package does import recsys."""
    assert any("recsys" in names for names in imported_roots("training").values())
