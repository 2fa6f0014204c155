"""``recsys keys``: create, list and revoke the API keys of the service's clients."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from recsys.access.keys import KeyStore
from recsys.access.scopes import known, listed, parse_scopes
from recsys.cli.common import RegistryOption, console, err_console
from recsys.settings import DEFAULT_REGISTRY

app = typer.Typer(
    help="API keys of the service's clients, stored hashed in the registry folder (keys.json).",
    no_args_is_help=True,
)
NameArg = Annotated[str, typer.Argument(help="The key's name: who uses it (e.g. web-frontend).")]


@app.command()
def create(
    name: NameArg,
    scopes: Annotated[
        str, typer.Option("--scopes", help=f"Comma-separated, one or more of: {known()}.", show_default=False)
    ],
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Create a key and print it: the only line on stdout, and the only time it is shown."""
    record, key = KeyStore(registry).create(name, parse_scopes(scopes))
    typer.echo(key)
    err_console.print(
        f"created key {record.name} ({record.key_id}…, scopes {listed(record.scopes)}); "
        "only its hash is stored: keep the key now",
        highlight=False,
    )


@app.command("list")
def list_(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Every key's name, scopes, id, creation and revocation (never a key or its hash)."""
    records = KeyStore(registry).records()
    if not records:
        console.print(f"no API keys in {registry}")
        return
    table = Table(title=f"API keys in {registry}")
    for column in ("name", "scopes", "id", "created", "revoked"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.name,
            listed(record.scopes),
            f"{record.key_id}…",
            record.created_at.strftime("%Y-%m-%d %H:%M"),
            record.revoked_at.strftime("%Y-%m-%d %H:%M") if record.revoked_at else "-",
            style="dim" if record.revoked else "",
        )
    console.print(table)


@app.command()
def revoke(name: NameArg, registry: RegistryOption = DEFAULT_REGISTRY) -> None:
    """Revoke a key: every replica refuses it from its next request on."""
    record = KeyStore(registry).revoke(name)
    when = record.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if record.revoked_at else "?"
    console.print(f"{record.name} ({record.key_id}…) is revoked (since {when} UTC)", highlight=False)
