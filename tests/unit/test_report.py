"""Experiment history from the registry's records, the SVG charts, and the HTML report."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from recsys.experiments.arms import live_look, slice_differences
from recsys.experiments.report.charts import Series, elapsed, line_chart, nice_ticks
from recsys.experiments.report.history import experiment_names, history
from recsys.experiments.report.render import render_report
from recsys.registry.experiment_log import DecisionRecord
from recsys.registry.plan import Experiment
from recsys.registry.store import FileRegistry

SVG = "{http://www.w3.org/2000/svg}"


def test_the_history_is_read_back_from_the_records(experiment_registry: FileRegistry) -> None:
    records = experiment_registry.records().records
    assert experiment_names(records) == ["v2.2"] == experiment_registry.experiment_names()
    h = history(records, "v2.2")
    assert (h.treatment, h.outcome) == ("2.2", "running")
    assert [(look.action, look.share) for look in h.looks] == [
        ("hold", 0.01),
        ("advance", 0.02),
        ("advance", 0.05),
    ]
    assert [share for _, share in h.shares] == [0.01, 0.02, 0.05]
    last = h.looks[-1]
    assert last.arms["treatment"].users == 900 and last.arms["control"].listen_s_per_user == 600.0
    assert last.listening is not None and last.listening.estimate == pytest.approx(55.0)
    assert last.srm_p_value == pytest.approx(1.0)
    assert "log" not in experiment_registry.state()
    decisions = experiment_registry.decisions("v2.2")
    assert [d.action for d in decisions] == ["hold", "advance", "advance"]
    assert decisions[-1].control_version == "2.1" and decisions[-1].treatment == "2.2"


def test_a_rollback_ends_the_run_and_a_restart_of_the_name_starts_a_new_history(
    experiment_registry: FileRegistry,
) -> None:
    experiment_registry.stop_experiment("v2.2")
    experiment_registry.record_decision(
        DecisionRecord(
            experiment="v2.2", treatment="2.2", action="rollback", share=0.0, reasons=["hate rate up"]
        )
    )
    assert history(experiment_registry.records().records, "v2.2").outcome == "rolled back"
    experiment_registry.set_experiment(Experiment(name="v2.2", treatment="2.2", share=0.01))
    again = history(experiment_registry.records().records, "v2.2")
    assert (again.outcome, len(again.looks), [s for _, s in again.shares]) == ("running", 0, [0.01])


def test_charts_are_well_formed_svg_with_bands_steps_and_references() -> None:
    svg = line_chart(
        [
            Series("treatment", [(0, 10.0), (60, 12.0)], band=[(8.0, 12.0), (11.0, 13.0)]),
            Series("control", [(0, 9.0), (60, 9.5)]),
            Series("holdout", []),
        ],
        title="listening <per user>",
        y_label="s",
        reference=0.0,
    )
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("aria-label") == "listening <per user>"
    assert [p.get("data-series") for p in root.iter(f"{SVG}path")] == ["treatment", "control"]
    assert len(list(root.iter(f"{SVG}polygon"))) == 1 and len(list(root.iter(f"{SVG}circle"))) == 4
    assert any(line.get("class") == "reference" for line in root.iter(f"{SVG}line"))
    step = ET.fromstring(
        line_chart([Series("treatment", [(0, 0.01), (10, 0.02)], step=True)], title="t", y_label="s")
    )
    path = next(step.iter(f"{SVG}path")).get("d") or ""
    assert path.count("L") == 2  # across, then up


def test_an_unbounded_interval_reaches_the_chart_edge_and_every_coordinate_is_a_number() -> None:
    """The always-valid interval is the whole line until there are users enough: its band is
    drawn to the edges, and the axis follows the finite numbers."""
    inf = float("inf")
    svg = line_chart(
        [Series("difference", [(0, 5.0), (60, -3.0)], band=[(-inf, inf), (-40.0, 34.0)])],
        title="difference",
        y_label="s",
        reference=0.0,
    )
    root = ET.fromstring(svg)
    (band,) = root.iter(f"{SVG}polygon")
    numbers = [float(v) for pair in (band.get("points") or "").split() for v in pair.split(",")]
    assert numbers and all(math.isfinite(v) for v in numbers)
    assert "inf" not in svg and "nan" not in svg


def test_ticks_and_time_labels_are_round() -> None:
    assert nice_ticks(0, 100) == [0, 25, 50, 75, 100] and nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1]
    assert nice_ticks(0.003, 0.0112)[0] >= 0.003
    assert [elapsed(s) for s in (5, 95, 3600, 5400, 90000)] == ["5s", "1m35s", "1h", "1h30m", "1d1h"]


def test_the_report_shows_the_arms_the_lift_and_every_chart(experiment_registry: FileRegistry) -> None:
    h = history(experiment_registry.records().records, "v2.2")
    page = render_report(h, generated_at=datetime(2026, 1, 1, tzinfo=UTC))
    for text in ('data-arm="treatment"', 'data-arm="control"', "+55.0 s", "advance", "2026-01-01 00:00:00"):
        assert text in page
    charts = ("listening", "difference", "share", "love", "hate", "hate-gap")
    assert all(f'data-chart="{key}"' in page for key in charts)
    assert 'data-chart="latency"' not in page  # no serving numbers were recorded
    assert h.looks[-1].checks and 'class="checks"' in page  # the guardrails judged at the last look


def test_live_counters_are_the_latest_point(experiment_registry: FileRegistry) -> None:
    experiment = experiment_registry.rollout().experiments[0]
    stats = {
        "2.2|v2.2:treatment": {
            "users": 40,
            "plays": 160,
            "listen_ms": 40 * 700_000,
            "listen_s_sq": 40 * 700.0**2 + 39 * 90_000,
        },
        "2.1|v2.2:control": {
            "users": 38,
            "plays": 150,
            "listen_ms": 38 * 600_000,
            "listen_s_sq": 38 * 600.0**2 + 37 * 90_000,
        },
    }
    look = live_look(stats, experiment, datetime.now(UTC))
    assert look.action == "live" and look.arms["treatment"].users == 40
    assert look.listening is not None and look.listening.estimate == pytest.approx(100.0)
    page = render_report(history(experiment_registry.records().records, "v2.2"), live=look)
    assert "Now (counted since the start" in page and ">40<" in page


def counters(users: int, listen_s: float, sd: float = 300.0) -> dict[str, float]:
    """An arm's counters with ``users`` listening ``listen_s`` on average (spread ``sd``)."""
    return {
        "users": users,
        "plays": 4 * users,
        "listen_ms": users * listen_s * 1000,
        "listen_s_sq": users * listen_s**2 + (users - 1) * sd**2,
    }


