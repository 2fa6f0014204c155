"""``recsys demo --loop``: the whole feedback loop on this machine, each part in its own process.

Local Kafka (the project's launcher), the API, the stream worker and the trainer run in
the background; simulated listeners (``recsys simulate``) use the API in rounds. Their
feedback triggers the retraining of the next version, which starts on 1% of users; the
rollout controller (``recsys rollout advance``) then widens it round by round to 100% and
promotes it, or rolls it back. Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from recsys.cli.common import console
from recsys.errors import RecsysError

LISTENERS_PER_ROUND = 300
RETRAIN_AFTER_EVENTS = 3000
MAX_ROUNDS = 40
MIN_USERS = 10
"""Users per arm before a step ends: few, so that the demo moves on after a few rounds at
1% (3 listeners per round); the always-valid interval keeps the verdicts honest."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_loop(workdir: Path, data: Path, registry: Path, *, scale: float, seed: int, hold: bool) -> None:
    """Run the loop against the production model in ``registry`` (trained on ``data``).

    It ends with the experiment's report and, when ``hold``, keeps the API (and its
    dashboard) and the stream worker running until Ctrl-C.
    """
    kafka, controller, api, web = free_port(), free_port(), free_port(), free_port()
    env = os.environ | {
        "RECSYS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "RECSYS_FEEDBACK_SINK": f"kafka://127.0.0.1:{kafka}",
        "RECSYS_MODEL_EVENTS": f"kafka://127.0.0.1:{kafka}",
        "RECSYS_REGISTRY": str(registry),
        "RECSYS_DATA_DIR": str(workdir / "stream-state"),
        "RECSYS_WEB_PORT": str(web),
        "RECSYS_APP_ID": f"demo-{kafka}",
        "RECSYS_RETRAIN_MIN_EVENTS": str(RETRAIN_AFTER_EVENTS),
        "RECSYS_RETRAIN_CHECK_S": "2",
        "RECSYS_STATS_URL": f"http://127.0.0.1:{web}/stats/",
    }
    home = ["--home", str(workdir / "kafka"), "--port", str(kafka), "--controller-port", str(controller)]
    _run("start local Kafka", ["kafka", "start", *home], env)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    background = [
        _spawn("api", ["serve", "--port", str(api)], env, logs),
        _spawn("stream worker", ["stream", "worker"], env, logs),
        _spawn("trainer", ["train", "--watch", "--data", str(data), "--seed", str(seed)], env, logs),
    ]
    base, rounds = f"http://127.0.0.1:{api}", workdir / "rounds"
    try:
        wait_http(f"{base}/readyz")
        wait_http(f"http://127.0.0.1:{web}/stats/")
        console.print(f"dashboard (live while the demo runs): [bold]{base}/dashboard[/bold]")
        simulate = ["simulate", "--api", base, "--users", str(LISTENERS_PER_ROUND)]
        simulate += ["--scale", str(scale), "--data-seed", str(seed)]
        experiment = _until_retrained(simulate, env, registry, rounds)
        advance = ["--stats", f"http://127.0.0.1:{web}/stats/", "--metrics", f"{base}/metrics"]
        _ramp(experiment, simulate, env, registry, advance, rounds)
        report = workdir / "reports" / f"{experiment}.html"
        _run("the experiment's report", ["report", experiment, "--out", str(report)], env)
        _listening_before_and_after(rounds)
        console.print(f"\nreport: [bold]{report.resolve()}[/bold]\ndashboard: [bold]{base}/dashboard[/bold]")
        if hold:
            console.print(
                "the API, its dashboard and the stream worker keep running: Ctrl-C stops everything"
            )
            _wait_for_interrupt(background)
    finally:
        for process in background:
            process.terminate()
        for process in background:
            process.wait(timeout=30)
        _run("stop local Kafka", ["kafka", "stop", *home], env)
    console.print(f"logs of the background processes: {logs}")


def _until_retrained(simulate: list[str], env: dict[str, str], registry: Path, rounds: Path) -> str:
    for round_ in range(MAX_ROUNDS):
        _run(
            f"listeners, round {round_ + 1}: feedback until a retraining",
            [*simulate, "--seed", str(round_), "--output", str(_round_file(rounds, "before", round_))],
            env,
        )
        experiments = _state(registry).get("rollout", {}).get("experiments", [])
        if experiments:
            name = str(experiments[0]["name"])
            console.print(
                f"[bold]retrained[/bold]: {experiments[0]['treatment']} serves 1% as experiment {name}"
            )
            return name
        time.sleep(3)
    raise RecsysError(f"no retrained version started after {MAX_ROUNDS} rounds (see the trainer's log)")


def _ramp(
    name: str, simulate: list[str], env: dict[str, str], registry: Path, sources: list[str], rounds: Path
) -> None:
    advance = ["rollout", "advance", name, *sources, "--min-users", str(MIN_USERS), "--min-step-s", "0"]
    for round_ in range(MAX_ROUNDS):
        _run(
            f"listeners, round {round_ + 1} of experiment {name}",
            [*simulate, "--seed", str(1000 + round_), "--output", str(_round_file(rounds, "during", round_))],
            env,
        )
        time.sleep(3)  # the worker counts the round's feedback
        _run("the rollout controller decides", advance, env)
        if not any(e["name"] == name for e in _state(registry).get("rollout", {}).get("experiments", [])):
            production = _state(registry)["production_history"][-1]
            console.print(f"[bold green]experiment {name} ended[/bold green]: production is now {production}")
            return
    raise RecsysError(f"experiment {name} still running after {MAX_ROUNDS} rounds")


def _round_file(rounds: Path, phase: str, round_: int) -> Path:
    rounds.mkdir(parents=True, exist_ok=True)
    return rounds / f"{phase}-{round_:03d}.json"


def _listening_before_and_after(rounds: Path) -> None:
    """Simulated listening per request in the first round (production only) and the last."""
    files = sorted(rounds.glob("before-*.json")) + sorted(rounds.glob("during-*.json"))
    if len(files) < 2:
        return
    first, last = (json.loads(f.read_text())["arms"] for f in (files[0], files[-1]))
    for label, arms in (("first round", first), ("last round", last)):
        parts = ", ".join(
            f"{arm}: {a['listen_s_per_request']:.0f}s over {a['requests']}" for arm, a in arms.items()
        )
        console.print(f"simulated listening per request, {label}: {parts}")


def _wait_for_interrupt(background: list[subprocess.Popen[bytes]]) -> None:
    try:
        while all(process.poll() is None for process in background):
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping")
        return
    raise RecsysError("a background process stopped (see its log)")


def _state(registry: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((registry / "state.json").read_text())
    return data


def _run(title: str, args: list[str], env: dict[str, str]) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"$ recsys {' '.join(args)}", style="dim")
    if subprocess.run([sys.executable, "-m", "recsys", *args], env=env, check=False).returncode != 0:
        raise RecsysError(f"demo step failed: recsys {' '.join(args)}")


def _spawn(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    console.print(
        f"started {name}: recsys {' '.join(args)} (log: {logs / (name.replace(' ', '-') + '.log')})"
    )
    with (logs / f"{name.replace(' ', '-')}.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "recsys", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_http(url: str, timeout_s: float = 120) -> None:
    """Return once ``url`` answers; :class:`RecsysError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RecsysError(f"{url} did not answer in {timeout_s:.0f}s")
