"""``recsys demo --loop``: the whole loop, as a user runs it, ends with a recorded decision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_the_loop_retrains_from_feedback_and_the_controller_decides(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")} | {"COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "demo", "--workdir", "d", "--loop", "--no-hold"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "retrained: 2.2 serves 1% as experiment v2.2" in done.stdout
    state = json.loads((tmp_path / "d" / "models" / "state.json").read_text())
    decisions = [e for e in state["log"] if e["action"].startswith("rollout v2.2: ") and "detail" in e]
    final = decisions[-1]["action"].removeprefix("rollout v2.2: ")
    assert final in {"complete", "rollback"}
    assert state["production_history"][-1] == ("2.2" if final == "complete" else "2.1")
    assert f"production is now {state['production_history'][-1]}" in done.stdout
    lineage = json.loads((tmp_path / "d" / "models" / "versions" / "2.2" / "manifest.json").read_text())[
        "lineage"
    ]
    assert lineage["feedback"]["events"] >= 3000 and lineage["retrain_request"].startswith("retrain-")
    assert "demo done" in done.stdout
    # the controller saw the serving guardrails and the slices; the report has the whole story
    detail = decisions[-1]["detail"]
    assert detail["treatment_requests"] > 0 and detail["treatment_p99_ms"] > 0
    assert {"platform=ios", "platform=android", "platform=web"} <= set(detail["slices"])
    report = tmp_path / "d" / "reports" / "v2.2.html"
    assert f"report: {report}" in done.stdout.replace("\n", "") or str(report) in done.stdout
    page = report.read_text()
    assert (
        'data-chart="listening"' in page
        and 'data-chart="latency"' in page
        and 'data-slice="platform=ios"' in page
    )
    assert "/dashboard" in done.stdout and "simulated listening per request, last round" in done.stdout
