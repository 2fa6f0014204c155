"""How fast one stream worker drains a backlog of feedback, with nothing else loading the machine.

Starts a local Kafka broker (the project's launcher, in a temporary folder), queues
``--events`` feedback events on ``feedback`` (the same mix and wire format as
``feedback_loop.py`` posts through the API), then starts ``recsys stream worker`` and polls its
aggregates until every event is counted. Reports events/s from the first count after the
worker's speed layer has loaded its model to the last (start-up and model load are not in it).

    python benchmarks/stream_worker.py --registry bench-out/serve-200k --events 100000

With ``--restart``, the worker is then stopped and started again on the same folder, and the
time until it has restored its tables from their changelogs (``Worker ready`` in its log) is
reported: every partition newly assigned to a worker is restored from its changelog, so this
is the cost of a restart for that many listeners (``--listeners``).

With ``--profile FILE``, ``py-spy`` samples the worker for 10 s from the first event counted
(collapsed stacks into FILE).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from environment import cli_env  # benchmarks/environment.py
from feedback_loop import counted, get_json, load_event, start, stop  # benchmarks/, next to this script
from kafka_io import records_in, send_all  # benchmarks/, next to this script
from report import emit

from deploy.kafka_launcher import LocalKafka, free_port
from recsys.cli.loop_demo import wait_http
from recsys.events.schemas import FeedbackEvent
from recsys.events.topics import FEEDBACK


def queue(bootstrap: str, run: str, n: int, listeners: int) -> None:
    """``n`` events of the benchmark mix on ``feedback``, keyed by user as the API sends them."""
    events = (FeedbackEvent.model_validate(load_event(run, i, listeners=listeners)) for i in range(n))
    send_all(
        bootstrap,
        FEEDBACK.name,
        ((event.user_id.encode(), event.to_bytes()) for event in events),
        linger_ms=20,
        max_batch_size=512_000,
    )


def drain(
    web: int,
    arm: str,
    n: int,
    ready: Callable[[], bool],
    cpu: Callable[[], float],
    on_first: Callable[[], None] | None = None,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Poll the worker's aggregates until ``n`` events of ``arm`` are counted. The clock starts
    at the first count once ``ready()`` (then ``on_first`` is called)."""
    first = None
    total = 0
    deadline = time.monotonic() + timeout_s
    while total < n and time.monotonic() < deadline:
        total = counted([web], arm)
        if total and first is None and ready():
            first = (time.perf_counter(), total, cpu())
            if on_first:
                on_first()
        time.sleep(0.1)
    end, used = time.perf_counter(), cpu()
    if first is None or total < n:
        raise RuntimeError(f"only {total} of {n} events counted in {timeout_s} s")
    seconds = end - first[0]
    return {
        "events": n,
        "counted": total,
        "seconds": round(seconds, 2),
        "events_per_s": round((total - first[1]) / seconds),
        "worker_cpu_share": round((used - first[2]) / seconds, 2),
        "worker_cpu_us_per_event": round(1e6 * (used - first[2]) / (total - first[1]), 1),
    }


def cpu_seconds(supervisor: int) -> float:
    """CPU time used so far by the worker process (the supervisor's child), in seconds."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    fields = Path(f"/proc/{children[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_loaded(log: Path) -> bool:
    """Whether the worker's speed layer has its model (the drain is timed from then on)."""
    return b"speed layer folds in against" in log.read_bytes()


def changelog_records(bootstrap: str, app_id: str) -> int:
    """Records in the worker's table changelogs (what a restore reads, before compaction)."""
    return records_in(bootstrap, lambda topic: topic.startswith(app_id) and topic.endswith("-changelog"))


def restart(
    env: dict[str, str], log: Path, web: int, arm: str, previous: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """Stop the worker, start it on the same folder, and time its restore."""
    stop([previous])
    offset = log.stat().st_size
    started = time.monotonic()
    worker = start(["stream", "worker", "--loglevel", "info"], env, log)
    try:
        while b"Worker ready" not in log.read_bytes()[offset:]:
            if time.monotonic() - started > 600:
                raise RuntimeError("the restarted worker did not become ready in 600 s")
            time.sleep(0.1)
        ready_s = time.monotonic() - started
        counted_after = get_json(f"http://127.0.0.1:{web}/stats/").get(arm, {}).get("events", 0)
    finally:
        stop([worker])
    return {
        "seconds_to_ready": round(ready_s, 1),
        "changelog_records": changelog_records(env["RECSYS_KAFKA_BOOTSTRAP"], env["RECSYS_APP_ID"]),
        "events_counted_after_restore": counted_after,
    }


def profile(pid: int, output: Path, seconds: int = 10) -> None:
    """Sample ``pid`` and its children with py-spy for ``seconds`` in the background (collapsed stacks)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "-s", "-p", str(pid), "-d", str(seconds), "-f", "raw", "-o", str(output)]
    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy collapsed stacks output")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the logs here")
    parser.add_argument("--listeners", type=int, default=5000)
    parser.add_argument("--restart", action="store_true", help="then time a restart's restore")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        kafka = LocalKafka(folder / "kafka", port=free_port(), controller_port=free_port())
        kafka.start()
        web, run = free_port(), f"bench-{uuid.uuid4().hex[:6]}"
        env = cli_env() | {
            "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RECSYS_REGISTRY": str(args.registry),
            "RECSYS_APP_ID": "bench-worker",
            "RECSYS_WEB_PORT": str(web),
            "RECSYS_DATA_DIR": str(folder / "stream-data"),
        }
        queue(kafka.bootstrap, run, args.events, args.listeners)
        log = folder / "worker.log"
        worker = start(["stream", "worker", "--loglevel", "info"], env, log)
        try:
            wait_http(f"http://127.0.0.1:{web}/stats/", timeout_s=120)
            spy = partial(profile, worker.pid, args.profile) if args.profile else None
            result = {
                "cores": os.cpu_count(),
                "listeners": args.listeners,
                "worker_alone": drain(
                    web,
                    f"{run}|control",
                    args.events,
                    partial(model_loaded, log),
                    partial(cpu_seconds, worker.pid),
                    spy,
                ),
            }
            if args.restart:
                result["restart"] = restart(env, log, web, f"{run}|control", worker)
        finally:
            stop([worker])
            kafka.stop()
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
