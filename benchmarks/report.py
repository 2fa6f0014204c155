"""What every benchmark script does with its result: print it, and write it where asked.

Every result carries where it came from (``provenance``, from ``benchmarks/provenance.py``):
the commit and whether the tree had changes, the date, the machine and the versions of the
packages that matter, so a number can always be traced to the code and the machine that
produced it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from provenance import ROOT, with_provenance  # benchmarks/provenance.py, next to this script

__all__ = ["ROOT", "emit"]


def emit(result: dict[str, Any], output: Path | None) -> int:
    """Print ``result`` as JSON with its provenance, write it to ``output`` when given;
    the script's exit status."""
    text = json.dumps(with_provenance(result), indent=2)
    print(text)
    if output:
        output.write_text(text)
    return 0
