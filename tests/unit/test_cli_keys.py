"""``recsys keys``: the new key is the only line on stdout; listings never show a key or a hash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys.access.keys import KeyStore
from recsys.access.scopes import Scope
from recsys.cli.main import main


def recsys(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the CLI in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["recsys", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_create_prints_the_key_alone_on_stdout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "-v", "keys", "create", "web", "--scopes", "recommend,feedback",
         "--registry", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.endswith("\n")
    key = done.stdout.strip()
    record = KeyStore(tmp_path).authenticate(key)
    assert record is not None and record.name == "web"
    assert record.scopes == (Scope.RECOMMEND, Scope.FEEDBACK)
    assert "created key web" in done.stderr and key not in done.stderr


def test_list_and_revoke_show_names_scopes_and_ids_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ["--registry", str(tmp_path)]
    assert recsys(monkeypatch, "keys", "list", *registry) == 0
    assert "no API keys" in capsys.readouterr().out
    assert recsys(monkeypatch, "keys", "create", "web", "--scopes", "recommend", *registry) == 0
    key = capsys.readouterr().out.strip()
    assert recsys(monkeypatch, "keys", "create", "ops", "--scopes", "admin", *registry) == 0
    capsys.readouterr()
    assert recsys(monkeypatch, "keys", "revoke", "web", *registry) == 0
    assert "web (rsk_" in capsys.readouterr().out
    assert recsys(monkeypatch, "keys", "list", *registry) == 0
    listing = capsys.readouterr().out
    [web] = [line for line in listing.splitlines() if " web " in line]
    [ops] = [line for line in listing.splitlines() if " ops " in line]
    assert "recommend" in web and key[:12] in web and web.count("20") >= 2  # created and revoked
    assert "admin" in ops and ops.rstrip(" │").endswith("-")  # not revoked
    assert key not in listing and KeyStore(tmp_path).records()[0].sha256 not in listing
    assert KeyStore(tmp_path).authenticate(key) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "web", "--scopes", "recommend"], "a key named 'web' exists"),
        (["create", "new", "--scopes", "recommend,root"], "unknown scope 'root'"),
        (["create", "new", "--scopes", ","], "at least one scope"),
        (["create", "a b", "--scopes", "admin"], "a key name is"),
        (["revoke", "nobody"], "no key named 'nobody'"),
    ],
)
def test_mistakes_are_one_clear_line_and_a_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    KeyStore(tmp_path).create("web", {Scope.RECOMMEND})
    assert recsys(monkeypatch, "keys", *args, "--registry", str(tmp_path)) != 0
    out, err = capsys.readouterr()
    assert message in err and not out
    assert [r.name for r in KeyStore(tmp_path).records()] == ["web"]
