"""``recsys demo``: the main job end to end on generated sample data, with a report at the end.

Each step runs the real command in its own process, as an operator would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.common import console
from recsys.cli.loop_demo import run_loop
from recsys.errors import RecsysError

SAMPLE_SCALE = 0.003
"""3,000 playlists, about 180k entries: trains and evaluates in well under a minute."""
RUN_STATE = ("models", "stream-state", "kafka", "logs", "rounds", "reports")
"""What a run leaves in its work folder besides the sample data (which is kept, by scale and seed)."""


def demo(
    workdir: Annotated[Path, typer.Option(help="Where the sample data, registry and outputs go.")] = Path(
        "demo-run"
    ),
    scale: Annotated[
        float, typer.Option(help="Sample size as a fraction of the Million Playlist Dataset.")
    ] = SAMPLE_SCALE,
    seed: Annotated[int, typer.Option(help="Seed of data and training.")] = 0,
    loop: Annotated[
        bool,
        typer.Option(
            "--loop",
            help="Then run the feedback loop: local Kafka, API, stream worker, trainer, simulated "
            "listeners, retraining and the staged rollout.",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--continue/--fresh",
            help="Build on the registry a previous run left in the work folder, or start clean "
            "(the default: the previous run's registry, stream state and logs are removed).",
        ),
    ] = False,
    hold: Annotated[
        bool | None,
        typer.Option(
            "--hold/--no-hold",
            help="After the loop, keep the API and its dashboard up until Ctrl-C "
            "(default: when run from a terminal).",
        ),
    ] = None,
) -> None:
    """Generate sample playlists, train and evaluate model versions, promote, recommend, report."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    _start_clean(workdir, resume=resume)
    data, registry = workdir / f"sample-{scale:g}-{seed}.parquet", workdir / "models"
    if not data.exists():
        _step(
            "1/5 generate sample data",
            ["data", "synth", "--scale", str(scale), "--seed", str(seed), "--output", str(data)],
        )
    else:
        console.print(f"[bold]1/5 sample data[/bold]: reusing {data}")
    _step(
        "2/5 train, evaluate and register a model",
        [
            "train",
            "--data",
            str(data),
            "--seed",
            str(seed),
            "--promote",
            "--registry",
            str(registry),
        ],
    )
    _step("3/5 models in the registry", ["models", "list", "--registry", str(registry)])
    seeds, recs = workdir / "seeds.jsonl", workdir / "recommendations.jsonl"
    _write_seed_playlists(seeds)
    _step(
        "4/5 recommend for new playlists (folded in)",
        [
            "recommend",
            "--input",
            str(seeds),
            "--output",
            str(recs),
            "--k",
            "10",
            "--registry",
            str(registry),
        ],
    )
    _show(recs)
    _step(
        "5/5 verify the production model's checksums",
        ["models", "verify", "production", "--registry", str(registry)],
    )
    if loop:
        run_loop(
            workdir, data, registry, scale=scale, seed=seed, hold=sys.stdin.isatty() if hold is None else hold
        )
    console.print(
        f"\n[bold green]demo done[/bold green] in {time.perf_counter() - started:.0f}s: registry {registry}, "
        f"recommendations {recs}. Try: recsys models show production --registry {registry}"
    )


def _start_clean(workdir: Path, *, resume: bool) -> None:
    left = [workdir / name for name in RUN_STATE if (workdir / name).exists()]
    if not left:
        return
    if resume:
        console.print(f"[bold]continuing[/bold] the previous run in {workdir} (its registry and state)")
        return
    for path in left:
        shutil.rmtree(path)
    console.print(
        f"[bold]starting clean[/bold]: removed the previous run's {', '.join(p.name for p in left)} "
        f"in {workdir} (--continue builds on them instead)"
    )


def _step(title: str, args: list[str]) -> None:
    console.rule(f"[bold]{title}")
    console.print(f"$ recsys {' '.join(args)}", style="dim")
    completed = subprocess.run([sys.executable, "-m", "recsys", *args], check=False)
    if completed.returncode != 0:
        raise RecsysError(f"demo step failed: recsys {' '.join(args)} (exit {completed.returncode})")


def _write_seed_playlists(path: Path) -> None:
    """Five new playlists, each seeded with a few tracks of one synthetic style."""
    playlists = [
        {"playlist_id": f"new-{i}", "tracks": [f"tr{t}" for t in range(i * 7, i * 7 + 4)]} for i in range(5)
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in playlists), encoding="utf-8")


def _show(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines()[:3]:
        record = json.loads(line)
        head = ", ".join(record["tracks"][:5])
        console.print(f"  {record['playlist_id']} -> {head} … (model {record['model_version']})")
