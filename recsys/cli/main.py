"""Entry point of the ``recsys`` command."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import typer

from recsys.cli import data, demo, experiments, keys, models, recommend, report, rollout, simulate
from recsys.cli.common import err_console
from recsys.errors import DataError, RecsysError
from recsys.settings import LOG_FORMAT, get_settings

COMMAND_GROUP = "recsys.commands"

app = typer.Typer(
    name="recsys",
    help="Next-song recommendations: train versioned ALS models, evaluate, manage and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(rollout.app, name="rollout")
app.add_typer(experiments.app, name="experiments")
app.add_typer(keys.app, name="keys")
app.command("recommend")(recommend.recommend)
app.command("demo")(demo.demo)
app.command("simulate")(simulate.simulate)
app.command("report")(report.report)


def _load_plugins() -> None:
    """Sub-commands of the process packages (``train``, later ``serve``, ``stream``)."""
    for entry in entry_points(group=COMMAND_GROUP):
        entry.load()(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else get_settings().log_level.upper(),
        format=LOG_FORMAT,
    )


def main() -> None:
    """Run the CLI; service errors become one red line and exit status 2 (bad input) or 1."""
    _load_plugins()
    try:
        code = app(standalone_mode=False)
    except RecsysError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, DataError) else 1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors (typer's own click)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"[red]error:[/red] {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:  # click returns a command's Exit code in this mode
        sys.exit(code)
