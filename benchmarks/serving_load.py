"""Latency of ``POST /v1/recommendations`` under a constant request rate, from a separate process.

Starts ``recsys serve`` on 127.0.0.1 over a registry, then sends requests at a fixed rate
(open loop: latency counts from each request's scheduled time, so a slow server cannot hide
its queueing; each send is woken by a ``timerfd``, see ``pacing.py``) over keep-alive
connections. Each request folds in a playlist from 20 random
seed tracks and asks for k=20. Reports p50/p90/p99/max, errors, the achieved rate, the
saturation rate (highest tried rate whose p99 stays within the SLO), the bare scoring time
of one request measured in this process in the same run (the ONNX graph; also the HNSW
index and its recall@20 against exact scoring when the version ships one), the onnxruntime
provider the server reports for each loaded version (``GET /v1/models``), and, with
``--swap-to``, what happened while a newly promoted version was swapped in under load.

    python benchmarks/serving_load.py --registry bench-out/serve-200k --rate 300 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from api_keys import api_key, authorization  # benchmarks/api_keys.py
from environment import cli_env  # benchmarks/environment.py
from pacing import Pacer  # benchmarks/pacing.py, next to this script
from report import emit  # benchmarks/report.py, next to this script

from deploy.kafka_launcher import free_port
from recsys.registry.artifacts import LoadedModel
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query, VersionRecommender

SEEDS_PER_REQUEST, K = 20, 20
SWAP_TAIL_S = 10.0


def start_server(
    registry: Path, port: int, settings: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    env = cli_env() | {"RECSYS_RELOAD_INTERVAL_S": "0"} | settings
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys", "serve", "--registry", str(registry), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb") if log else subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not become ready")


def server_providers(port: int, key: str) -> dict[str, str]:
    """onnxruntime provider of each version the server has loaded, from ``GET /v1/models``."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers=authorization(key))
    with urllib.request.urlopen(request, timeout=10) as response:
        models = json.loads(response.read())
    return {m["version"]: m["provider"] for m in models if m["serving"]}


def sample_queries(tracks: list[str], n: int, seed: int) -> list[list[str]]:
    """Seed tracks of ``n`` new playlists."""
    rng = random.Random(seed)
    return [rng.sample(tracks, SEEDS_PER_REQUEST) for _ in range(n)]


