"""The model watcher outlives a registry it cannot read, and readiness says so after a while."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recsys.errors import RegistryUnreadable
from recsys.registry.store import STATE, FileRegistry
from serving.app import create_app
from serving.metrics import REGISTRY
from serving.settings import ServingSettings
from serving.state import ModelHolder, Watcher

CORRUPT = '{"stages": {"2.1": "produc'
"""A ``state.json`` cut short, as a copy that is not atomic can leave it (JSONDecodeError)."""


def watcher_errors() -> float:
    return REGISTRY.get_sample_value("recsys_background_errors_total", {"task": "model-watcher"}) or 0.0


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def write_state(registry: FileRegistry, text: str) -> None:
    """Replace ``state.json`` at once (a reader sees the old text or the new, whole)."""
    staged = registry.root / f"{STATE}.test"
    staged.write_text(text)
    os.replace(staged, registry.root / STATE)


def promoted_state(registry: FileRegistry, tmp_path: Path, version: str) -> str:
    """What ``state.json`` holds once ``version`` is promoted (promoted in a copy of the registry)."""
    copy = FileRegistry(Path(shutil.copytree(registry.root, tmp_path / "promoted")))
    copy.promote(version, force=True)
    return (copy.root / STATE).read_text()


@pytest.mark.parametrize(("interval_s", "broken_s"), [(0.02, 0.3), (0.05, 0.5), (0.1, 0.8)])
def test_the_watcher_survives_an_unreadable_registry_then_picks_up_a_promotion(
    experiment_registry: FileRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    interval_s: float,
    broken_s: float,
) -> None:
    promoted = promoted_state(experiment_registry, tmp_path, "2.2")
    holder = ModelHolder(experiment_registry)
    holder.load("production")
    watcher = Watcher(holder, "production", interval_s, unready_after_checks=3, max_retry_s=4 * interval_s)
    errors_before = watcher_errors()
    with caplog.at_level(logging.INFO, logger="serving.state"):
        watcher.start()
        try:
            write_state(experiment_registry, CORRUPT)
            broken_at = time.monotonic()
            wait_for(lambda: watcher_errors() >= errors_before + 2)
            time.sleep(max(broken_s - (time.monotonic() - broken_at), 0))
            assert watcher._thread.is_alive()
            age = REGISTRY.get_sample_value("recsys_registry_check_age_seconds")
            assert age is not None and age >= broken_s
            with pytest.raises(RegistryUnreadable, match="has not been readable for"):
                watcher.ensure_readable()
            write_state(experiment_registry, promoted)  # the registry is back, with a promotion
            wait_for(lambda: holder.version_or_none == "2.2")
            wait_for(lambda: watcher.streak.failures == 0)
        finally:
            watcher.stop()
    watcher.ensure_readable()
    assert watcher.check_age_s() < 4 * interval_s + 2.5  # a check, plus the retired version's grace
    failures = [r for r in caplog.records if r.name == "serving.state" and r.levelno == logging.WARNING]
    assert len(failures) == 1 and "JSONDecodeError" in failures[0].getMessage()
    assert any("model-watcher: recovered after" in r.getMessage() for r in caplog.records)


def test_a_check_that_raises_anything_is_counted_and_spaced_out(experiment_registry: FileRegistry) -> None:
    """Not only registry errors: whatever a check raises, the thread goes on."""
    holder = ModelHolder(experiment_registry)
    holder.load("production")
    ticks = iter(range(0, 10_000, 10))
    watcher = Watcher(holder, "production", 2.0, max_retry_s=16.0, clock=lambda: float(next(ticks)))

    def broken(_ref: str) -> bool:
        raise MemoryError("no room")

    holder.refresh = broken  # type: ignore[assignment]
    assert [watcher.check() for _ in range(6)] == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    del holder.refresh
    assert watcher.check() == 2.0 and watcher.streak.failures == 0


@pytest.mark.parametrize(("interval_s", "checks"), [(0.05, 3), (0.1, 2)])
def test_readyz_is_503_after_the_configured_failed_intervals_and_200_after_recovery(
    experiment_registry: FileRegistry, interval_s: float, checks: int
) -> None:
    settings = ServingSettings(
        registry=experiment_registry.root,
        feedback_sink="memory://",
        reload_interval_s=interval_s,
        registry_unready_after_checks=checks,
    )
    good = (experiment_registry.root / STATE).read_text()
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        watcher = client.app.state.watcher  # type: ignore[attr-defined]
        write_state(experiment_registry, CORRUPT)
        wait_for(lambda: client.get("/readyz").status_code == 503)
        assert watcher.check_age_s() >= checks * interval_s
        response = client.get("/readyz")
        body = response.json()
        assert set(body) == {"error", "message", "request_id"}
        assert body["error"] == "registry_unreadable" and "has not been readable for" in body["message"]
        assert body["request_id"] == response.headers["x-request-id"] and response.headers["retry-after"]
        assert client.get("/healthz").status_code == 200  # alive all the same
        metrics = client.get("/metrics").text
        assert 'recsys_background_errors_total{task="model-watcher"}' in metrics
        assert _gauge(metrics, "recsys_registry_check_age_seconds") >= checks * interval_s
        write_state(experiment_registry, good)
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout_s=40)  # the backoff's cap: 30 s
        assert _gauge(client.get("/metrics").text, "recsys_registry_check_age_seconds") < 5.0


@pytest.mark.parametrize(("interval_s", "checks"), [(2.0, 3), (0.5, 5), (10.0, 1)])
def test_unready_exactly_once_the_last_good_check_is_that_many_intervals_old(
    experiment_registry: FileRegistry, interval_s: float, checks: int
) -> None:
    holder = ModelHolder(experiment_registry)
    holder.load("production")
    clock = [100.0]
    watcher = Watcher(holder, "production", interval_s, unready_after_checks=checks, clock=lambda: clock[0])
    assert watcher.check() == interval_s
    good = (experiment_registry.root / STATE).read_text()
    write_state(experiment_registry, CORRUPT)
    clock[0] += interval_s / 3
    assert watcher.check() == interval_s  # failed: the first wait of the backoff
    watcher.ensure_readable()  # the last good check is recent, though this one failed
    while clock[0] + interval_s < 100.0 + checks * interval_s:
        clock[0] += interval_s
        watcher.check()
        watcher.ensure_readable()
    clock[0] = 100.0 + checks * interval_s
    with pytest.raises(RegistryUnreadable, match=rf"for {checks * interval_s:.0f} s \(JSONDecodeError: "):
        watcher.ensure_readable()
    write_state(experiment_registry, good)
    watcher.check()
    watcher.ensure_readable()


def test_a_registry_that_is_never_checked_never_makes_the_replica_unready(
    experiment_registry: FileRegistry,
) -> None:
    holder = ModelHolder(experiment_registry)
    holder.load("production")
    watcher = Watcher(holder, "production", 0.05, unready_after_checks=0)
    write_state(experiment_registry, CORRUPT)
    watcher.check()
    time.sleep(0.1)
    watcher.ensure_readable()
    assert watcher.streak.failures == 1


def _gauge(metrics: str, name: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])
