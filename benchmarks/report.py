"""What every benchmark script does with its result: print it, and write it where asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], output: Path | None) -> int:
    """Print ``result`` as JSON, write it to ``output`` when given; the script's exit status."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        output.write_text(text)
    return 0
