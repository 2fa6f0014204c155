"""HTML for ``recsys report`` and the API's ``/dashboard``: tables and charts of experiments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from recsys.experiments.analysis import ArmMetrics, Difference, mean_interval
from recsys.experiments.report.charts import Series, line_chart
from recsys.experiments.report.history import ARMS, History, Look


@dataclass(frozen=True)
class Chart:
    """A titled SVG chart, ready for a page."""

    key: str
    svg: Markup


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("recsys.experiments.report"), autoescape=select_autoescape(default=True)
    )
    env.filters |= {"pct": lambda v, d=1: f"{v:.{d}%}", "num": lambda v, d=1: f"{v:,.{d}f}"}
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"
    return env


def render_report(history: History, *, live: Look | None = None, generated_at: datetime | None = None) -> str:
    """A self-contained HTML report of one experiment.

    Parameters
    ----------
    history : History
        From :func:`recsys.experiments.report.history.history`.
    live : Look, optional
        Numbers counted since the last decision (drawn as the latest point).
    generated_at : datetime, optional
        Shown in the footer (now by default).
    """
    looks = [*history.looks, *([live] if live else [])]
    return (
        _environment()
        .get_template("report.html")
        .render(
            h=history,
            looks=looks,
            latest=looks[-1] if looks else None,
            live=live,
            charts=experiment_charts(history, looks),
            generated_at=generated_at or datetime.now(UTC),
            arm_rows=arm_rows,
        )
    )


def render_dashboard(**context: Any) -> str:
    """The read-only dashboard page (see ``serving/routes/dashboard.py`` for the context)."""
    return (
        _environment()
        .get_template("dashboard.html")
        .render(
            **context, arm_rows=arm_rows, charts_of=lambda h, looks: experiment_charts(h, looks, brief=True)
        )
    )


def arm_rows(look: Look) -> list[dict[str, Any]]:
    """One table row per arm of ``look``, with the interval of its listening time."""
    rows = []
    for name in ARMS:
        arm = look.arms.get(name)
        if arm is not None:
            low, high = mean_interval(arm)
            rows.append({"name": name, "m": arm, "low": low, "high": high, **look.health.get(name, {})})
    return rows


def experiment_charts(history: History, looks: Sequence[Look], *, brief: bool = False) -> list[Chart]:
    """Listening per user with CI bands, the difference, the share, and the guardrails over time."""
    start = history.started or (looks[0].at if looks else datetime.now(UTC))

    def x(t: datetime) -> float:
        return max((t - start).total_seconds(), 0.0)

    charts = [
        Chart("listening", Markup(_listening(looks, x))),
        Chart("share", Markup(_share(history, looks, x))),
    ]
    if brief:
        return charts
    charts.insert(1, Chart("difference", Markup(_difference(looks, x))))
    charts += [
        Chart("love", Markup(_rate(looks, x, "love_rate", "love rate (loves per play)"))),
        Chart("hate", Markup(_rate(looks, x, "hate_rate", "hate rate (hates per play)"))),
        Chart("hate-gap", Markup(_hate_gap(looks, x))),
    ]
    if any(look.health for look in looks):
        charts.append(Chart("latency", Markup(_health(looks, x, "p99_ms", "p99 latency (ms)"))))
        charts.append(Chart("errors", Markup(_health(looks, x, "error_rate", "error rate"))))
    return charts


XFn = Callable[[datetime], float]


def _arm_series(looks: Sequence[Look], x: XFn, value: Callable[[ArmMetrics], float]) -> list[Series]:
    return [
        Series(arm, [(x(look.at), value(look.arms[arm])) for look in looks if arm in look.arms])
        for arm in ARMS
    ]


def _listening(looks: Sequence[Look], x: XFn) -> str:
    series = []
    for arm in ARMS:
        present = [look for look in looks if arm in look.arms and look.arms[arm].users > 0]
        series.append(
            Series(
                arm,
                [(x(look.at), look.arms[arm].listen_s_per_user) for look in present],
                band=[mean_interval(look.arms[arm]) for look in present],
            )
        )
    return line_chart(series, title="listening time per user, by arm (95% CI)", y_label="seconds per user")


def _difference(looks: Sequence[Look], x: XFn) -> str:
    series = []
    for name, of in (("always-valid", _sequential), ("difference", _fixed)):
        known = [(look, d) for look in looks if (d := of(look)) is not None]
        points = [(x(look.at), d.estimate) for look, d in known]
        series.append(Series(name, points, band=[(d.low, d.high) for _, d in known]))
    return line_chart(
        series, title="treatment - control, listening per user (95% CIs)", y_label="seconds", reference=0.0
    )


def _sequential(look: Look) -> Difference | None:
    return look.sequential


def _fixed(look: Look) -> Difference | None:
    return look.listening


def _share(history: History, looks: Sequence[Look], x: XFn) -> str:
    changes = sorted([(x(t), s) for t, s in history.shares] + [(x(look.at), look.share) for look in looks])
    return line_chart(
        [Series("treatment", changes, step=True)],
        title="rollout share of the treatment",
        y_label="share of users",
        y_format=lambda v: f"{v:.0%}",
        y_range=(0.0, 1.0),
    )


def _rate(looks: Sequence[Look], x: XFn, field: str, title: str) -> str:
    return line_chart(
        _arm_series(looks, x, lambda m: float(getattr(m, field))),
        title=title,
        y_label="per play",
        y_format=lambda v: f"{v:.3f}",
    )


def _hate_gap(looks: Sequence[Look], x: XFn) -> str:
    both = [look for look in looks if {"treatment", "control"} <= look.arms.keys()]
    gap = [(x(look.at), look.arms["treatment"].hate_rate - look.arms["control"].hate_rate) for look in both]
    return line_chart(
        [Series("difference", gap)],
        title="guardrail: hate rate, treatment - control",
        y_label="hates per play",
        reference=0.0,
        y_format=lambda v: f"{v:+.3f}",
    )


def _health(looks: Sequence[Look], x: XFn, key: str, title: str) -> str:
    series = []
    for arm in ARMS:
        known = [look for look in looks if key in look.health.get(arm, {})]
        series.append(Series(arm, [(x(look.at), look.health[arm][key]) for look in known]))
    return line_chart(series, title=f"guardrail: {title}", y_label=title, y_format=lambda v: f"{v:.3g}")
