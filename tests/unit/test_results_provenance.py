"""Every benchmark result says where it came from: commit, date, machine and package versions."""

from __future__ import annotations

import importlib.util
import json
import platform
import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FIELDS = ("commit", "date", "machine", "packages")
SHA = re.compile(r"^[0-9a-f]{40}(-dirty)?$")
MACHINE_FIELDS = ("cpu", "cores", "memory_gib", "platform", "gpu")


def load_provenance() -> ModuleType:
    """``benchmarks/provenance.py``, loaded from its file (``benchmarks`` is not a package).

    Returns
    -------
    ModuleType
        The module, under a name that cannot shadow another.
    """
    spec = importlib.util.spec_from_file_location("benchmarks_provenance", RESULTS.parent / "provenance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_block(text: str) -> dict[str, str]:
    """The ``- field: value`` lines after a markdown file's ``## Provenance`` heading.

    Parameters
    ----------
    text
        The whole markdown file.

    Returns
    -------
    dict
        Field name to value, empty when the file has no provenance heading.
    """
    _, found, block = text.partition("\n## Provenance\n")
    if not found:
        return {}
    fields = re.findall(r"^- ([a-z_]+): (.+)$", block, flags=re.MULTILINE)
    return dict(fields)


def assert_date(value: str) -> None:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, f"{value} has no time zone"
    assert moment.utcoffset() == UTC.utcoffset(None), f"{value} is not UTC"


def test_results_are_json_or_markdown() -> None:
    """Only the two formats the checks below read, so no file escapes them."""
    files = sorted(p.name for p in RESULTS.iterdir() if p.is_file())
    assert files, "no results files"
    assert [name for name in files if not name.endswith((".json", ".md"))] == []


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_a_json_result_records_its_provenance(path: Path) -> None:
    data = json.loads(path.read_text())
    assert isinstance(data, dict), "the record needs a top-level object"
    record: Any = data.get("provenance")
    assert isinstance(record, dict), "no provenance"
    missing = [field for field in FIELDS if not record.get(field)]
    assert missing == []
    assert SHA.match(record["commit"]), record["commit"]
    assert_date(record["date"])
    assert isinstance(record["machine"], dict)
    assert isinstance(record["packages"], dict)


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.md")), ids=lambda p: p.name)
def test_a_markdown_result_ends_with_its_provenance(path: Path) -> None:
    block = markdown_block(path.read_text())
    missing = [field for field in FIELDS if not block.get(field)]
    assert missing == []
    assert SHA.match(block["commit"]), block["commit"]
    assert_date(block["date"])


def test_provenance_of_a_run_now() -> None:
    provenance = load_provenance()
    record = provenance.provenance()
    assert [field for field in FIELDS if field not in record] == []
    assert SHA.match(record["commit"]), record["commit"]
    assert_date(record["date"])
    assert [field for field in MACHINE_FIELDS if field not in record["machine"]] == []
    assert record["machine"]["cores"] >= 1
    assert record["machine"]["gpu"] is None or isinstance(record["machine"]["gpu"], list)
    assert record["packages"]["python"] == platform.python_version()
    assert record["packages"]["numpy"] == metadata.version("numpy")


def test_a_result_gets_its_provenance_first_and_keeps_its_values() -> None:
    provenance = load_provenance()
    record = {"commit": "0" * 40, "date": "2026-01-01T00:00:00+00:00", "machine": {}, "packages": {}}
    result = {"p50_ms": 2.81, "errors": 0}
    attached = provenance.with_provenance(result, record)
    assert list(attached) == ["provenance", "p50_ms", "errors"]
    assert attached["provenance"] is record
    assert {k: v for k, v in attached.items() if k != "provenance"} == result
    assert result == {"p50_ms": 2.81, "errors": 0}
    assert set(provenance.with_provenance(result)["provenance"]) >= set(FIELDS)


def test_the_markdown_block_reads_back() -> None:
    provenance = load_provenance()
    record = provenance.provenance()
    block = markdown_block("| a | b |\n|---|---|\n\n" + provenance.markdown(record))
    assert block["commit"] == record["commit"]
    assert block["date"] == record["date"]
    assert [field for field in FIELDS if not block.get(field)] == []
