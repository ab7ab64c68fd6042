"""Small SVG charts written by hand, to inline in the HTML report: a line chart, a bar chart, a
forest plot (estimates with intervals) and a heatmap. No plotting library: the page stays one self-contained file, a chart costs microseconds,
and every label is escaped here. Each element carries a <title>, which browsers show on hover.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Okabe-Ito (distinguishable with the common colour-vision deficiencies), its yellow swapped for a
# wine red that stays visible on white
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#882255")
DASHES = ("", "6 3", "2 3", "8 3 2 3")  # cycle after the palette, so a 9th line still differs
# viridis at five stops: perceptually even, dark = low
_VIRIDIS = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)), (1.0, (253, 231, 37)))
_FONT = 'font-size="12"'
_AXIS = "#444"
_GRID = "#e4e4e4"

Format = Callable[[float], str]


def percent_tick(value: float) -> str:
    return f"{value * 100:.4g}%"


def plain_tick(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tooltip: str


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]


@dataclass(frozen=True)
class Bar:
    group: str  # bars of a group share a colour and a legend entry (e.g. a modality)
    label: str  # under the bar
    height: float
    marker: float | None  # a second value drawn as a tick across the bar (e.g. achieved vs target)
    tooltip: str


@dataclass(frozen=True)
class Estimate:
    """One row of a forest plot: a point with its interval, coloured by group."""

    label: str  # left of the row
    group: str  # rows of a group share a colour and a legend entry (e.g. "tied with the best")
    value: float
    low: float | None  # no interval: the point alone
    high: float | None
    tooltip: str


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1.0), high + 0.5 * (abs(high) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in (1, 2, 2.5, 5, 10) if factor * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def line_chart(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    x_format: Format = percent_tick,
    y_format: Format = percent_tick,
    reference: float | None = None,
    reference_label: str = "",
    width: int = 760,
    height: int = 340,
) -> str:
    """Lines with point markers, a legend on the right, and an optional dashed horizontal reference."""
    xs = [point.x for line in series for point in line.points if math.isfinite(point.x)]
    ys = [point.y for line in series for point in line.points if math.isfinite(point.y)]
    if reference is not None:
        ys.append(reference)
    x_ticks = nice_ticks(min([0.0, *xs]), max(xs, default=1.0))
    y_low, y_high = min(ys, default=0.0), max(ys, default=1.0)
    y_ticks = nice_ticks(y_low, y_high)
    legend_width = 190
    plot = _Plot(left=58, top=14, width=width - 58 - legend_width - 12, height=height - 14 - 46,
                 x_range=(x_ticks[0], x_ticks[-1]), y_range=_padded(y_ticks, y_low, y_high))  # fmt: skip
    total_height = max(height, 14 + 18 * len(series) + 24)
    parts = [_open(width, total_height, f"{y_label} against {x_label}")]
    parts += plot.axes(x_ticks, y_ticks, x_format, y_format, x_label, y_label)
    if reference is not None:
        y = plot.y(reference)
        parts.append(f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.right}" y2="{y:.1f}" stroke="#888" '
                     f'stroke-dasharray="4 4"><title>{escape(reference_label)}</title></line>')  # fmt: skip
        if reference_label:
            parts.append(f'<text x="{plot.right - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#666" {_FONT}>'
                         f"{escape(reference_label)}</text>")  # fmt: skip
    for index, line in enumerate(series):
        colour, dash = _style(index)
        points = [point for point in line.points if math.isfinite(point.x) and math.isfinite(point.y)]
        path = " ".join(f"{plot.x(point.x):.1f},{plot.y(point.y):.1f}" for point in points)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g><title>{escape(line.name)}</title>')
        if len(points) > 1:
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dashes}/>')
        for point in points:
            parts.append(f'<circle cx="{plot.x(point.x):.1f}" cy="{plot.y(point.y):.1f}" r="3.5" fill="{colour}">'
                         f"<title>{escape(point.tooltip)}</title></circle>")  # fmt: skip
        parts.append("</g>")
    parts += _legend([(line.name, *_style(index)) for index, line in enumerate(series)], x=plot.right + 16, y=plot.top)
    return "".join(parts) + "</svg>"


def bar_chart(
    bars: Sequence[Bar],
    *,
    y_label: str,
    x_label: str,
    y_format: Format = percent_tick,
    reference: float | None = None,
    reference_label: str = "",
    marker_label: str = "",
    height: int = 240,
) -> str:
    """Vertical bars coloured by group, an optional marker tick per bar and a dashed reference line."""
    groups = list(dict.fromkeys(bar.group for bar in bars))
    colours = {group: PALETTE[index % len(PALETTE)] for index, group in enumerate(groups)}
    values = [bar.height for bar in bars] + [bar.marker for bar in bars if bar.marker is not None]
    if reference is not None:
        values.append(reference)
    y_ticks = nice_ticks(min(0.0, *values) if values else 0.0, max(values, default=1.0))
    slot = 12 if len(bars) > 24 else 20
    legend_width = 110
    plot_width = max(240, slot * len(bars))
    width = 58 + plot_width + 16 + legend_width
    plot = _Plot(left=58, top=14, width=plot_width, height=height - 14 - 46,
                 x_range=(0.0, float(len(bars))), y_range=(y_ticks[0], y_ticks[-1]))  # fmt: skip
    parts = [_open(width, height, f"{y_label} per {x_label}")]
    parts += plot.axes([], y_ticks, plain_tick, y_format, x_label, y_label)
    label_every = max(1, math.ceil(len(bars) / (plot_width / 22)))
    for index, bar in enumerate(bars):
        left, right = plot.x(index + 0.12), plot.x(index + 0.88)
        top, bottom = plot.y(max(bar.height, 0.0)), plot.y(min(bar.height, 0.0))
        parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}" '
                     f'fill="{colours[bar.group]}"><title>{escape(bar.tooltip)}</title></rect>')  # fmt: skip
        if bar.marker is not None:
            y = plot.y(bar.marker)
            parts.append(f'<line x1="{left - 1:.1f}" y1="{y:.1f}" x2="{right + 1:.1f}" y2="{y:.1f}" stroke="#111" '
                         f'stroke-width="2"><title>{escape(bar.tooltip)}</title></line>')  # fmt: skip
        if index % label_every == 0:
            parts.append(f'<text x="{plot.x(index + 0.5):.1f}" y="{plot.bottom + 14}" text-anchor="middle" '
                         f'font-size="10" fill="{_AXIS}">{escape(bar.label)}</text>')  # fmt: skip
    if reference is not None:
        y = plot.y(reference)
        parts.append(f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.right}" y2="{y:.1f}" stroke="#888" '
                     f'stroke-dasharray="4 4"><title>{escape(reference_label)}</title></line>')  # fmt: skip
    legend = [(group, colours[group], "") for group in groups]
    parts += _legend(legend, x=plot.right + 16, y=plot.top)
    extra_y = plot.top + 18 * len(legend)
    if marker_label:
        parts.append(f'<line x1="{plot.right + 16}" y1="{extra_y + 6}" x2="{plot.right + 32}" y2="{extra_y + 6}" '
                     f'stroke="#111" stroke-width="2"/><text x="{plot.right + 38}" y="{extra_y + 10}" {_FONT}>'
                     f"{escape(marker_label)}</text>")  # fmt: skip
        extra_y += 18
    if reference is not None and reference_label:
        parts.append(f'<line x1="{plot.right + 16}" y1="{extra_y + 6}" x2="{plot.right + 32}" y2="{extra_y + 6}" '
                     f'stroke="#888" stroke-dasharray="4 4"/><text x="{plot.right + 38}" y="{extra_y + 10}" {_FONT}>'
                     f"{escape(reference_label)}</text>")  # fmt: skip
    return "".join(parts) + "</svg>"


def forest_plot(
    rows: Sequence[Estimate],
    *,
    x_label: str,
    x_format: Format = percent_tick,
    reference: float | None = None,
    reference_label: str = "",
    group_colours: dict[str, str] | None = None,
) -> str:
    """One row per estimate, top to bottom: a dot at the value, a whisker over its interval, labels on the
    left, an optional dashed vertical reference (e.g. 100% = as good as dense)."""
    groups = list(dict.fromkeys(row.group for row in rows))
    colours = {group: PALETTE[index % len(PALETTE)] for index, group in enumerate(groups)} | (group_colours or {})
    values = [end for row in rows for end in (row.value, row.low, row.high) if end is not None and math.isfinite(end)]
    if reference is not None:
        values.append(reference)
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    ticks = nice_ticks(low, high)
    label_width = 8 + 6.5 * min(44, max((len(row.label) for row in rows), default=8))
    slot, plot_width, legend_width = 20, 340, 150
    plot = _Plot(left=label_width, top=10, width=plot_width, height=slot * max(1, len(rows)),
                 x_range=_padded(ticks, low, high), y_range=(0.0, float(max(1, len(rows)))))  # fmt: skip
    height = plot.bottom + 46
    parts = [_open(plot.right + 16 + legend_width, height, f"{x_label} per method")]
    parts += plot.axes(ticks, [], x_format, plain_tick, x_label, "")
    if reference is not None:
        x = plot.x(reference)
        parts.append(f'<line x1="{x:.1f}" y1="{plot.top}" x2="{x:.1f}" y2="{plot.bottom}" stroke="#888" '
                     f'stroke-dasharray="4 4"><title>{escape(reference_label)}</title></line>')  # fmt: skip
    for index, row in enumerate(rows):
        y, colour = plot.y(len(rows) - index - 0.5), colours[row.group]  # the first row on top
        shown = row.label if len(row.label) <= 44 else row.label[:43] + "…"
        parts.append(f'<text x="{plot.left - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(shown)}</text>')
        if row.low is not None and row.high is not None and math.isfinite(row.low) and math.isfinite(row.high):
            left, right = plot.x(row.low), plot.x(row.high)
            parts.append(f'<path d="M{left:.1f},{y:.1f}H{right:.1f}M{left:.1f},{y - 4:.1f}V{y + 4:.1f}M{right:.1f},'
                         f'{y - 4:.1f}V{y + 4:.1f}" stroke="{colour}" stroke-width="1.6" fill="none"/>')  # fmt: skip
        if math.isfinite(row.value):
            parts.append(f'<circle cx="{plot.x(row.value):.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                         f"<title>{escape(row.tooltip)}</title></circle>")  # fmt: skip
    legend = [(group, colours[group], "") for group in groups]
    parts += _legend(legend, x=plot.right + 16, y=plot.top)
    if reference is not None and reference_label:
        y = plot.top + 18 * len(legend)
        parts.append(f'<line x1="{plot.right + 16}" y1="{y + 6}" x2="{plot.right + 34}" y2="{y + 6}" stroke="#888" '
                     f'stroke-dasharray="4 4"/><text x="{plot.right + 40}" y="{y + 10}" {_FONT}>'
                     f"{escape(reference_label)}</text>")  # fmt: skip
    return "".join(parts) + "</svg>"


def heatmap(
    values: Sequence[Sequence[float | None]],
    *,
    x_label: str,
    y_label: str,
    value_label: str,
    tooltip: Callable[[int, int, float], str],
) -> str:
    """A square matrix as coloured cells (viridis, scaled to the data's range) with a colour bar;
    None cells are left empty. Row i is drawn top-down, column j left-right."""
    size = len(values)
    finite = [value for row in values for value in row if value is not None and math.isfinite(value)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    cell = max(6.0, min(22.0, 380 / max(size, 1)))
    left, top = 50, 12
    side = cell * size
    width = int(left + side + 90)
    height = int(top + side + 44)
    parts = [_open(width, height, f"{value_label}: {y_label} against {x_label}")]
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value is None or not math.isfinite(value):
                continue
            parts.append(f'<rect x="{left + j * cell:.1f}" y="{top + i * cell:.1f}" width="{cell + 0.3:.1f}" '
                         f'height="{cell + 0.3:.1f}" fill="{viridis(_unit(value, low, high))}">'
                         f"<title>{escape(tooltip(i, j, value))}</title></rect>")  # fmt: skip
    parts.append(f'<rect x="{left}" y="{top}" width="{side:.1f}" height="{side:.1f}" fill="none" stroke="{_AXIS}"/>')
    every = max(1, math.ceil(size / (side / 18)))
    for index in range(0, size, every):
        centre = index * cell + cell / 2
        parts.append(f'<text x="{left + centre:.1f}" y="{top + side + 13:.1f}" text-anchor="middle" font-size="10" '
                     f'fill="{_AXIS}">{index}</text>')  # fmt: skip
        parts.append(f'<text x="{left - 5}" y="{top + centre + 3.5:.1f}" text-anchor="end" font-size="10" '
                     f'fill="{_AXIS}">{index}</text>')  # fmt: skip
    parts.append(f'<text x="{left + side / 2:.1f}" y="{top + side + 32:.1f}" text-anchor="middle" {_FONT}>'
                 f"{escape(x_label)}</text>")  # fmt: skip
    parts.append(f'<text transform="translate(14 {top + side / 2:.1f}) rotate(-90)" text-anchor="middle" {_FONT}>'
                 f"{escape(y_label)}</text>")  # fmt: skip
    parts += _colour_bar(x=left + side + 16, y=top, height=side, low=low, high=high, label=value_label)
    return "".join(parts) + "</svg>"


def viridis(fraction: float) -> str:
    """The colour at `fraction` (0..1) of the viridis scale, as #rrggbb."""
    fraction = min(1.0, max(0.0, fraction))
    for (start, low), (end, high) in zip(_VIRIDIS, _VIRIDIS[1:]):
        if fraction <= end:
            t = (fraction - start) / (end - start)
            return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(low, high))
    return "#%02x%02x%02x" % _VIRIDIS[-1][1]


