"""Throughput of the feedback pipeline and freshness of a hate, with every part in its own process.

Starts a local Kafka broker (the project's launcher, in a temporary folder), ``recsys serve``
writing feedback to it, and ``recsys stream worker``; then

1. throughput: posts batches of play/skip/love/hate events to ``POST /v1/feedback`` over
   keep-alive connections as fast as they are accepted for ``--seconds``, and waits until the
   worker's aggregates count every accepted event. Reports events/s accepted over HTTP and
   end to end (first send to last event counted in the aggregates), and the backlog (accepted,
   not yet counted) every 5 s while posting. With ``--rate`` the load is offered at a fixed
   rate instead: a pipeline that sustains it keeps that backlog flat.
2. freshness: ``--hates`` times, asks for a listener's recommendations, posts a ``hate`` of the
   top track, and polls the recommendations until it is gone. Reports p50/p95/max from the
   202 of the hate to the first answer without the track.

The clients present an API key of their own (created in the registry, revoked at the end), and
the server's feedback rate limits are set far above any rate posted here, so that they are
counted (their cost is in the numbers) but never refuse.

    python benchmarks/feedback_loop.py --registry bench-out/serve-200k --seconds 20 --hates 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from api_keys import api_key, authorization  # benchmarks/api_keys.py
from environment import cli_env  # benchmarks/environment.py
from report import emit  # benchmarks/report.py, next to this script

from deploy.kafka_launcher import LocalKafka, free_port
from recsys.cli.loop_demo import wait_http

PROBE_S = 5.0
RATE_LIMITS = {
    "RECSYS_FEEDBACK_RATE_PER_KEY": "10000000/second",
    "RECSYS_FEEDBACK_RATE_PER_USER": "1000000/minute",
}
"""Counted, never reached: this measures the pipeline, not the limits."""
KINDS = (("play", 30_000), ("skip", 4_000), ("complete", 200_000), ("love", None), ("hate", None))


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "recsys", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM all, then wait; kill what does not stop in 30 s."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def load_event(
    run: str, i: int, kinds: tuple[tuple[str, int | None], ...] = KINDS, listeners: int = 5000
) -> dict[str, Any]:
    """Event ``i`` of the benchmark mix: ``listeners`` listeners, 20,000 tracks, ``kinds`` in turn."""
    kind, listen = kinds[i % len(kinds)]
    event: dict[str, Any] = {"user_id": f"load-{i % listeners}", "track_id": f"tr{i % 20000}", "type": kind}
    if listen is not None:
        event["listen_ms"] = listen
    return event | {"model_version": run, "variant": "control"}


def batch(
    run: str, n: int, offset: int, key: str, kinds: tuple[tuple[str, int | None], ...] = KINDS
) -> bytes:
    events = [load_event(run, i, kinds) for i in range(offset, offset + n)]
    data = json.dumps({"events": events}).encode()
    return (
        b"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


async def post_for(
    port: int,
    key: str,
    run: str,
    seconds: float,
    batch_size: int,
    connections: int,
    kinds: tuple[tuple[str, int | None], ...],
    rate: float = 0.0,
    probe: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Post batches for ``seconds``: as fast as they are accepted, or at ``rate`` events/s
    (open loop: batch ``i`` is due ``i * batch_size / rate`` after the start, and a late
    batch goes out at once). Every ``PROBE_S`` seconds, ``probe()`` (events counted so far)
    is compared with the events accepted so far: the backlog."""
    accepted, refused, sent = 0, 0, 0
    backlog: list[int] = []
    start = time.perf_counter()
    payloads = [batch(run, batch_size, i * batch_size, key, kinds) for i in range(200)]

    async def worker(c: int) -> None:
        nonlocal accepted, refused, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = c
        while time.perf_counter() - start < seconds:
            if rate > 0:
                due = start + i * batch_size / rate
                if due >= start + seconds:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            writer.write(payloads[i % len(payloads)])
            i += connections
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            sent += batch_size
            if status == 202:
                accepted += batch_size
            else:
                refused += batch_size
        writer.close()

    async def watch() -> None:
        while probe is not None and time.perf_counter() - start + PROBE_S < seconds:
            await asyncio.sleep(PROBE_S)
            so_far = accepted
            try:
                backlog.append(so_far - await asyncio.to_thread(probe))
            except OSError:  # a worker restarting during a rebalance: no reading this time
                continue

    await asyncio.gather(watch(), *(worker(c) for c in range(connections)))
    return {
        "accepted": accepted,
        "refused": refused,
        "seconds": time.perf_counter() - start,
        "backlog": backlog,
    }


def counted(webs: list[int], arm: str) -> int:
    """Events of ``arm`` counted by all workers (each holds its own partitions' counters)."""
    return sum(int(get_json(f"http://127.0.0.1:{web}/stats/").get(arm, {}).get("events", 0)) for web in webs)


