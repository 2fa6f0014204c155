"""The settings: one base, every field declared once, the variables users set, options on top,
and no process changing its own environment."""

from __future__ import annotations

import ast
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from recsys.errors import ConfigurationError
from recsys.settings import RecsysSettings, get_settings, with_overrides
from serving.settings import ServingSettings
from streams.settings import StreamSettings
from training.settings import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recsys", "serving", "streams", "training")
SETTINGS = (RecsysSettings, ServingSettings, StreamSettings, TrainingSettings)
NOT_SETTINGS = {
    "RECSYS_API_KEY",  # recsys simulate --api-key
    "RECSYS_KAFKA_HOME",  # recsys kafka --home
    "RECSYS_KAFKA_PORT",  # recsys kafka --port
    "RECSYS_KAFKA_CACHE",  # the local broker's downloads
}
"""Variables of the command line's own tools, not of a process's settings."""


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ``RECSYS_*`` variable and no ``.env`` file; the cached settings forgotten."""
    for name in list(os.environ):
        if name.upper().startswith("RECSYS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def settings_classes_in_source() -> dict[str, list[str]]:
    """Classes deriving from ``BaseSettings`` by name, per file of the packages."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    (isinstance(b, ast.Name) and b.id == "BaseSettings")
                    or (isinstance(b, ast.Attribute) and b.attr == "BaseSettings")
                    for b in node.bases
                ):
                    found.setdefault(str(path.relative_to(ROOT)), []).append(node.name)
    return found


def test_only_the_base_derives_from_pydantic_settings() -> None:
    assert settings_classes_in_source() == {"recsys/settings.py": ["RecsysSettings"]}


@pytest.mark.parametrize("cls", SETTINGS[1:], ids=lambda c: c.__name__)
def test_every_process_settings_class_derives_from_the_base(cls: type[BaseSettings]) -> None:
    assert issubclass(cls, RecsysSettings)
    assert cls.model_config["env_prefix"] == "RECSYS_"
    assert cls.model_config["env_file"] == ".env"
    assert cls.model_config["extra"] == "ignore"


def test_no_field_is_declared_in_two_classes() -> None:
    declared: dict[str, list[str]] = {}
    for cls in SETTINGS:
        for name in inspect.get_annotations(cls):
            if name != "model_config":
                declared.setdefault(name, []).append(cls.__name__)
    assert {name: owners for name, owners in declared.items() if len(owners) > 1} == {}


def test_the_shared_fields_are_in_the_base() -> None:
    assert {"registry", "kafka_bootstrap", "model_events", "log_level"} <= set(RecsysSettings.model_fields)


