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


LAYERS = (
    ("errors", "settings"),
    ("events",),
    ("data",),
    ("models",),
    ("evaluation",),
    ("registry",),
    ("scoring",),
    ("experiments", "trust"),
    ("access",),
    ("cli", "__main__"),
)
"""The core's rooms from the ground floor up: a module may import its own room and those below."""
LEVEL = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "errors.py", "settings.py"}


def room_of(module: str) -> str | None:
    """The core room a dotted module name belongs to (``recsys.registry.store`` → ``registry``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "recsys" and len(parts) > 1 else None


def core_imports() -> list[tuple[str, str, str]]:
    """``(file, importing room, imported room)`` for every import between rooms of the core."""
    found = []
    for path in (ROOT / "recsys").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        source = room_of(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                target = room_of(node.module)
                if source and target and target != source:
                    found.append((str(path.relative_to(ROOT)), source, target))
    return found


def test_the_core_is_organised_in_rooms_not_flat() -> None:
    flat = {p.name for p in (ROOT / "recsys").glob("*.py")} - TOP_LEVEL_MODULES
    assert flat == set()


def test_every_room_of_the_core_has_a_level() -> None:
    rooms = {p.name for p in (ROOT / "recsys").iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert rooms - set(LEVEL) == set()


def test_core_rooms_import_only_rooms_below_them() -> None:
    upward = [(f, a, b) for f, a, b in core_imports() if LEVEL[b] > LEVEL[a]]
    assert upward == []


def test_the_room_walker_sees_imports() -> None:
    """Guard against a walker that finds nothing: the registry does import the events room."""
    assert ("registry", "events") in {(a, b) for _, a, b in core_imports()}


def test_the_kafka_launcher_is_deployment_tooling_not_a_stream_processor() -> None:
    assert not (ROOT / "streams" / "broker.py").exists()
    assert (ROOT / "deploy" / "kafka_launcher.py").exists()
