"""``recsys models``: list, show, verify, diff, promote, roll back, set stages."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from recsys.cli.common import RegistryOption, console, metrics_table, open_registry
from recsys.evaluation.metrics import METRIC_NAMES, PRIMARY_METRIC
from recsys.registry.artifacts import manifest_json
from recsys.registry.manifest import Stage
from recsys.settings import DEFAULT_REGISTRY

app = typer.Typer(help="Manage model versions in the registry.", no_args_is_help=True)
VersionArg = Annotated[
    str, typer.Argument(help="Version (e.g. 2.1) or alias: production, candidate, latest.")
]


@app.command("list")
def list_(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Every version with its stage, lineage and headline metrics."""
    infos = open_registry(registry).list()
    if not infos:
        console.print(f"no models in {registry}")
        return
    table = Table(title=f"models in {registry}")
    for column in (
        "version",
        "stage",
        "parent",
        "created",
        "device",
        PRIMARY_METRIC,
        "r_precision",
    ):
        table.add_column(column)
    for info in infos:
        style = (
            "bold green"
            if info.stage is Stage.PRODUCTION
            else ("dim" if info.stage is Stage.ARCHIVED else "")
        )
        table.add_row(
            info.version,
            info.stage.value,
            info.parent_version or "-",
            info.created_at.strftime("%Y-%m-%d %H:%M"),
            info.device,
            _fmt(info.metrics.get(PRIMARY_METRIC)),
            _fmt(info.metrics.get("r_precision")),
            style=style,
        )
    console.print(table)


@app.command()
def show(version: VersionArg, registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """The full manifest of a version (JSON)."""
    console.print_json(manifest_json(open_registry(registry).manifest(version)))


@app.command()
def verify(version: VersionArg, registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Check every file of a version against its checksum."""
    manifest = open_registry(registry).verify(version)
    console.print(f"{manifest.version}: {len(manifest.files)} files verified")


@app.command()
def promote(
    version: VersionArg,
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses.")] = False,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Make a version production if it beats production and the baselines (the promotion gate)."""
    reg = open_registry(registry)
    decision = reg.promote(version, force=force)
    for reason in decision.reasons:
        console.print(f"  {reason}")
    console.print(f"[green]{reg.resolve('production')} is production[/green]")


@app.command()
def rollback(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Return production to the previous production version."""
    version = open_registry(registry).rollback()
    console.print(f"[yellow]rolled back: {version} is production[/yellow]")


@app.command()
def stage(
    version: VersionArg,
    to: Annotated[Stage, typer.Argument(help="candidate or archived (promote makes production).")],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Set a version's stage to candidate or archived."""
    reg = open_registry(registry)
    reg.set_stage(version, to)
    console.print(f"{reg.resolve(version)} is {to.value}")


@app.command()
def diff(a: VersionArg, b: VersionArg, registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Compare two versions: parameters, data lineage and offline metrics."""
    reg = open_registry(registry)
    ma, mb = reg.manifest(a), reg.manifest(b)
    table = Table(title=f"{ma.version} vs {mb.version}")
    for column in ("field", ma.version, mb.version, "change"):
        table.add_column(column)
    for key in sorted(set(ma.params) | set(mb.params)):
        va, vb = ma.params.get(key), mb.params.get(key)
        if va != vb:
            table.add_row(f"params.{key}", str(va), str(vb), "")
    for key in ("content_sha256", "interactions", "playlists", "tracks"):
        va, vb = ma.lineage.get(key), mb.lineage.get(key)
        if va != vb:
            table.add_row(f"data.{key}", str(va)[:16], str(vb)[:16], "")
    for name in METRIC_NAMES:
        va, vb = ma.primary_metric(name), mb.primary_metric(name)
        change = f"{(vb - va) / va:+.1%}" if va and vb is not None else ""
        table.add_row(name, _fmt(va), _fmt(vb), change)
    table.add_row("device", ma.device, mb.device, "")
    console.print(table)
    if ma.metrics.get("methods"):
        console.print(metrics_table(ma.metrics["methods"], f"{ma.version}: model and baselines"))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