# -- shared pieces -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plot:
    left: float
    top: float
    width: float
    height: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def x(self, value: float) -> float:
        return self.left + _unit(value, *self.x_range) * self.width

    def y(self, value: float) -> float:
        return self.bottom - _unit(value, *self.y_range) * self.height

    def axes(self, x_ticks, y_ticks, x_format: Format, y_format: Format, x_label: str, y_label: str) -> list[str]:
        parts = []
        for tick in y_ticks:
            y = self.y(tick)
            parts.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}" stroke="{_GRID}"/>')
            parts.append(f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                         f'fill="{_AXIS}">{escape(y_format(tick))}</text>')  # fmt: skip
        for tick in x_ticks:
            x = self.x(tick)
            parts.append(f'<line x1="{x:.1f}" y1="{self.top}" x2="{x:.1f}" y2="{self.bottom}" stroke="{_GRID}"/>')
            parts.append(f'<text x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle" font-size="11" '
                         f'fill="{_AXIS}">{escape(x_format(tick))}</text>')  # fmt: skip
        parts.append(f'<polyline points="{self.left},{self.top} {self.left},{self.bottom} {self.right},{self.bottom}" '
                     f'fill="none" stroke="{_AXIS}"/>')  # fmt: skip
        parts.append(f'<text x="{self.left + self.width / 2:.1f}" y="{self.bottom + 36}" text-anchor="middle" {_FONT}>'
                     f"{escape(x_label)}</text>")  # fmt: skip
        parts.append(f'<text transform="translate(14 {self.top + self.height / 2:.1f}) rotate(-90)" '
                     f'text-anchor="middle" {_FONT}>{escape(y_label)}</text>')  # fmt: skip
        return parts


