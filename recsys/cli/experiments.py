"""``recsys experiments list``: every experiment in the plan, its step and its last decision."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.table import Table

from recsys.cli.common import RegistryOption, console, open_registry
from recsys.registry import DEFAULT_REGISTRY

app = typer.Typer(help="Running A/B experiments.", no_args_is_help=True)


@app.command("list")
def list_(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Experiments with their share, how long the step has run, and the controller's last decision."""
    reg = open_registry(registry)
    plan, log = reg.rollout(), reg.state()["log"]
    table = Table(title=f"experiments (plan revision {plan.revision}, production {reg.production() or '-'})")
    for column in ("experiment", "treatment", "share", "step running", "state", "last decision"):
        table.add_column(column)
    now = datetime.now(UTC)
    for e in plan.experiments:
        last = next(
            (x for x in reversed(log) if x["action"].startswith(f"rollout {e.name}: ") and "detail" in x),
            None,
        )
        table.add_row(
            e.name,
            e.treatment,
            f"{e.share:.1%}",
            str(now - e.step_started).split(".")[0] if e.step_started else "-",
            "paused" if e.paused else "running",
            f"{last['action'].split(': ', 1)[1]} at {last['at'][:19]}: {last['detail'].get('reasons', '')}"
            if last
            else "-",
        )
    console.print(table if plan.experiments else "no experiments running")
