"""Command-line options override the settings; none reads an environment variable itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import recsys.settings
import training.settings
from recsys.cli.common import RegistryOption
from recsys.settings import DEFAULT_REGISTRY
from training import cli as training_cli


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ``RECSYS_*`` variable and no ``.env`` file; the cached settings forgotten."""
    for name in list(os.environ):
        if name.upper().startswith("RECSYS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    recsys.settings.get_settings.cache_clear()
    training.settings.get_settings.cache_clear()
    yield
    recsys.settings.get_settings.cache_clear()
    training.settings.get_settings.cache_clear()


def registry_command() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)

    @app.command("where")
    def where(registry: RegistryOption = DEFAULT_REGISTRY) -> None:
        typer.echo(str(registry))

    return app


def test_the_registry_option_falls_back_to_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_REGISTRY", "/from/env")
    assert CliRunner().invoke(registry_command(), ["where"]).output.strip() == "/from/env"


def test_the_registry_option_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_REGISTRY", "/from/env")
    out = CliRunner().invoke(registry_command(), ["where", "--registry", "/given"]).output
    assert out.strip() == "/given"


def test_without_either_the_registry_is_the_default() -> None:
    assert CliRunner().invoke(registry_command(), ["where"]).output.strip() == str(DEFAULT_REGISTRY)


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``recsys train --watch`` builds its trainer with (nothing runs)."""
    seen: dict[str, Any] = {}

    class Trainer:
        def __init__(self, registry: Any, bootstrap: str, request: Any, **kwargs: Any) -> None:
            seen.update(registry=registry, bootstrap=bootstrap, request=request, **kwargs)

    monkeypatch.setattr(training_cli, "Trainer", Trainer)
    monkeypatch.setattr(training_cli, "_watch", lambda trainer: None)
    return seen


def train_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    training_cli.register(app)
    return app


def test_train_watch_takes_broker_group_and_registry_from_the_settings(
    trainer: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP", "env-broker:9092")
    monkeypatch.setenv("RECSYS_TRAINER_GROUP", "env-group")
    monkeypatch.setenv("RECSYS_REGISTRY", str(tmp_path / "env-models"))
    monkeypatch.setenv("RECSYS_TRUST__MIN_AGE_DAYS", "3")
    result = CliRunner().invoke(train_app(), ["train", "--watch", "--data", "d.csv"])
    assert result.exit_code == 0, result.output
    assert (trainer["bootstrap"], trainer["group_id"]) == ("env-broker:9092", "env-group")
    assert trainer["registry"].root == tmp_path / "env-models"
    assert trainer["request"].trust.min_age_days == 3


def test_train_options_override_the_settings(
    trainer: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP", "env-broker:9092")
    monkeypatch.setenv("RECSYS_TRAINER_GROUP", "env-group")
    args = ["--kafka-bootstrap", "cli-broker:9092", "--group", "cli-group", "--registry", str(tmp_path / "r")]
    result = CliRunner().invoke(train_app(), ["train", "--watch", "--data", "d.csv", *args])
    assert result.exit_code == 0, result.output
    assert (trainer["bootstrap"], trainer["group_id"]) == ("cli-broker:9092", "cli-group")
    assert trainer["registry"].root == tmp_path / "r"


def test_train_and_evaluate_options_read_no_environment_variable() -> None:
    group = typer.main.get_command(train_app())
    for name in ("train", "evaluate"):
        command = group.commands[name]  # type: ignore[attr-defined]
        assert [p.name for p in command.params if getattr(p, "envvar", None)] == []
