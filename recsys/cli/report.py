"""``recsys report EXPERIMENT``: an experiment's numbers in the terminal and as an HTML report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from recsys.cli.common import RegistryOption, arms_table, console, open_registry
from recsys.cli.experiments import warn_unreadable
from recsys.errors import InvalidRequest, RecsysError
from recsys.experiments.arms import live_look, read_stats
from recsys.experiments.report.history import History, Look, experiment_names, history
from recsys.experiments.report.render import render_report
from recsys.settings import DEFAULT_REGISTRY

DEFAULT_REPORTS = Path("reports")


def report(
    experiment: Annotated[str, typer.Argument(help="Experiment name (see `recsys experiments list`).")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default: reports/EXPERIMENT.html).")
    ] = None,
    stats: Annotated[
        str | None,
        typer.Option(help="Also show the live counters: the stream worker's /stats/ URL or a JSON file."),
    ] = None,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Print an experiment's arms and decisions, and write an HTML report with its charts."""
    reg = open_registry(registry)
    found = reg.records(experiments=[experiment])
    warn_unreadable(found)
    if experiment not in experiment_names(found.records):
        known = ", ".join(reg.experiment_names()) or "none"
        raise InvalidRequest(f"no experiment named {experiment!r} in {registry} (known: {known})")
    past = history(found.records, experiment)
    running = next((e for e in reg.rollout().experiments if e.name == experiment), None)
    live = live_look(read_stats(stats), running, datetime.now(UTC)) if stats and running else None
    _print(past, live)
    path = out or DEFAULT_REPORTS / f"{experiment}.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_report(past, live=live), encoding="utf-8")
    except OSError as exc:
        raise RecsysError(f"cannot write the report to {path}: {exc}") from exc
    console.print(f"report: [bold]{path.resolve()}[/bold]")


def _print(past: History, live: Look | None) -> None:
    latest = live or past.last
    console.print(
        f"experiment [bold]{past.name}[/bold]: model {past.treatment}, {past.outcome}, "
        f"{len(past.looks)} decisions"
    )
    if latest is None:
        console.print("no decision yet")
        return
    when = "now" if live else "at the last decision"
    console.print(arms_table(f"{when} (share {latest.share:.0%})", latest.arms))
    if latest.listening:
        d = latest.listening
        console.print(
            f"listening time per user, treatment - control: {d.estimate:+.1f}s "
            f"(95% CI {d.low:+.1f}..{d.high:+.1f}, p={d.p_value:.3g})"
        )
    if latest.checks:
        console.print(checks_table(latest))
    table = Table(title="decisions")
    for column in ("at (UTC)", "action", "share after", "reasons"):
        table.add_column(column)
    for look in past.looks:
        table.add_row(look.at.strftime("%Y-%m-%d %H:%M:%S"), look.action, f"{look.share:.0%}", look.reasons)
    console.print(table)


def checks_table(look: Look) -> Table:
    """The guardrails judged at ``look``: each metric's difference, its interval and the margin."""
    table = Table(title="guardrails")
    for column in ("metric", "estimate", "interval", "margin", "treatment users", "control users", "verdict"):
        table.add_column(column)
    for check in look.checks:
        table.add_row(
            str(check.get("metric", "?")),
            _number(check.get("estimate")),
            f"{_number(check.get('low'))}..{_number(check.get('high'))}",
            _number(check.get("margin")),
            str(check.get("treatment_users", "-")),
            str(check.get("control_users", "-")),
            "breached" if check.get("breached") else "ok",
        )
    return table


def _number(value: object) -> str:
    return f"{value:+.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"