def _open(width: float, height: float, label: str) -> str:
    # no xmlns: inline SVG in HTML needs none, and the page then names no external address at all
    return (f'<svg class="chart" width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'role="img" aria-label="{escape(label)}">')  # fmt: skip


def _style(index: int) -> tuple[str, str]:
    return PALETTE[index % len(PALETTE)], DASHES[(index // len(PALETTE)) % len(DASHES)]


def _legend(entries: Sequence[tuple[str, str, str]], *, x: float, y: float) -> list[str]:
    parts = []
    for index, (name, colour, dash) in enumerate(entries):
        row = y + 18 * index
        shown = name if len(name) <= 26 else name[:25] + "…"
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g><title>{escape(name)}</title><line x1="{x}" y1="{row + 6}" x2="{x + 18}" y2="{row + 6}" '
                     f'stroke="{colour}" stroke-width="3"{dashes}/><text x="{x + 24}" y="{row + 10}" {_FONT}>'
                     f"{escape(shown)}</text></g>")  # fmt: skip
    return parts


def _colour_bar(*, x: float, y: float, height: float, low: float, high: float, label: str) -> list[str]:
    steps = 24
    parts = []
    for step in range(steps):
        fraction = 1 - step / (steps - 1)
        parts.append(f'<rect x="{x}" y="{y + step * height / steps:.1f}" width="12" height="{height / steps + 0.5:.1f}" '
                     f'fill="{viridis(fraction)}"/>')  # fmt: skip
    parts.append(f'<text x="{x + 16}" y="{y + 10}" font-size="11">{high:.3f}</text>')
    parts.append(f'<text x="{x + 16}" y="{y + height:.1f}" font-size="11">{low:.3f}</text>')
    parts.append(f'<text x="{x + 16}" y="{y + height / 2 + 4:.1f}" font-size="11" fill="#666">{escape(label)}</text>')
    return parts


def _padded(ticks: Sequence[float], low: float, high: float, margin: float = 0.03) -> tuple[float, float]:
    """The ticks' range, widened a little where data sits on its ends so points do not touch the frame."""
    pad = (ticks[-1] - ticks[0]) * margin
    return min(ticks[0], low - pad), max(ticks[-1], high + pad)


def _unit(value: float, low: float, high: float) -> float:
    return 0.5 if high - low < 1e-12 else (value - low) / (high - low)
