"""``recsys demo --loop``: the whole feedback loop on this machine, each part in its own process.

Local Kafka (the project's launcher), the API, the stream worker and the trainer run in
the background; simulated listeners (``recsys simulate``) use the API in rounds. Their
feedback triggers the retraining of the next version, which starts on 1% of users; the
trainer then stops, so that this one retraining is the story. Beside it the demo starts a
deliberately scrambled version (trained on another catalogue's playlists, so its
neighbours are wrong for these listeners) as a second experiment. The rollout controller
(``recsys rollout auto --once``, every experiment in the plan) decides after each round,
widening each experiment step by step to 100% and promoting it, or rolling it back, until
none is left running. The demo ends with one line saying what happened to each.
Ctrl-C stops everything. The listeners use an API key of their own (scopes ``recommend``
and ``feedback``), written to ``api-key`` in the work folder for opening the dashboard, and
revoked when the demo ends.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.cli.common import console
from recsys.errors import RecsysError
from recsys.registry.store import FileRegistry

LISTENERS_PER_ROUND = 300
RETRAIN_AFTER_EVENTS = 3000
MAX_ROUNDS = 40
MIN_USERS = 10
"""Users per arm before a step ends: few, so that the demo moves on after a few rounds at
1% (3 listeners per round). A step needs only "not worse" to end; rolling back needs
evidence (always-valid intervals), which the later, larger steps bring."""
SCRAMBLED = "scrambled"
"""The name of the experiment of the scrambled version."""
SCRAMBLED_DATA_SEED = 1000
"""Added to the demo's seed for the scrambled version's playlists: another catalogue."""
KEY_FILE = "api-key"
"""The demo's API key, in the work folder (readable by its owner only)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_loop(workdir: Path, data: Path, registry: Path, *, scale: float, seed: int, hold: bool) -> None:
    """Run the loop against the production model in ``registry`` (trained on ``data``).

    It ends with each experiment's report and one line of outcomes and, when ``hold``,
    keeps the API (and its dashboard) and the stream worker running until Ctrl-C.
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
        # the simulated listeners' accounts are minutes old: with account trust on
        # (docs/fake-accounts.md) retraining would learn nothing from their feedback
        "RECSYS_TRUST__ENABLED": "false",
    }
    key_name, key, key_file = _listeners_key(workdir, registry)
    listeners = env | {"RECSYS_API_KEY": key}
    login = f"log in with any user name and the key in {key_file}"
    home = ["--home", str(workdir / "kafka"), "--port", str(kafka), "--controller-port", str(controller)]
    _run("start local Kafka", ["kafka", "start", *home], env)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    trainer = _spawn("trainer", ["train", "--watch", "--data", str(data), "--seed", str(seed)], env, logs)
    background = [
        _spawn("api", ["serve", "--port", str(api)], env, logs),
        _spawn("stream worker", ["stream", "worker"], env, logs),
        trainer,
    ]
    base, rounds = f"http://127.0.0.1:{api}", workdir / "rounds"
    try:
        wait_http(f"{base}/readyz")
        wait_http(f"http://127.0.0.1:{web}/stats/")
        console.print(f"dashboard (live while the demo runs): [bold]{base}/dashboard[/bold] ({login})")
        simulate = ["simulate", "--api", base, "--users", str(LISTENERS_PER_ROUND)]
        simulate += ["--scale", str(scale), "--data-seed", str(seed)]
        retrained = _until_retrained(simulate, listeners, registry, rounds)
        _stop(trainer)
        console.print("trainer stopped: this demo follows one retraining")
        _start_scrambled(workdir, registry, env, scale=scale, seed=seed)
        advance = ["--stats", f"http://127.0.0.1:{web}/stats/", "--metrics", f"{base}/metrics"]
        _ramp(simulate, (listeners, env), registry, advance, rounds)
        for name in (retrained, SCRAMBLED):
            report = workdir / "reports" / f"{name}.html"
            _run(f"experiment {name}'s report", ["report", name, "--out", str(report)], env)
            console.print(f"report: [bold]{report.resolve()}[/bold]")
        _listening_before_and_after(rounds)
        console.print(f"dashboard: [bold]{base}/dashboard[/bold] ({login})")
        outcome = outcome_line(FileRegistry(registry), {retrained: "retrained", SCRAMBLED: "scrambled"})
        console.print(outcome, soft_wrap=True)
        if hold:
            console.print(
                "the API, its dashboard and the stream worker keep running: Ctrl-C stops everything"
            )
            _wait_for_interrupt(background[:2])
    finally:
        for process in background:
            _stop(process)
        _run("stop local Kafka", ["kafka", "stop", *home], env)
        KeyStore(registry).revoke(key_name)
    console.print(f"logs of the background processes: {logs}")


def _listeners_key(workdir: Path, registry: Path) -> tuple[str, str, Path]:
    """A new key of the simulated listeners (recommend, feedback) in ``registry``: its name, the
    key, and the file that holds it, readable by its owner only."""
    name = f"demo-listeners-{secrets.token_hex(3)}"
    _, key = KeyStore(registry).create(name, {Scope.RECOMMEND, Scope.FEEDBACK})
    path = workdir / KEY_FILE
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return name, key, path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=30)


def _until_retrained(simulate: list[str], env: dict[str, str], registry: Path, rounds: Path) -> str:
    for round_ in range(MAX_ROUNDS):
        _run(
            f"listeners, round {round_ + 1}: feedback until a retraining",
            [*simulate, "--seed", str(round_), "--output", str(_round_file(rounds, "before", round_))],
            env,
        )
        experiments = FileRegistry(registry).rollout().experiments
        if experiments:
            first = experiments[0]
            console.print(f"[bold]retrained[/bold]: {first.treatment} serves 1% as experiment {first.name}")
            return first.name
        time.sleep(3)
    raise RecsysError(f"no retrained version started after {MAX_ROUNDS} rounds (see the trainer's log)")


def _start_scrambled(workdir: Path, registry: Path, env: dict[str, str], *, scale: float, seed: int) -> str:
    """Train a version on another catalogue's playlists and start it on 1% beside the retrained one."""
    other = workdir / f"scrambled-{scale:g}-{seed}.parquet"
    if not other.exists():
        data_seed = str(seed + SCRAMBLED_DATA_SEED)
        _run(
            "playlists of another catalogue",
            ["data", "synth", "--scale", str(scale), "--seed", data_seed, "--output", str(other)],
            env,
        )
    _run("train the scrambled version", ["train", "--data", str(other), "--no-evaluate"], env)
    version = str(FileRegistry(registry).versions()[-1])
    _run(
        f"start {version} on 1% as experiment {SCRAMBLED}: it should be rolled back",
        ["rollout", "set", "--treatment", version, "--share", "0.01", "--name", SCRAMBLED],
        env,
    )
    return version


