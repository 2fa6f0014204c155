"""``recsys experiments list``: every experiment in the plan, its step and its last decision."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.table import Table

from recsys.cli.common import RegistryOption, console, err_console, open_registry
from recsys.registry.experiment_log import REASONS_JOIN, DecisionRecord, Records
from recsys.settings import DEFAULT_REGISTRY

app = typer.Typer(help="Running A/B experiments.", no_args_is_help=True)
PROBLEMS_SHOWN = 5
"""Unreadable records named one by one; the rest are counted."""


@app.command("list")
def list_(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Experiments with their share, how long the step has run, and the controller's last decision."""
    reg = open_registry(registry)
    plan = reg.rollout()
    found = reg.records(experiments=[e.name for e in plan.experiments]) if plan.experiments else Records()
    last = {r.experiment: r for r in found.records if isinstance(r, DecisionRecord)}
    table = Table(title=f"experiments (plan revision {plan.revision}, production {reg.production() or '-'})")
    for column in ("experiment", "treatment", "share", "step running", "state", "last decision"):
        table.add_column(column)
    now = datetime.now(UTC)
    for e in plan.experiments:
        decision = last.get(e.name)
        table.add_row(
            e.name,
            e.treatment,
            f"{e.share:.1%}",
            str(now - e.step_started).split(".")[0] if e.step_started else "-",
            "paused" if e.paused else "running",
            f"{decision.action} at {decision.at:%Y-%m-%dT%H:%M:%S}: {REASONS_JOIN.join(decision.reasons)}"
            if decision
            else "-",
        )
    console.print(table if plan.experiments else "no experiments running")
    warn_unreadable(found)


def warn_unreadable(found: Records) -> None:
    """Name the records a read skipped (on stderr), so a damaged file does not go unnoticed."""
    if not found.problems:
        return
    err_console.print(f"[yellow]{len(found.problems)} unreadable records skipped:[/yellow]")
    for problem in found.problems[:PROBLEMS_SHOWN]:
        err_console.print(f"  {problem}", markup=False)
    if len(found.problems) > PROBLEMS_SHOWN:
        err_console.print(f"  ... and {len(found.problems) - PROBLEMS_SHOWN} more")