def throughput(api: int, key: str, webs: list[int], args: argparse.Namespace) -> dict[str, Any]:
    run = f"bench-{uuid.uuid4().hex[:6]}"
    first_send = time.perf_counter()
    kinds = tuple(k for k in KINDS if k[0] in args.kinds.split(","))
    arm = f"{run}|control"
    probe = partial(counted, webs, arm)
    posted = asyncio.run(
        post_for(api, key, run, args.seconds, args.batch, args.connections, kinds, args.rate, probe)
    )
    posting_ended = time.perf_counter()
    behind = posted["accepted"] - counted(webs, arm)
    deadline = time.monotonic() + 300
    total = 0
    while time.monotonic() < deadline:
        try:
            total = counted(webs, arm)
        except OSError:  # a worker restarting during a rebalance
            time.sleep(0.5)
            continue
        if total >= posted["accepted"]:
            break
        time.sleep(0.2)
    done = time.perf_counter() - first_send
    return {
        "kinds": args.kinds,
        "batch_size": args.batch,
        "connections": args.connections,
        "workers": len(webs),
        "offered_events_per_s": args.rate or "as fast as accepted",
        "accepted_events": posted["accepted"],
        "refused_events": posted["refused"],
        "counted_events": total,
        "http_events_per_s": round(posted["accepted"] / posted["seconds"]),
        "end_to_end_events_per_s": round(total / done),
        "end_to_end_seconds": round(done, 1),
        f"not_yet_counted_every_{PROBE_S:.0f}s": posted["backlog"],
        "not_yet_counted_when_posting_ended": behind,
        "seconds_to_count_them": round(first_send + done - posting_ended, 1),
    }


def freshness(api: int, key: str, hates: int, tracks: list[str]) -> dict[str, Any]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", api)

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        headers = {"content-type": "application/json"} | authorization(key)
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    rng = np.random.default_rng(0)
    delays = []
    for _ in range(hates):
        user = f"fresh-{uuid.uuid4().hex[:8]}"
        body = {"user_id": user, "seed_tracks": list(rng.choice(tracks, 20, replace=False)), "k": 20}
        top = post("/v1/recommendations", body)[1]["items"][0]["track_id"]
        status, _ = post("/v1/feedback", {"user_id": user, "track_id": top, "type": "hate"})
        accepted = time.perf_counter()
        assert status == 202, status
        while time.perf_counter() - accepted < 30:
            items = post("/v1/recommendations", body)[1]["items"]
            if top not in [i["track_id"] for i in items]:
                break
            time.sleep(0.01)
        delays.append(time.perf_counter() - accepted)
    d = np.array(delays) * 1e3
    return {
        "hates": hates,
        "p50_ms": round(float(np.percentile(d, 50)), 1),
        "p95_ms": round(float(np.percentile(d, 95)), 1),
        "max_ms": round(float(d.max()), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=200, help="events per request")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered events/s (0: post as fast as accepted)"
    )
    parser.add_argument("--hates", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="stream worker processes (one group)")
    parser.add_argument(
        "--kinds", default="play,skip,complete,love,hate", help="event types to send, in turn"
    )
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the broker's and processes' logs here"
    )
    args = parser.parse_args()
    from recsys.registry.store import FileRegistry

    model = FileRegistry(args.registry).load("production")
    tracks = [str(t) for t in model.item_ids.ids.to_pylist()]
    del model
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        kafka = LocalKafka(folder / "kafka", port=free_port(), controller_port=free_port())
        kafka.start()
        api, webs = free_port(), [free_port() for _ in range(args.workers)]
        env = cli_env() | {
            "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RECSYS_FEEDBACK_SINK": f"kafka://{kafka.bootstrap}",
            "RECSYS_REGISTRY": str(args.registry),
            "RECSYS_RELOAD_INTERVAL_S": "0",
            "RECSYS_APP_ID": "bench-streams",
            **RATE_LIMITS,
        }
        processes = [
            start(["serve", "--registry", str(args.registry), "--port", str(api)], env, folder / "serve.log"),
            *(
                start(
                    ["stream", "worker"],
                    env
                    | {"RECSYS_WEB_PORT": str(web), "RECSYS_DATA_DIR": str(folder / f"stream-data-{web}")},
                    folder / f"worker-{web}.log",
                )
                for web in webs
            ),
        ]
        try:
            wait_http(f"http://127.0.0.1:{api}/readyz")
            for web in webs:
                wait_http(f"http://127.0.0.1:{web}/stats/")
            with api_key(args.registry, "feedback-loop") as key:
                result = {"cores": os.cpu_count(), "throughput": throughput(api, key, webs, args)}
                result["freshness"] = freshness(api, key, args.hates, tracks)
        finally:
            stop(processes)
            kafka.stop()
    return emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