def _ramp(
    simulate: list[str],
    envs: tuple[dict[str, str], dict[str, str]],
    registry: Path,
    sources: list[str],
    rounds: Path,
) -> None:
    """Rounds of listeners (the first environment, with their key), each followed by one controller
    decision per experiment (the second), until no experiment is left running."""
    listeners, env = envs
    auto = ["rollout", "auto", "--once", *sources, "--min-users", str(MIN_USERS), "--min-step-s", "0"]
    for round_ in range(MAX_ROUNDS):
        running = [f"{e.name} at {e.share:.0%}" for e in FileRegistry(registry).rollout().experiments]
        if not running:
            return
        _run(
            f"listeners, round {round_ + 1} ({', '.join(running)})",
            [*simulate, "--seed", str(1000 + round_), "--output", str(_round_file(rounds, "during", round_))],
            listeners,
        )
        time.sleep(3)  # the worker counts the round's feedback
        _run("the rollout controller decides", auto, env)
    still = ", ".join(e.name for e in FileRegistry(registry).rollout().experiments)
    raise RecsysError(f"experiments still running after {MAX_ROUNDS} rounds: {still}")


def outcome_line(registry: FileRegistry, experiments: dict[str, str]) -> str:
    """One line: how each experiment ended (from its last decision) and what is production."""
    parts = []
    for name, label in experiments.items():
        decisions = registry.decisions(name)
        last = decisions[-1] if decisions else None
        if last is None:
            parts.append(f"{label} {name}: no decision")
        elif last.action == "complete":
            parts.append(f"{label} {last.treatment} promoted at 100%")
        elif last.action == "rollback":
            at = max((d.share for d in decisions if d.action == "advance"), default=0.01)
            why = last.reasons[0] if last.reasons else ""
            parts.append(f"{label} {last.treatment} rolled back at {at:.0%} ({why})")
        else:
            parts.append(f"{label} {last.treatment} still running at {last.share:.0%}")
    return f"[bold]demo outcome[/bold]: {'; '.join(parts)}; production is {registry.production()}"


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
