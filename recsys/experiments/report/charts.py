"""Small, dependency-free SVG line charts with confidence bands, for reports and the dashboard.

Plain SVG keeps a report one self-contained file that opens anywhere, offline, and lets
the API draw the same charts without a plotting stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 38
COLORS = {
    "treatment": "#0072B2",
    "control": "#E69F00",
    "holdout": "#009E73",
    "difference": "#CC79A7",
    "always-valid": "#999999",
}
"""Arm colours (the Okabe-Ito palette, readable with colour blindness)."""
DEFAULT_COLOR = "#555555"


@dataclass(frozen=True)
class Series:
    """One line: ``(x, y)`` points with x in seconds since the chart's start."""

    name: str
    points: Sequence[tuple[float, float]]
    band: Sequence[tuple[float, float]] | None = None
    """``(low, high)`` for each point: drawn as a shaded band (a confidence interval)."""
    step: bool = False
    """Hold each value until the next point (a share that changes in steps)."""

    @property
    def color(self) -> str:
        return COLORS.get(self.name, DEFAULT_COLOR)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    y_label: str,
    reference: float | None = None,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    y_range: tuple[float, float] | None = None,
) -> str:
    """An SVG line chart of ``series`` against elapsed time.

    Parameters
    ----------
    series : sequence of Series
        Lines to draw; empty series are left out.
    title, y_label : str
        Shown above the plot and along its y axis.
    reference : float, optional
        A dashed horizontal line (zero difference, a guardrail limit).
    y_format : callable
        Formats the y axis tick labels.
    y_range : tuple of float, optional
        Fixed y axis limits (otherwise the data's, padded).
    """
    drawn = [s for s in series if s.points]
    xs = [x for s in drawn for x, _ in s.points] or [0.0]
    ys = [y for s in drawn for _, y in s.points] + [v for s in drawn for pair in s.band or () for v in pair]
    ys = [y for y in ys if math.isfinite(y)] + ([reference] if reference is not None else [])
    x_max = max(max(xs), 1.0)
    y_lo, y_hi = y_range or _padded(min(ys or [0.0]), max(ys or [1.0]))

    def sx(x: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * x / x_max

    def sy(y: float) -> float:
        if not math.isfinite(y):  # an unbounded interval (too few users yet) reaches the edge
            y = y_hi if y > 0 else y_lo
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - (y - y_lo) / (y_hi - y_lo))

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>',
        *_axes(sx, sy, x_max, y_lo, y_hi, y_label, y_format),
    ]
    if reference is not None:
        y = sy(reference)
        parts.append(f'<line class="reference" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
    for s in drawn:
        parts += _series(s, sx, sy, y_format)
    parts += _legend(drawn)
    parts.append("</svg>")
    return "\n".join(parts)


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (1, 2, 2.5 or 5 times a power of ten apart)."""
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def elapsed(seconds: float) -> str:
    """``95`` -> ``1m35s``: tick labels of elapsed time."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m" + (f"{seconds % 60:02d}s" if seconds % 60 else "")
    if seconds < 86400:
        return f"{seconds // 3600}h" + (f"{seconds % 3600 // 60:02d}m" if seconds % 3600 // 60 else "")
    return f"{seconds // 86400}d" + (f"{seconds % 86400 // 3600}h" if seconds % 86400 // 3600 else "")


def _axes(
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    x_max: float,
    y_lo: float,
    y_hi: float,
    y_label: str,
    y_format: Callable[[float], str],
) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    parts = [f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{right - LEFT}" height="{bottom - TOP}"/>']
    for y in nice_ticks(y_lo, y_hi):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>')
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{escape(y_format(y))}</text>"
        )
    for x in nice_ticks(0.0, x_max):
        parts.append(
            f'<text class="tick" x="{sx(x):.1f}" y="{bottom + 16}" text-anchor="middle">{elapsed(x)}</text>'
        )
    parts.append(
        f'<text class="axis" x="{(LEFT + right) / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">'
        "time since the experiment started</text>"
    )
    parts.append(
        f'<text class="axis" transform="translate(14 {(TOP + bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return parts


def _series(
    s: Series, sx: Callable[[float], float], sy: Callable[[float], float], fmt: Callable[[float], str]
) -> list[str]:
    points = [(sx(x), sy(y)) for x, y in s.points]
    if s.step:
        stepped = [points[0]]
        for x, y in points[1:]:
            stepped += [(x, stepped[-1][1]), (x, y)]
        points = stepped
    parts = []
    if s.band:
        upper = [(sx(x), sy(hi)) for (x, _), (_, hi) in zip(s.points, s.band, strict=True)]
        lower = [(sx(x), sy(lo)) for (x, _), (lo, _) in zip(s.points, s.band, strict=True)]
        outline = " ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower[::-1])
        parts.append(f'<polygon class="band" fill="{s.color}" points="{outline}"/>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))
    parts.append(f'<path class="line" stroke="{s.color}" d="{path}" data-series="{escape(s.name)}"/>')
    for x, y in s.points:
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.color}">'
            f"<title>{escape(s.name)}: {escape(fmt(y))} at {elapsed(x)}</title></circle>"
        )
    return parts


def _legend(series: Sequence[Series]) -> list[str]:
    parts, x = [], WIDTH - RIGHT
    for s in reversed(series):
        x -= 14 + 7 * len(s.name)
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{s.color}"/>')
        parts.append(f'<text class="legend" x="{x + 14}" y="17">{escape(s.name)}</text>')
    return parts