def test_slices_show_a_launch_that_hurts_one_platform(experiment_registry: FileRegistry) -> None:
    stats = {
        "2.2|v2.2:treatment": counters(2000, 640.0),
        "2.1|v2.2:control": counters(2000, 600.0),
        "2.2|v2.2:treatment@platform=ios": counters(1000, 700.0),
        "2.1|v2.2:control@platform=ios": counters(1000, 560.0),
        "2.2|v2.2:treatment@platform=web": counters(1000, 520.0),
        "2.1|v2.2:control@platform=web": counters(1000, 640.0),
        "2.2|v2.2:treatment@country=DE": counters(1, 600.0),
        "2.2|other:treatment@platform=web": counters(500, 100.0),  # another experiment
    }
    slices = slice_differences(stats, "v2.2")
    assert list(slices) == ["country=DE", "platform=ios", "platform=web"]
    assert slices["platform=web"]["estimate"] == pytest.approx(-120.0) and slices["platform=web"]["high"] < 0
    assert slices["platform=ios"]["low"] > 0 and "estimate" not in slices["country=DE"]
    experiment = experiment_registry.rollout().experiments[0]
    look = live_look(stats, experiment, datetime.now(UTC))
    assert look.worse_slices() == ["platform=web"]
    page = render_report(history(experiment_registry.records().records, "v2.2"), live=look)
    assert (
        'data-slice="platform=web" class="bad"' in page
        and "lower in treatment, with confidence, on: platform=web" in page
    )
