"""``recsys serve``: run the API with uvicorn.

The options override the API's settings (:class:`serving.settings.ServingSettings`, read
from ``RECSYS_*`` variables and ``.env``); none of them reads the environment itself.

With one worker, the application is built here from those settings and handed to uvicorn.
Several workers are processes uvicorn starts from an import string (``serving.main:app``),
each reading its own settings: this process then becomes uvicorn's supervisor (``exec``)
with an environment made for it, a copy of its own in which each option given stands under
its setting's variable, so every worker reads the values validated here. The environment of
this process itself is never changed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from recsys.settings import with_overrides

if TYPE_CHECKING:
    from serving.settings import ServingSettings

APP_IMPORT = "serving.main:app"
"""What uvicorn's worker processes import: the application built from their settings."""


def serve(
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Model registry folder (default: RECSYS_REGISTRY, else ./models)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: RECSYS_HOST, else 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: RECSYS_PORT, else 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: RECSYS_WORKERS, else 1).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Version or alias to serve (default: RECSYS_MODEL, else production)."),
    ] = None,
) -> None:
    """Serve next-song recommendations over HTTP (OpenAPI docs at /docs)."""
    from serving.settings import get_settings

    options = {"registry": registry, "host": host, "port": port, "workers": workers, "model": model}
    settings = with_overrides(get_settings(), **options)
    if settings.workers == 1:
        run_in_process(settings)
    else:
        exec_supervisor(settings, worker_environment(settings, options, os.environ))


def run_in_process(settings: ServingSettings) -> None:
    """uvicorn in this process, serving the application built from ``settings``."""
    import uvicorn

    from serving.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
    )


def worker_environment(
    settings: ServingSettings, options: Mapping[str, object], environment: Mapping[str, str]
) -> dict[str, str]:
    """A copy of ``environment`` in which each option given stands under its setting's variable.

    Parameters
    ----------
    settings : ServingSettings
        The settings with the options applied (and validated).
    options : mapping
        Field name to option value; ``None``: not given, the workers read what this process read.
    environment : mapping
        The environment to copy (``os.environ``); it is not changed.

    Returns
    -------
    dict
        The environment of uvicorn's supervisor and, through it, of its workers.
    """
    given = [name for name, value in options.items() if value is not None]
    return dict(environment) | {type(settings).env_name(name): str(getattr(settings, name)) for name in given}


def supervisor_command(settings: ServingSettings) -> list[str]:
    """uvicorn's command line for ``settings.workers`` worker processes."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APP_IMPORT,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--log-level",
        "info",
        "--access-log" if settings.access_log else "--no-access-log",
    ]


def exec_supervisor(settings: ServingSettings, environment: Mapping[str, str]) -> NoReturn:
    """Replace this process with uvicorn's supervisor of several workers, in ``environment``."""
    command = supervisor_command(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environment)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``recsys`` CLI."""
    app.command("serve")(serve)
