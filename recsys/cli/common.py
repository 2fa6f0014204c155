"""Options, output and error handling shared by every ``recsys`` sub-command."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recsys.evaluation.metrics import METRIC_NAMES
from recsys.experiments.analysis import ArmMetrics
from recsys.registry.announcer import announcer
from recsys.registry.store import FileRegistry
from recsys.settings import get_settings

WIDE_OUTPUT = 140
"""Columns used when output is not a terminal (logs, CI), so tables are not squeezed."""

console = Console(width=None if sys.stdout.isatty() else WIDE_OUTPUT)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else WIDE_OUTPUT)


def registry_or_setting(ctx: typer.Context, param: typer.CallbackParam, value: Path) -> Path:
    """The ``--registry`` given on the command line, else the ``registry`` setting.

    The option does not read ``RECSYS_REGISTRY`` itself: the settings do, once.
    """
    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is None or source.name in {"DEFAULT", "DEFAULT_MAP"}:  # click's ParameterSource
        return get_settings().registry
    return value


RegistryOption = Annotated[
    Path,
    typer.Option(
        "--registry",
        callback=registry_or_setting,
        show_default=False,
        help="Model registry folder (default: RECSYS_REGISTRY, else ./models).",
    ),
]
"""``--registry``: overrides the ``registry`` setting; commands declare it with any default."""


def open_registry(path: Path) -> FileRegistry:
    """The registry at ``path``, announcing its changes where ``RECSYS_MODEL_EVENTS`` says."""
    return FileRegistry(path, announce=announcer(get_settings().model_events))


def size_line(stats: Mapping[str, Any]) -> str:
    """``N playlists, N tracks, N interactions``."""
    return ", ".join(f"{int(stats.get(k, 0)):,} {k}" for k in ("playlists", "tracks", "interactions"))


def metrics_table(methods: dict[str, dict[str, float]], title: str) -> Table:
    """A table of metrics per method, best value per column in bold."""
    table = Table(title=title)
    table.add_column("method")
    for name in METRIC_NAMES:
        table.add_column(name, justify="right")
    for method, values in methods.items():
        table.add_row(method, *(f"{values[m]:.4f}" if m in values else "-" for m in METRIC_NAMES))
    return table


def arms_table(title: str, arms: Mapping[str, ArmMetrics]) -> Table:
    """One row per experiment arm: users, listening per user and the per-play rates."""
    table = Table(title=title)
    for column in ("arm", "users", "listening s/user", "plays/user", "love rate", "hate rate", "skip rate"):
        table.add_column(column)
    for arm, m in arms.items():
        table.add_row(
            arm,
            f"{m.users:,}",
            f"{m.listen_s_per_user:.1f}",
            f"{m.plays_per_user:.2f}",
            f"{m.love_rate:.3f}",
            f"{m.hate_rate:.3f}",
            f"{m.skip_rate:.3f}",
        )
    return table
