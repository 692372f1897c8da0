"""Charts rendered on the server as inline SVG (pure functions: data in, markup out).

No JavaScript library and nothing fetched at run time; colours come from CSS
classes in ``static/dashboard.css`` so the charts follow the page's theme.
Every label is escaped.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None leaves a gap
    css_class: str = "s0"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    css_class: str = "bar"
    note: str = ""  # shown after the value, e.g. "of 1000"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value < high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:.3g}k"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def time_label(seconds: float, span_s: float = 3600.0) -> str:
    """UTC clock time; with seconds when the axis spans less than ten minutes."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S" if span_s < 600 else "%H:%M")


def line_chart(series: Sequence[Series], title: str, unit: str = "", width: int = 640, height: int = 200,
               time_axis: bool = True) -> Markup:
    """A line chart of one or more series sharing the axes; an empty chart says "no data"."""
    left, right, top, bottom = 52, 28, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<text class="chart-title" x="{left}" y="15">{escape(title)}</text>']
    if not xs:
        parts.append(f'<text class="chart-empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
        return Markup("".join(parts) + "</svg>")
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    ticks = nice_ticks(min(0.0, min(ys)), max(ys))
    y_low, y_high = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    for tick in ticks:
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}"/>'
                     f'<text class="axis" x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">'
                     f'{escape(format_number(tick) + unit)}</text>')
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = x_low + (x_high - x_low) * fraction
        label = time_label(x, x_high - x_low) if time_axis else format_number(x)
        parts.append(f'<text class="axis" x="{px(x):.1f}" y="{height - 8}" text-anchor="{anchor}">'
                     f'{escape(label)}</text>')
    for index, one in enumerate(series):
        segments: list[list[str]] = [[]]
        for x, y in one.points:
            if y is None:
                segments.append([])
            else:
                segments[-1].append(f"{px(x):.1f},{py(y):.1f}")
        for segment in segments:
            if len(segment) > 1:
                parts.append(f'<polyline class="line {escape(one.css_class)}" points="{" ".join(segment)}"/>')
            elif segment:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle class="dot {escape(one.css_class)}" cx="{cx}" cy="{cy}" r="2.5"/>')
        parts.append(f'<text class="legend {escape(one.css_class)}" x="{left + plot_w - 4 - 120 * index}" '
                     f'y="15" text-anchor="end">{escape(one.name)}</text>')
    return Markup("".join(parts) + "</svg>")


def bar_chart(bars: Sequence[Bar], title: str, width: int = 420, unit: str = "",
              max_value: float | None = None, value_format: Callable[[float], str] = format_number) -> Markup:
    """Horizontal bars, one row per item, longest value (or ``max_value``) spanning the width."""
    row, label_w, value_w, top = 22, 150, 90, 24
    height = top + row * max(len(bars), 1) + 6
    bar_w = width - label_w - value_w
    scale = max_value if max_value else max((bar.value for bar in bars), default=0) or 1
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<text class="chart-title" x="0" y="15">{escape(title)}</text>']
    if not bars:
        parts.append(f'<text class="chart-empty" x="0" y="{top + 14}">no data</text>')
    for index, bar in enumerate(bars):
        y = top + index * row
        length = max(0.0, min(1.0, bar.value / scale)) * bar_w
        value = escape(value_format(bar.value) + unit + (f" {bar.note}" if bar.note else ""))
        parts.append(f'<text class="axis" x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
                     f'{escape(bar.label[:24])}</text>'
                     f'<rect class="{escape(bar.css_class)}" x="{label_w}" y="{y + 3}" width="{length:.1f}" '
                     f'height="{row - 8}" rx="2"><title>{escape(bar.label)}: {value}</title></rect>'
                     f'<text class="axis" x="{label_w + length + 4:.1f}" y="{y + 14}">{value}</text>')
    return Markup("".join(parts) + "</svg>")


def stacked_bar(segments: Sequence[Bar], title: str, width: int = 640, height: int = 18) -> Markup:
    """One bar split into segments by value (e.g. devices per deployment state)."""
    total = sum(max(0.0, segment.value) for segment in segments)
    parts = [f'<svg class="chart stacked" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<rect class="track" x="0" y="0" width="{width}" height="{height}" rx="3"/>']
    x = 0.0
    for segment in segments:
        if segment.value <= 0 or total <= 0:
            continue
        length = segment.value / total * width
        parts.append(f'<rect class="{escape(segment.css_class)}" x="{x:.1f}" y="0" width="{length:.1f}" '
                     f'height="{height}"><title>{escape(segment.label)}: {format_number(segment.value)}'
                     f'</title></rect>')
        x += length
    return Markup("".join(parts) + "</svg>")
