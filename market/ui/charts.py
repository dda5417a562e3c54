"""Line charts as inline SVG, rendered on the server: no JavaScript, no CDN.

`line_chart` draws one or more series on shared axes. Every point is a `<circle>` carrying a
`<title>` (its tooltip and its accessible text); the chart itself is `role="img"` with a title
and a description, and both axes carry a label. Pure: strings in, a string out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Point", "Series", "line_chart", "nice_ticks"]


@dataclass(frozen=True)
class Point:
    """One value; `label` is what a reader hears or sees on hover."""

    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]


# Margins leave room for tick labels and the two axis titles; the left one grows with the
# widest y tick label (about 9 units per character at the largest tick font size).
_RIGHT, _TOP, _BOTTOM = 16, 16, 48
_CHAR_W, _Y_TITLE_W = 9.0, 40


# Values are charted within ±this: far beyond any metric, far below where float arithmetic
# on the range overflows (1.7e308 once made the tick step an int too large for a float).
_MAX_ABS = 1e15


def _bounded(value: float, default: float) -> float:
    if not math.isfinite(value):
        return default if not math.isinf(value) else math.copysign(_MAX_ABS, value)
    return min(max(value, -_MAX_ABS), _MAX_ABS)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.

    Bounds are clamped to ±1e15 (NaN counts as 0), so any input gives a handful of ticks.
    """
    lo, hi = _bounded(lo, 0.0), _bounded(hi, 0.0)
    if hi < lo:
        lo, hi = hi, lo
    if math.isclose(lo, hi):
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _fmt_tick(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.6g}"


@dataclass(frozen=True)
class _Frame:
    """Where the plot sits in the SVG and the data ranges it shows."""

    left: int
    plot_w: int
    plot_h: int
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float

    def sx(self, x: float) -> float:
        return self.left + (x - self.x_lo) / (self.x_hi - self.x_lo) * self.plot_w

    def sy(self, y: float) -> float:
        return _TOP + self.plot_h - (y - self.y_lo) / (self.y_hi - self.y_lo) * self.plot_h


def _x_range(
    points: Sequence[Point], x_ticks: Sequence[tuple[float, str]] | None
) -> tuple[float, float, Sequence[tuple[float, str]]]:
    """The padded x range and its ticks (every integer x, at most ten, unless given)."""
    xs = [p.x for p in points] or [1.0]
    x_lo, x_hi = min(xs), max(xs)
    if math.isclose(x_lo, x_hi):
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if x_ticks is None:
        step = max(1, math.ceil((x_hi - x_lo) / 10))
        x_ticks = [(float(v), str(v)) for v in range(math.ceil(x_lo), math.floor(x_hi) + 1, step)]
    # A little air on both sides so the first and last points are not cut by the axes.
    pad = (x_hi - x_lo) * 0.05
    return x_lo - pad, x_hi + pad, x_ticks


def _y_ticks(
    points: Sequence[Point],
    y_min: float | None,
    y_max: float | None,
    y_format: Callable[[float], str],
) -> list[tuple[float, str]]:
    """Round y ticks over the data (or the given bounds), each with its label."""
    ys = [p.y for p in points] or [0.0, 1.0]
    lo = min(ys) if y_min is None else y_min
    hi = max(ys) if y_max is None else y_max
    return [(t, y_format(t)) for t in nice_ticks(lo, hi)]


def _grid(
    frame: _Frame,
    y_ticks: Sequence[tuple[float, str]],
    x_ticks: Sequence[tuple[float, str]],
) -> list[str]:
    out = ['<g class="grid" aria-hidden="true">']
    left, plot_w = frame.left, frame.plot_w
    for t, text in y_ticks:
        y = frame.sy(t)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(text)}</text>"
        )
    for x, label in x_ticks:
        px = frame.sx(x)
        out.append(
            f'<text class="tick" x="{px:.1f}" y="{_TOP + frame.plot_h + 18}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    out.append("</g>")
    return out


def _axes(frame: _Frame, height: int, x_label: str, y_label: str) -> str:
    left, plot_w, plot_h = frame.left, frame.plot_w, frame.plot_h
    return (
        f'<g class="axes" aria-hidden="true">'
        f'<line x1="{left}" y1="{_TOP + plot_h}" x2="{left + plot_w}" y2="{_TOP + plot_h}"/>'
        f'<line x1="{left}" y1="{_TOP}" x2="{left}" y2="{_TOP + plot_h}"/>'
        f'<text class="axis-label x-label" x="{left + plot_w / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-label y-label" x="14" y="{_TOP + plot_h / 2:.1f}" '
        f'text-anchor="middle" transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})">'
        f"{escape(y_label)}</text></g>"
    )


def _series_marks(frame: _Frame, series: Sequence[Series]) -> list[str]:
    """Each series as a group: a polyline through its points, then one circle per point."""
    out = []
    for i, s in enumerate(series):
        out.append(f'<g class="series s{i}" data-series="{escape(s.name)}">')
        if len(s.points) > 1:
            path = " ".join(f"{frame.sx(p.x):.1f},{frame.sy(p.y):.1f}" for p in s.points)
            out.append(f'<polyline points="{path}" aria-hidden="true"/>')
        for p in s.points:
            out.append(
                f'<circle cx="{frame.sx(p.x):.1f}" cy="{frame.sy(p.y):.1f}" r="4">'
                f"<title>{escape(p.label)}</title></circle>"
            )
        out.append("</g>")
    return out


def line_chart(
    series: Sequence[Series],
    *,
    chart_id: str,
    title: str,
    description: str,
    x_label: str,
    y_label: str,
    y_min: float | None = None,
    y_max: float | None = None,
    y_format: Callable[[float], str] = _fmt_tick,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    width: int = 480,
    height: int = 280,
    empty_text: str = "No data yet",
) -> Markup:
    """An SVG line chart; `x_ticks` defaults to every integer x (rounds)."""
    # Non-finite and absurd values are drawn at the chart's bounds, never raise.
    series = [
        Series(s.name, [Point(p.x, _bounded(p.y, 0.0), p.label) for p in s.points]) for s in series
    ]
    points = [p for s in series for p in s.points]
    x_lo, x_hi, x_ticks = _x_range(points, x_ticks)
    y_ticks = _y_ticks(points, y_min, y_max, y_format)
    left = round(_Y_TITLE_W + _CHAR_W * max(len(text) for _, text in y_ticks))
    plot_w, plot_h = width - left - _RIGHT, height - _TOP - _BOTTOM
    frame = _Frame(left, plot_w, plot_h, x_lo, x_hi, y_ticks[0][0], y_ticks[-1][0])
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    out = [
        f'<svg class="chart" id="{escape(chart_id)}" data-chart="{escape(chart_id)}" '
        f'viewBox="0 0 {width} {height}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'aria-labelledby="{title_id} {desc_id}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<desc id="{desc_id}">{escape(description)}</desc>',
        *_grid(frame, y_ticks, x_ticks),
        _axes(frame, height, x_label, y_label),
    ]
    if not points:
        out.append(
            f'<text class="empty" x="{left + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}" '
            f'text-anchor="middle">{escape(empty_text)}</text>'
        )
    out += _series_marks(frame, series)
    out.append("</svg>")
    return Markup("".join(out))
