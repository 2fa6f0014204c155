"""``recsys serve``: run the API with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.registry import DEFAULT_REGISTRY


def serve(
    registry: Annotated[
        Path, typer.Option("--registry", envvar="RECSYS_REGISTRY", help="Model registry folder.")
    ] = DEFAULT_REGISTRY,
    host: Annotated[str, typer.Option(envvar="RECSYS_HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="RECSYS_PORT", help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(envvar="RECSYS_WORKERS", help="Worker processes.")] = 1,
    model: Annotated[
        str, typer.Option(envvar="RECSYS_MODEL", help="Version or alias to serve.")
    ] = "production",
) -> None:
    """Serve next-song recommendations over HTTP (OpenAPI docs at /docs)."""
    import os

    import uvicorn

    from serving.settings import ServingSettings

    os.environ.update({"RECSYS_REGISTRY": str(registry), "RECSYS_MODEL": model})
    uvicorn.run(
        "serving.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=ServingSettings().access_log,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``recsys`` CLI."""
    app.command("serve")(serve)
