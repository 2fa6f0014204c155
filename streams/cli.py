"""``recsys kafka start|stop|status``: the local broker of the feedback loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from streams.broker import DEFAULT_HOME, LocalKafka

kafka_app = typer.Typer(
    help="The local Apache Kafka broker (KRaft, single node, 127.0.0.1).", no_args_is_help=True
)

Home = Annotated[Path, typer.Option("--home", envvar="RECSYS_KAFKA_HOME", help="Broker data and logs.")]
Port = Annotated[int, typer.Option("--port", envvar="RECSYS_KAFKA_PORT", help="Client port.")]
ControllerPort = Annotated[int, typer.Option("--controller-port", help="KRaft controller port.")]


def _broker(home: Path, port: int, controller_port: int) -> LocalKafka:
    return LocalKafka(home=home, port=port, controller_port=controller_port)


@kafka_app.command("start")
def start(home: Home = DEFAULT_HOME, port: Port = 9092, controller_port: ControllerPort = 9093) -> None:
    """Fetch the broker (first time), start it, wait until it answers, create the topics."""
    broker = _broker(home, port, controller_port)
    broker.start()
    typer.echo(f"Kafka ready at {broker.bootstrap} (data and logs in {broker.home})")


@kafka_app.command("stop")
def stop(home: Home = DEFAULT_HOME, port: Port = 9092, controller_port: ControllerPort = 9093) -> None:
    """Stop the broker (its data stays for the next start)."""
    stopped = _broker(home, port, controller_port).stop()
    typer.echo("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def status(home: Home = DEFAULT_HOME, port: Port = 9092, controller_port: ControllerPort = 9093) -> None:
    """Whether the broker runs and answers (JSON); exit status 1 when it does not."""
    state = _broker(home, port, controller_port).status()
    sys.stdout.write(json.dumps(state) + "\n")
    raise typer.Exit(0 if state["answers"] else 1)


@kafka_app.command("topics")
def topics(
    bootstrap: Annotated[
        str, typer.Option("--bootstrap", envvar="RECSYS_KAFKA_BOOTSTRAP", help="host:port of any broker.")
    ] = "127.0.0.1:9092",
) -> None:
    """Create the feedback loop's topics (partitions and retention as declared) on a running broker."""
    from streams.admin import create_topics

    created = create_topics(bootstrap)
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


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
    """Add ``kafka`` and ``stream`` to the ``recsys`` CLI."""
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(stream_app, name="stream")
