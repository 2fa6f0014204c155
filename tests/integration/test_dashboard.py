"""The dashboard and an experiment report, opened in a real headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven through Selenium's WebDriver)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from recsys.access.scopes import Scope
from recsys.registry.store import FileRegistry
from tests.integration.test_serve_process import serve
from tests.keys import authorised

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not Path(DRIVER).exists():
        pytest.fail(
            "Chromium's WebDriver is missing: `make browser` (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def charts_drawn(driver: WebDriver, scope: str = "") -> dict[str, int]:
    """Chart key -> drawn lines, for every chart that the browser laid out with a size."""
    drawn = {}
    for figure in driver.find_elements(By.CSS_SELECTOR, f"{scope} figure[data-chart]"):
        svg = figure.find_element(By.TAG_NAME, "svg")
        assert svg.size["width"] > 200 and svg.size["height"] > 100, figure.get_attribute("data-chart")
        drawn[figure.get_attribute("data-chart") or ""] = len(svg.find_elements(By.CSS_SELECTOR, "path.line"))
    return drawn


def no_page_errors(driver: WebDriver) -> None:
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def test_the_dashboard_shows_the_registry_the_plan_and_live_experiment_numbers(
    browser: WebDriver, experiment_registry: FileRegistry, tmp_path: Path
) -> None:
    stats = tmp_path / "stats.json"
    stats.write_text(
        json.dumps(
            {
                "2.2|v2.2:treatment": {
                    "users": 1234,
                    "plays": 5000,
                    "listen_ms": 1234 * 700_000,
                    "loves": 250,
                },
                "2.1|v2.2:control": {"users": 1200, "plays": 4800, "listen_ms": 1200 * 600_000, "hates": 40},
                "2.1|holdout": {"users": 50, "plays": 200, "listen_ms": 50 * 300_000},
            }
        )
    )
    experiment_registry.set_holdout(0.02)
    server = serve(experiment_registry, feedback_sink="memory://", stats_url=str(stats))
    base = next(server)
    key = authorised(experiment_registry.root, Scope.RECOMMEND)  # sent with every request of the page
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": key})
    try:
        browser.get(f"{base}/dashboard")
        assert browser.title == "recsys dashboard"
        assert browser.find_element(By.ID, "production").text == "2.1"
        panel = browser.find_element(By.CSS_SELECTOR, 'article[data-experiment="v2.2"]')
        assert "live numbers" in panel.text and "share 5%" in panel.text
        treatment = panel.find_element(By.CSS_SELECTOR, 'tr[data-arm="treatment"]').text
        assert "1,234" in treatment and "700.0" in treatment
        assert "300.0" in panel.find_element(By.CSS_SELECTOR, 'tr[data-arm="holdout"]').text  # no model
        assert browser.find_element(By.ID, "holdout").text.startswith("Holdout: 2.0% of users")
        # three decisions and the live point: two lines in the listening chart, one for the share
        assert charts_drawn(browser, 'article[data-experiment="v2.2"]') == {"listening": 3, "share": 1}
        versions = [
            row.get_attribute("data-version")
            for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-version]")
        ]
        assert versions == ["2.2", "2.1"]
        log = browser.find_element(By.ID, "log").text
        assert "rollout v2.2: advance" in log and "not worse" in log
        no_page_errors(browser)

        stats.write_text("{not json")  # the worker's counters break: the page still answers
        browser.refresh()
        assert "Live counters unavailable" in browser.find_element(By.ID, "experiments").text
        assert "as of the last decision" in browser.find_element(By.CSS_SELECTOR, "article.experiment").text
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
        server.close()


def test_the_report_written_by_the_cli_opens_with_every_chart(
    browser: WebDriver, experiment_registry: FileRegistry, tmp_path: Path
) -> None:
    out = tmp_path / "report" / "v2.2.html"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys",
            "report",
            "v2.2",
            "--registry",
            str(experiment_registry.root),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "listening time per user, treatment - control: +55.0s" in run.stdout and str(out) in run.stdout
    browser.get(out.as_uri())
    assert browser.title == "experiment v2.2: report"
    drawn = charts_drawn(browser)
    assert drawn == {"listening": 2, "difference": 2, "share": 1, "love": 2, "hate": 2, "hate-gap": 1}
    assert len(browser.find_elements(By.CSS_SELECTOR, "#decisions tr")) == 1 + 3
    no_page_errors(browser)
