"""``recsys demo --loop``: the whole loop, as a user runs it, tells one true story."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from recsys.registry.manifest import MANIFEST_FILE
from recsys.registry.store import FileRegistry


def test_the_loop_retrains_ramps_both_experiments_to_an_end_and_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {"COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "demo", "--workdir", "d", "--loop", "--no-hold"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "retrained: 2.2 serves 1% as experiment v2.2" in out and "trainer stopped" in out
    registry = FileRegistry(tmp_path / "d" / "models")
    # nothing is left half-done: no experiment runs, and each one ended with a decision
    assert registry.rollout().experiments == []
    retrained, scrambled = registry.decisions("v2.2"), registry.decisions("scrambled")
    assert retrained[-1].action in {"complete", "rollback"}
    assert scrambled[-1].action == "rollback" and scrambled[-1].treatment == "2.3"
    assert any(check["breached"] for check in scrambled[-1].checks)
    production = registry.production()
    assert production == ("2.2" if retrained[-1].action == "complete" else "2.1")
    # the one line that says what happened, and nothing else trained after the story
    [line] = [line for line in out.splitlines() if line.startswith("demo outcome:")]
    assert re.search(r"retrained 2\.2 (promoted at 100%|rolled back at \d+%)", line)
    assert re.search(r"scrambled 2\.3 rolled back at \d+%", line) and line.endswith(
        f"production is {production}"
    )
    assert [str(v) for v in registry.versions()] == ["2.1", "2.2", "2.3"]
    lineage = json.loads((tmp_path / "d" / "models" / "versions" / "2.2" / MANIFEST_FILE).read_text())[
        "lineage"
    ]
    assert lineage["feedback"]["events"] >= 3000 and lineage["retrain_request"].startswith("retrain-")
    assert "demo done" in out
    # the controller saw the serving guardrails and the slices; the reports have the whole story
    last = retrained[-1]
    assert last.health["treatment"].requests > 0 and last.health["treatment"].p99_ms > 0
    assert {"platform=ios", "platform=android", "platform=web"} <= set(last.slices)
    for name in ("v2.2", "scrambled"):
        page = (tmp_path / "d" / "reports" / f"{name}.html").read_text()
        assert 'data-chart="listening"' in page and 'data-chart="latency"' in page
    assert "/dashboard" in out and "simulated listening per request, last round" in out