def bodies(seeds: list[list[str]], key: str) -> list[bytes]:
    out = []
    for i, tracks in enumerate(seeds):
        data = json.dumps({"user_id": f"load-{i}", "seed_tracks": tracks, "k": K}).encode()
        out.append(
            b"POST /v1/recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return status, await reader.readexactly(length)


@dataclass
class Swap:
    """Promote ``version`` ``after_s`` seconds into a run; the server's watcher picks it up."""

    registry: Path
    version: str
    after_s: float


async def promote_command(swap: Swap) -> float:
    """Run ``recsys models promote`` as an engineer would, in its own process; returns when it
    finished (the registry then names the new version, and the server's watcher can see it).

    Promotion verifies every file of the version first (3.3 GB at 2.36M tracks), on the same
    cores as the server and this generator.
    """
    command = ("models", "promote", swap.version, "--force", "--registry", str(swap.registry))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recsys", *command, env=cli_env(), stdout=subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise RuntimeError(f"recsys {' '.join(command)} failed")
    return time.perf_counter()


def swap_report(
    swap: Swap, promoted_at: float, committed_at: float, samples: list[tuple[float, float, int, bool]]
) -> dict[str, Any]:
    """The server's swap: requests sent from the end of the promotion command until
    :data:`SWAP_TAIL_S` after the first answer from the new version (the server frees the old
    version 2 s after the switch; that is part of the swap too). Requests sent while the
    promotion command itself ran (its checksums take a core of this machine) are counted apart.
    """
    first_new = min((t for t, _, _, new in samples if new), default=None)
    if first_new is None:
        return {"version": swap.version, "picked_up": False}
    window = [(lat, status) for t, lat, status, _ in samples if committed_at <= t <= first_new + SWAP_TAIL_S]
    during_command = np.array([lat for t, lat, _, _ in samples if promoted_at <= t < committed_at])
    latencies = np.array([lat for lat, _ in window])
    slow = [(t, lat) for t, lat, _, _ in samples if lat > 0.1]
    return {
        "version": swap.version,
        "picked_up": True,
        "promotion_command_s": round(committed_at - promoted_at, 2),
        "over_100ms_during_promotion_command": int((during_command > 0.1).sum()),
        "seconds_to_first_answer": round(first_new - committed_at, 2),
        "requests_in_window": len(window),
        "errors_in_window": sum(status != 200 for _, status in window),
        "over_100ms_in_window": int((latencies > 0.1).sum()),
        "max_ms_in_window": round(float(latencies.max()) * 1e3, 2),
        "p99_ms_in_window": round(float(np.percentile(latencies, 99)) * 1e3, 2),
        "slow_sent_at_s": sorted({round(t - promoted_at, 1) for t, _ in slow})[:30],
        "over_100ms_by_second_after_promotion": dict(
            sorted(Counter(int(t - promoted_at) for t, _ in slow).items())
        ),
    }


def cpu_times() -> dict[str, float] | None:
    """The machine's CPU seconds so far by kind (``/proc/stat``), where there is one."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {name: int(value) / ticks for name, value in zip(names, fields, strict=True)}


def machine_report(before: dict[str, float] | None) -> dict[str, float]:
    """CPU seconds of the whole machine (every core) by kind since ``before``: ``steal`` is time
    the virtual machine's cores wanted to run and the host ran something else."""
    after = cpu_times()
    if before is None or after is None:
        return {}
    return {f"{name}_s": round(after[name] - before[name], 2) for name in after}


async def run_rate(
    port: int,
    payloads: list[bytes],
    rate: float,
    seconds: float,
    connections: int,
    swap: Swap | None = None,
    *,
    timerfd: bool = True,
) -> dict[str, Any]:
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    samples: list[tuple[float, float, int, bool]] = []
    errors = 0
    counter = iter(range(total))
    marker = f'"model_version":"{swap.version}"'.encode() if swap else b"\0"
    promoted_at, promoted_clock, committed_at = float("inf"), "", float("inf")

    async def promote() -> None:
        nonlocal promoted_at, promoted_clock, committed_at
        assert swap is not None
        await asyncio.sleep(max(0.0, start + swap.after_s - time.perf_counter()))
        promoted_at, promoted_clock = time.perf_counter(), time.strftime("%H:%M:%S")
        committed_at = await promote_command(swap)

    lateness: list[float] = []

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                scheduled = start + i / rate
                await pacer.until(scheduled)
                lateness.append(time.perf_counter() - scheduled)
                writer.write(payloads[i % len(payloads)])
                status, body = await read_response(reader)
                latency = time.perf_counter() - scheduled
                latencies.append(latency)
                samples.append((scheduled, latency, status, marker in body))
                errors += status != 200
        finally:
            writer.close()

    pacer = Pacer(timerfd=timerfd)
    machine_before = cpu_times()
    pacing = "timerfd" if pacer.precise else "asyncio"
    try:
        await asyncio.gather(*(worker() for _ in range(connections)), *([promote()] if swap else []))
    finally:
        pacer.close()
    elapsed = time.perf_counter() - start
    lat = np.array(latencies)
    report = {
        "rate": rate,
        "requests": len(lat),
        "achieved_rate": round(len(lat) / elapsed, 1),
        "errors": errors,
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 2),
        "p90_ms": round(float(np.percentile(lat, 90)) * 1e3, 2),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 2),
        "max_ms": round(float(lat.max()) * 1e3, 2),
        # how late the generator itself sent (counted in the latencies above, which run from
        # the scheduled time); "asyncio" pacing rounds its waits up to the next millisecond
        "pacing": pacing,
        "machine_cpu": machine_report(machine_before),
        "send_lateness_p50_ms": round(float(np.percentile(lateness, 50)) * 1e3, 3),
        "send_lateness_p99_ms": round(float(np.percentile(lateness, 99)) * 1e3, 3),
        "by_status": by_status(samples, elapsed),
    }
    if swap:
        report["swap"] = swap_report(swap, promoted_at, committed_at, samples) | {
            "promoted_at_clock": promoted_clock
        }
    return report


def by_status(samples: list[tuple[float, float, int, bool]], elapsed: float) -> dict[str, Any]:
    """Per status: answers, answers per second, and latency (admitted 200s, refused 503s apart)."""
    out: dict[str, Any] = {}
    for status in sorted({status for _, _, status, _ in samples}):
        lat = np.array([latency for _, latency, code, _ in samples if code == status])
        out[str(status)] = {
            "answers": len(lat),
            "per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 2),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 2),
            "max_ms": round(float(lat.max()) * 1e3, 2),
        }
    return out