def test_every_field_is_read_somewhere() -> None:
    """A field no module reads (``settings.NAME`` or ``.NAME`` of the settings) is dead."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "settings.py"
    )
    dead = [
        f"{cls.__name__}.{name}"
        for cls in SETTINGS
        for name in inspect.get_annotations(cls)
        if name != "model_config" and not re.search(rf"\.{name}\b", source)
    ]
    assert dead == []


def documented_variables() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "deploy" / ".env.example", ROOT / "docs" / "configuration.md"):
        names |= set(re.findall(r"\bRECSYS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    return names


def known_variables() -> set[str]:
    names = {cls.env_name(field) for cls in SETTINGS for field in cls.model_fields}
    trust = TrainingSettings.model_fields["trust"].annotation
    assert trust is not None and hasattr(trust, "model_fields")
    return names | {f"RECSYS_TRUST__{field.upper()}" for field in trust.model_fields}


def test_every_documented_variable_is_a_setting() -> None:
    assert documented_variables() - NOT_SETTINGS - known_variables() == set()


@pytest.mark.parametrize("document", ["docs/configuration.md", "deploy/.env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    missing = {
        cls.env_name(field) for cls in SETTINGS for field in cls.model_fields if field != "trust"
    } - set(re.findall(r"RECSYS_[A-Z0-9_]+", text))
    assert missing == set()


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize(
    ("cls", "variable", "value", "field", "expected"),
    [
        (RecsysSettings, "RECSYS_REGISTRY", "/srv/models", "registry", Path("/srv/models")),
        (RecsysSettings, "RECSYS_LOG_LEVEL", "INFO", "log_level", "INFO"),
        (RecsysSettings, "RECSYS_MODEL_EVENTS", "kafka://k:9092", "model_events", "kafka://k:9092"),
        (StreamSettings, "RECSYS_KAFKA_BOOTSTRAP", "k:9092", "kafka_bootstrap", "k:9092"),
        (TrainingSettings, "RECSYS_KAFKA_BOOTSTRAP", "k:9092", "kafka_bootstrap", "k:9092"),
        (ServingSettings, "RECSYS_KAFKA_BOOTSTRAP", "k:9092", "kafka_bootstrap", "k:9092"),
        (TrainingSettings, "RECSYS_TRAINER_GROUP", "trainers", "trainer_group", "trainers"),
        (ServingSettings, "RECSYS_HOST", "0.0.0.0", "host", "0.0.0.0"),
        (ServingSettings, "RECSYS_PORT", "9000", "port", 9000),
        (ServingSettings, "RECSYS_WORKERS", "4", "workers", 4),
        (ServingSettings, "RECSYS_MODEL", "candidate", "model", "candidate"),
        (ServingSettings, "RECSYS_FEEDBACK_SINK", "memory://", "feedback_sink", "memory://"),
        (ServingSettings, "RECSYS_FOLLOW_MODEL_EVENTS", "false", "follow_model_events", False),
        (ServingSettings, "RECSYS_FOLLOW_USER_UPDATES", "false", "follow_user_updates", False),
        (StreamSettings, "RECSYS_REGISTRY", "/srv/models", "registry", Path("/srv/models")),
    ],
)
def test_the_variables_users_set_still_set_their_field(
    monkeypatch: pytest.MonkeyPatch,
    cls: type[RecsysSettings],
    variable: str,
    value: str,
    field: str,
    expected: object,
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(cls(), field) == expected


@pytest.mark.usefixtures("clean_environment")
def test_a_dotenv_file_is_read_by_every_process_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RECSYS_REGISTRY=/from/dotenv\nRECSYS_KAFKA_BOOTSTRAP=k:1\n")
    for cls in SETTINGS:
        settings = cls()
        assert (settings.registry, settings.kafka_bootstrap) == (Path("/from/dotenv"), "k:1")


@pytest.mark.usefixtures("clean_environment")
def test_options_given_override_the_settings_and_none_leaves_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_PORT", "9000")
    monkeypatch.setenv("RECSYS_MODEL", "candidate")
    settings = ServingSettings()
    overridden = with_overrides(settings, port=9100, model=None, registry=Path("/srv/models"))
    assert (overridden.port, overridden.model) == (9100, "candidate")
    assert overridden.registry == Path("/srv/models")
    assert type(overridden) is ServingSettings
    assert (settings.port, settings.registry) == (9000, Path("models"))  # left as it was
    assert with_overrides(settings, port=None) is settings


@pytest.mark.usefixtures("clean_environment")
def test_overriding_does_not_read_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServingSettings()
    monkeypatch.setenv("RECSYS_MODEL", "candidate")
    assert with_overrides(settings, port=9100).model == "production"


@pytest.mark.usefixtures("clean_environment")
def test_an_invalid_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        with_overrides(ServingSettings(), workers=0)
    with pytest.raises(ConfigurationError, match="feedback_rate_per_key"):
        with_overrides(ServingSettings(), feedback_rate_per_key="lots")


def test_an_option_naming_no_setting_is_refused() -> None:
    with pytest.raises(KeyError, match="no setting 'port'"):
        with_overrides(RecsysSettings(), port=1)


def test_env_names_follow_the_prefix() -> None:
    assert ServingSettings.env_name("follow_user_updates") == "RECSYS_FOLLOW_USER_UPDATES"
    assert TrainingSettings.env_name("registry") == "RECSYS_REGISTRY"


def test_no_option_reads_a_variable_the_settings_read() -> None:
    """Options default to ``None`` and override the settings; one source for each variable."""
    settings_variables = known_variables()
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value.value}"
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.keyword)
        and node.arg == "envvar"
        and isinstance(node.value, ast.Constant)
        and node.value.value in settings_variables
    ]
    assert offenders == []


MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def environment_mutations(source: str) -> list[int]:
    """Lines of ``source`` that change the process's environment: assigning to or deleting
    from ``os.environ`` (or an ``environ`` imported from ``os``), calling one of its changing
    methods, ``os.putenv`` or ``os.unsetenv``."""
    tree = ast.parse(source)
    environ_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "os"
        for alias in node.names
        if alias.name == "environ"
    }

    def is_environ(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
        return isinstance(node, ast.Name) and node.id in environ_names

    def changes(target: ast.AST) -> bool:
        return is_environ(target) or (isinstance(target, ast.Subscript) and is_environ(target.value))

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.Delete):
            if any(changes(t) for t in node.targets):
                lines.append(node.lineno)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            if changes(node.target):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func
            if (method.attr in MUTATORS and is_environ(method.value)) or (
                method.attr in {"putenv", "unsetenv"}
                and isinstance(method.value, ast.Name)
                and method.value.id == "os"
            ):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_module_changes_its_own_environment() -> None:
    offenders = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (lines := environment_mutations(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_environment_walker_sees_every_kind_of_change() -> None:
    """Guard against a walker that finds nothing."""
    source = """
import os
from os import environ as env
os.environ["A"] = "1"
os.environ.update({"B": "2"})
env["C"] = "3"
del os.environ["A"]
os.environ.setdefault("D", "4")
os.putenv("E", "5")
os.environ |= {"F": "6"}
copy = os.environ | {"G": "7"}
value = os.environ.get("H")
"""
    assert environment_mutations(source) == [4, 5, 6, 7, 8, 9, 10]
