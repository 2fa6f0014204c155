"""``recsys stream worker``: the stream processors of the feedback loop, supervised."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

stream_app = typer.Typer(help="The stream processors of the feedback loop.", no_args_is_help=True)


@stream_app.command("worker")
def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", help="crit, error, warn, info or debug.")] = "warn",
    supervise: Annotated[
        bool, typer.Option(help="Restart the worker when it exits with an error (the broker went away).")
    ] = True,
) -> None:
    """Run the stream processors (settings from RECSYS_* variables: RECSYS_KAFKA_BOOTSTRAP, ...)."""
    if supervise:
        raise typer.Exit(_supervise(loglevel))
    import mode.loop

    mode.loop.use("uvloop")  # about a tenth of the worker's time is the event loop's own
    from streams.main import app

    sys.argv = ["recsys-stream", "worker", "--loglevel", loglevel]  # faust's own worker command
    app.main()


def _supervise(loglevel: str) -> int:
    """Run the worker in a child process and restart it after a crash, with backoff.

    Restarting is safe: the worker resumes from its committed offsets and tables, and
    counts every event exactly once. SIGTERM and SIGINT are passed on and end the loop.
    """
    import signal
    import subprocess
    import time

    command = [sys.executable, "-m", "recsys", "stream", "worker", "--no-supervise", "--loglevel", loglevel]
    stopping, delay = False, 1.0
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, preexec_fn=_die_with_parent)
        code = child.wait()
        if stopping or code == 0:
            return 0 if stopping else code
        delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
        typer.echo(f"stream worker exited with {code}; restarting in {delay:.0f}s", err=True)
        time.sleep(delay)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies, so no worker outlives it (Linux)."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):  # no glibc: the child may outlive a killed supervisor
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def register(app: typer.Typer) -> None:
    """Add ``stream`` to the ``recsys`` CLI."""
    app.add_typer(stream_app, name="stream")