def bare_scoring(model: LoadedModel, seeds: list[list[str]], repeats: int = 300) -> dict[str, float]:
    """Median time of the scorer alone on one request (its ONNX graph, and the index when the
    version ships one), and the approximate lists' recall@20 against exact scoring."""
    exact = VersionRecommender(model, approximate=False)
    scorers = {"bare_onnx_ms": exact}
    if model.ann_index is not None:
        scorers["bare_ann_ms"] = VersionRecommender(model)
    out: dict[str, float] = {}
    for name, recommender in scorers.items():
        batches = [recommender.scoring_batch([Query(tracks=s, k=K)]) for s in seeds[:repeats]]
        for batch in batches[:20]:
            recommender.scorer.score(batch, K)
        times = []
        for batch in batches:
            start = time.perf_counter()
            recommender.scorer.score(batch, K)
            times.append(time.perf_counter() - start)
        out[name] = round(float(np.median(times)) * 1e3, 3)
    if model.ann_index is not None:
        queries = [Query(tracks=s, k=K) for s in seeds[:repeats]]
        found = scorers["bare_ann_ms"].recommend(queries)
        truth = exact.recommend(queries)
        hits = [
            len(set(f.tracks) & set(t.tracks)) / max(len(t.tracks), 1)
            for f, t in zip(found, truth, strict=True)
        ]
        out["recall_at_20_vs_exact"] = round(float(np.mean(hits)), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--saturation", type=float, nargs="*", default=[], help="further rates to try, 10 s each"
    )
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--pacing",
        choices=["timerfd", "asyncio"],
        default="timerfd",
        help="how the generator waits for each send time (asyncio's timers round up to 1 ms)",
    )
    parser.add_argument("--p99-slo-ms", type=float, default=25.0, help="p99 that defines saturation")
    parser.add_argument("--swap-to", default=None, help="version to promote during the sustained run")
    parser.add_argument("--swap-after", type=float, default=20.0, help="seconds into the run")
    parser.add_argument("--server-log", type=Path, default=None, help="write the server's log here")
    parser.add_argument(
        "--setting", action="append", default=[], help="RECSYS_NAME=value for the server (repeatable)"
    )
    args = parser.parse_args()
    registry = FileRegistry(args.registry)
    model = registry.load("production")
    tracks = [str(t) for t in model.item_ids.ids.to_pylist()]
    result: dict[str, Any] = {
        "model": model.version,
        "catalog": len(tracks),
        "factors": model.item_factors.shape[1],
        "algorithm": model.manifest.algorithm,
        "cores": os.cpu_count(),
    }
    seeds = sample_queries(tracks, 5000, seed=1)
    result |= bare_scoring(model, seeds)
    del model
    with api_key(args.registry, "serving-load") as key:
        measure(args, result, seeds, key)
    return emit(result, args.output)


def measure(args: argparse.Namespace, result: dict[str, Any], seeds: list[list[str]], key: str) -> None:
    """Start the server, then the sustained run and the saturation probe, into ``result``."""
    timerfd = args.pacing == "timerfd"
    port = free_port()
    settings = dict(item.split("=", 1) for item in args.setting)
    result["server_settings"] = settings
    server = start_server(args.registry, port, settings, args.server_log)
    try:
        result["server_providers"] = server_providers(port, key)
        payloads = bodies(seeds, key)
        asyncio.run(run_rate(port, payloads, 50, 3, 8))  # warm-up
        swap = Swap(args.registry, args.swap_to, args.swap_after) if args.swap_to else None
        result["sustained"] = asyncio.run(
            run_rate(port, payloads, args.rate, args.seconds, args.connections, swap, timerfd=timerfd)
        )
        bare = result.get("bare_ann_ms", result["bare_onnx_ms"])
        result["ratio_p50_to_bare_scoring"] = round(result["sustained"]["p50_ms"] / bare, 2)
        result["saturation"] = [
            asyncio.run(run_rate(port, payloads, rate, 10, args.connections, timerfd=timerfd))
            for rate in args.saturation
        ]
        within = [
            r["rate"] for r in result["saturation"] if r["p99_ms"] <= args.p99_slo_ms and r["errors"] == 0
        ]
        result["saturation_rate_within_slo"] = max(within, default=None)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
