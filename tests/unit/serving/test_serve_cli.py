"""``recsys serve``: options override the settings, one worker runs the app built from them,
several get them through the environment of uvicorn's supervisor, never through this one's."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
import uvicorn
from typer.testing import CliRunner

import serving.app
from recsys.errors import ConfigurationError
from serving import cli
from serving.settings import ServingSettings, get_settings


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[typer.Typer]:
    """A ``recsys``-like app with ``serve``, no ``RECSYS_*`` variable but the follow ones, no ``.env``."""
    for name in list(os.environ):
        if name.upper().startswith("RECSYS_") and not name.upper().startswith("RECSYS_FOLLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    app = typer.Typer()
    app.callback()(lambda: None)
    cli.register(app)
    yield app
    get_settings.cache_clear()


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``uvicorn.run`` and ``create_app`` were called with (nothing is served)."""
    seen: dict[str, Any] = {}

    def create_app(settings: ServingSettings) -> str:
        seen["settings"] = settings
        return "the app"

    def run(app: object, **kwargs: Any) -> None:
        seen["app"], seen["kwargs"] = app, kwargs

    monkeypatch.setattr(serving.app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", run)
    return seen


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``os.execve`` was called with (nothing is replaced)."""
    seen: dict[str, Any] = {}

    def execve(path: str, argv: list[str], env: Mapping[str, str]) -> None:
        seen["path"], seen["argv"], seen["env"] = path, argv, dict(env)

    monkeypatch.setattr(os, "execve", execve)
    return seen


def test_options_override_the_environment_and_the_rest_comes_from_it(
    command: typer.Typer, in_process: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECSYS_PORT", "9000")
    monkeypatch.setenv("RECSYS_HOST", "0.0.0.0")
    monkeypatch.setenv("RECSYS_MODEL", "candidate")
    monkeypatch.setenv("RECSYS_ACCESS_LOG", "true")
    before = dict(os.environ)
    result = CliRunner().invoke(command, ["serve", "--port", "9100", "--registry", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    settings: ServingSettings = in_process["settings"]
    assert (settings.port, settings.host, settings.model) == (9100, "0.0.0.0", "candidate")
    assert settings.registry == tmp_path / "m"
    assert in_process["app"] == "the app"
    assert in_process["kwargs"] == {"host": "0.0.0.0", "port": 9100, "log_level": "info", "access_log": True}
    assert dict(os.environ) == before


def test_without_options_everything_comes_from_the_settings(
    command: typer.Typer, in_process: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("RECSYS_REGISTRY=/srv/models\nRECSYS_PORT=8100\n")
    result = CliRunner().invoke(command, ["serve"])
    assert result.exit_code == 0, result.output
    settings: ServingSettings = in_process["settings"]
    assert (settings.registry, settings.port, settings.model) == (Path("/srv/models"), 8100, "production")


def test_several_workers_get_the_options_through_the_supervisors_environment(
    command: typer.Typer, supervisor: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECSYS_WORKERS", "3")
    monkeypatch.setenv("RECSYS_MODEL", "candidate")
    monkeypatch.setenv("RECSYS_STATS_URL", "http://streams:6066/stats/")
    before = dict(os.environ)
    result = CliRunner().invoke(
        command, ["serve", "--registry", str(tmp_path / "m"), "--model", "2.1", "--port", "9200"]
    )
    assert result.exit_code == 0, result.output
    argv, env = supervisor["argv"], supervisor["env"]
    assert supervisor["path"] == argv[0]
    assert argv[1:] == [
        "-m",
        "uvicorn",
        "serving.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "9200",
        "--workers",
        "3",
        "--log-level",
        "info",
        "--no-access-log",
    ]
    assert env["RECSYS_REGISTRY"] == str(tmp_path / "m")
    assert env["RECSYS_MODEL"] == "2.1"  # the option, not the variable
    assert env["RECSYS_PORT"] == "9200"
    assert env["RECSYS_WORKERS"] == "3" and env["RECSYS_STATS_URL"] == "http://streams:6066/stats/"
    assert dict(os.environ) == before  # this process's own environment is untouched


def test_what_a_worker_reads_from_that_environment_is_what_was_validated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ServingSettings(registry=tmp_path / "m", model="2.1", workers=2)
    options = {"registry": tmp_path / "m", "model": "2.1", "workers": 2, "host": None, "port": None}
    env = cli.worker_environment(settings, options, {"PATH": "/bin", "RECSYS_MODEL": "production"})
    assert env == {
        "PATH": "/bin",
        "RECSYS_MODEL": "2.1",
        "RECSYS_REGISTRY": str(tmp_path / "m"),
        "RECSYS_WORKERS": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ServingSettings() == settings


def test_an_invalid_option_is_refused_before_anything_starts(
    command: typer.Typer, in_process: dict[str, Any]
) -> None:
    result = CliRunner().invoke(command, ["serve", "--port", "70000"])
    assert isinstance(result.exception, ConfigurationError) and "port" in result.exception.message
    assert in_process == {}


def test_the_options_read_no_environment_variable(command: typer.Typer) -> None:
    import typer.main

    click_command = typer.main.get_command(command)
    serve = click_command.commands["serve"]  # type: ignore[attr-defined]
    assert [p.name for p in serve.params if getattr(p, "envvar", None)] == []
