"""``recsys kafka start|stop|status``: the local broker of the feedback loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from deploy.kafka_launcher import DEFAULT_HOME, LocalKafka
from recsys.settings import RecsysSettings, with_overrides

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
        str | None,
        typer.Option("--bootstrap", help="host:port of any broker [default: RECSYS_KAFKA_BOOTSTRAP]."),
    ] = None,
) -> None:
    """Create the feedback loop's topics (partitions and retention as declared) on a running broker."""
    from streams.admin import create_topics

    settings = with_overrides(RecsysSettings(), kafka_bootstrap=bootstrap)
    bootstrap = settings.kafka_bootstrap
    created = create_topics(bootstrap)
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


def register(app: typer.Typer) -> None:
    """Add ``kafka`` to the ``recsys`` CLI."""
    app.add_typer(kafka_app, name="kafka")
