"""``recsys train`` and ``recsys evaluate``: the training process's commands."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from recsys.cli.common import console, err_console, metrics_table, open_registry, size_line
from recsys.data.formats import DataFormat
from recsys.data.interaction_files import DuplicatePolicy
from recsys.evaluation.split import MAX_TEST_PLAYLISTS
from recsys.models.als import ALSParams
from recsys.models.confidence import Weighting
from recsys.models.device import Device
from recsys.registry.store import FileRegistry
from recsys.settings import with_overrides
from training.pipeline import Progress as PipelineProgress
from training.pipeline import TrainRequest, TrainResult, train
from training.settings import get_settings
from training.watch import FIRST_SHARE, Trainer

_DEFAULTS = ALSParams()


def train_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="Data file or folder.")],
    fmt: Annotated[
        DataFormat, typer.Option("--format", help="Input format (auto-detected by default).")
    ] = DataFormat.AUTO,
    factors: Annotated[int, typer.Option(help="Latent factors.")] = _DEFAULTS.factors,
    iterations: Annotated[int, typer.Option(help="ALS iterations.")] = _DEFAULTS.iterations,
    regularization: Annotated[float, typer.Option(help="L2 regularization.")] = _DEFAULTS.regularization,
    alpha: Annotated[float, typer.Option(help="Confidence scale of positive entries.")] = _DEFAULTS.alpha,
    weighting: Annotated[Weighting, typer.Option(help="Input weighting before alpha.")] = _DEFAULTS.weighting,
    bm25_k1: Annotated[float, typer.Option(help="BM25 K1 of the input weighting.")] = _DEFAULTS.bm25_k1,
    bm25_b: Annotated[float, typer.Option(help="BM25 B of the input weighting.")] = _DEFAULTS.bm25_b,
    knn_weight: Annotated[
        float, typer.Option(help="Blend item-kNN into the scores with this share (0 = plain ALS).")
    ] = _DEFAULTS.knn_weight,
    knn_neighbours: Annotated[
        int, typer.Option(help="Neighbours per track of the item-kNN (blend and baseline).")
    ] = _DEFAULTS.knn_neighbours,
    device: Annotated[
        Device, typer.Option(help="auto uses implicit's CUDA build when a GPU is usable.")
    ] = Device.AUTO,
    seed: Annotated[int, typer.Option(help="Seed of ALS initialisation and of the evaluation split.")] = 0,
    duplicates: Annotated[
        DuplicatePolicy, typer.Option(help="Repeated rows in tabular input: error, sum or max.")
    ] = DuplicatePolicy.ERROR,
    evaluate: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Hold out a split and report metrics.")
    ] = True,
    eval_playlists: Annotated[
        int, typer.Option(min=1, help="At most this many test playlists (fewer: faster, noisier metrics).")
    ] = MAX_TEST_PLAYLISTS,
    refit: Annotated[
        bool, typer.Option(help="After evaluating, refit on all data for the registered model.")
    ] = False,
    promote: Annotated[bool, typer.Option(help="Make it production if the promotion gate allows.")] = False,
    ann: Annotated[
        bool | None,
        typer.Option(
            "--ann/--no-ann",
            help="Ship an HNSW index for serving (default: for catalogues of 1M tracks or more).",
        ),
    ] = None,
    cache_baselines: Annotated[
        bool, typer.Option(help="Reuse baseline metrics computed earlier on the same data and split.")
    ] = True,
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Model registry folder (default: RECSYS_REGISTRY, else ./models)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the manifest as JSON instead of tables.")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Stay up and retrain on each retrain-requests event: --data plus the feedback log.",
        ),
    ] = False,
    kafka_bootstrap: Annotated[
        str | None,
        typer.Option(
            help="Kafka broker, with --watch (default: RECSYS_KAFKA_BOOTSTRAP, else 127.0.0.1:9092)."
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="Consumer group of the trainers, with --watch "
            "(default: RECSYS_TRAINER_GROUP, else recsys-trainer)."
        ),
    ] = None,
    share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="First share of users of a retrained version (with --watch)."),
    ] = FIRST_SHARE,
) -> None:
    """Train ALS on a data set, evaluate it against baselines, and register the next version."""
    settings = with_overrides(
        get_settings(), registry=registry, kafka_bootstrap=kafka_bootstrap, trainer_group=group
    )
    params = ALSParams(
        factors=factors,
        iterations=iterations,
        regularization=regularization,
        alpha=alpha,
        weighting=weighting,
        bm25_k1=bm25_k1,
        bm25_b=bm25_b,
        knn_weight=knn_weight,
        knn_neighbours=knn_neighbours,
        seed=seed,
    )
    request = TrainRequest(
        data=data,
        fmt=fmt,
        params=params,
        device=device,
        duplicates=duplicates,
        split_seed=seed,
        eval_playlists=eval_playlists,
        evaluate=evaluate,
        refit=refit,
        promote=promote,
        ann=ann,
        cache_baselines=cache_baselines,
        trust=settings.trust,
    )
    if watch:
        _watch(
            Trainer(
                open_registry(settings.registry),
                settings.kafka_bootstrap,
                request,
                share=share,
                progress=console.print,
                group_id=settings.trainer_group,
            )
        )
        return
    result = _run_with_progress(request, open_registry(settings.registry))
    if json_out:
        sys.stdout.write(result.manifest.model_dump_json(indent=2) + "\n")
        return
    print_result(result)


def _run_with_progress(request: TrainRequest, registry: FileRegistry) -> TrainResult:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        stage_task = bar.add_task("starting", total=None)
        iteration_task = bar.add_task("ALS iterations", total=request.params.iterations, visible=False)

        def on_stage(name: str) -> None:
            bar.update(stage_task, description=name)
            if not err_console.is_terminal:
                err_console.print(f"· {name}")
            if name.startswith("fit ALS"):
                bar.reset(iteration_task, total=request.params.iterations, visible=True)

        def on_iteration(done: int, _seconds: float) -> None:
            bar.update(iteration_task, completed=done)

        return train(request, registry, PipelineProgress(stage=on_stage, iteration=on_iteration))


def _watch(trainer: Trainer) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"waiting for retrain requests on {trainer.bootstrap} (Ctrl-C stops)")
    try:
        trainer.run(stop)
    except KeyboardInterrupt:
        console.print("stopped")


def print_result(result: TrainResult) -> None:
    """Metrics table, gate verdict and timings of a training run."""
    m = result.manifest
    console.print(
        f"[bold]registered model {m.version}[/bold] (parent {m.parent_version or '-'}, device {m.device})"
    )
    console.print(f"data: {size_line(m.lineage)}")
    if result.report:
        title = f"offline evaluation ({result.report.split['test_playlists']:,} test playlists)"
        console.print(metrics_table(result.report.methods, title))
    if result.gate:
        verdict = "[green]passes[/green]" if result.gate.allowed else "[yellow]refuses[/yellow]"
        console.print(f"promotion gate {verdict}: " + "; ".join(result.gate.reasons))
    if result.promoted:
        console.print(f"[green]{m.version} is production[/green]")
    console.print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()), soft_wrap=True)


def evaluate_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="Data file or folder.")],
    fmt: Annotated[DataFormat, typer.Option("--format", help="Input format.")] = DataFormat.AUTO,
    model: Annotated[
        str | None, typer.Option(help="Take the ALS parameters of this registered version.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    eval_playlists: Annotated[
        int, typer.Option(min=1, help="At most this many test playlists.")
    ] = MAX_TEST_PLAYLISTS,
    device: Annotated[Device, typer.Option(help="Training device.")] = Device.AUTO,
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Model registry folder (default: RECSYS_REGISTRY, else ./models)."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the report as JSON here.")] = None,
) -> None:
    """Run the continuation protocol (ALS and baselines on one split) without registering anything."""
    from recsys.data.formats import load
    from recsys.evaluation.protocol import evaluate_baselines, prepare, score
    from recsys.models.als import ALSModel

    settings = with_overrides(get_settings(), registry=registry)
    params = (
        ALSParams.model_validate(FileRegistry(settings.registry).manifest(model).params)
        if model
        else ALSParams(seed=seed)
    )
    with console.status("loading"):
        prepared = prepare(load(data, fmt), seed=seed, max_test=eval_playlists)
    with console.status("baselines"):
        methods, _ = evaluate_baselines(prepared)
    with console.status(f"ALS ({params.iterations} iterations)"):
        als = ALSModel(params, device=device)
        als.fit(prepared.train)
        methods[als.name] = score(als, prepared)
    n_test = prepared.split.summary()["test_playlists"]
    title = f"continuation protocol, split seed {seed}: {n_test:,} test playlists"
    console.print(metrics_table(methods, title))
    if output:
        output.write_text(
            json.dumps(
                {
                    "split": prepared.split.summary(),
                    "params": params.model_dump(mode="json"),
                    "methods": methods,
                },
                indent=2,
            )
        )


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``recsys`` CLI."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
