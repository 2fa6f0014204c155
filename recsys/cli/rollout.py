"""``recsys rollout``: start, widen, pause and stop A/B experiments of model versions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from recsys.cli.common import RegistryOption, console, open_registry
from recsys.registry import DEFAULT_REGISTRY
from recsys.rollout import Experiment, RolloutPlan

app = typer.Typer(help="A/B rollout of model versions to shares of users.", no_args_is_help=True)


@app.command("set")
def set_(
    treatment: Annotated[str, typer.Option(help="Version to try (e.g. 2.2).")],
    share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of users, 0..1 (0.01 = 1%).")],
    name: Annotated[
        str | None, typer.Option(help="Experiment name (default: the treatment version).")
    ] = None,
    salt: Annotated[str, typer.Option(help="Hash salt (default: the name).")] = "",
    paused: Annotated[
        bool, typer.Option("--paused/--running", help="Keep everyone on production for now.")
    ] = False,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Start an experiment or change its share; every replica follows within seconds."""
    experiment = Experiment(
        name=name or f"v{treatment}", treatment=treatment, share=share, salt=salt, paused=paused
    )
    _print(open_registry(registry).set_experiment(experiment))


@app.command()
def stop(
    name: Annotated[str, typer.Argument(help="Experiment name.")],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """End an experiment: its users go back to production."""
    _print(open_registry(registry).stop_experiment(name))


@app.command()
def status(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """The plan every replica serves."""
    _print(open_registry(registry).rollout())


def _print(plan: RolloutPlan) -> None:
    table = Table(title=f"rollout plan, revision {plan.revision}")
    for column in ("experiment", "treatment", "share", "salt", "state"):
        table.add_column(column)
    for e in plan.experiments:
        table.add_row(
            e.name, e.treatment, f"{e.share:.1%}", e.effective_salt, "paused" if e.paused else "running"
        )
    console.print(table if plan.experiments else "no experiments: everyone gets production")
