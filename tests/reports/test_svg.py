"""Hand-written SVG charts: round ticks, a known colour scale, escaped labels, well-formed XML."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from reports import svg


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0]),
        (0.2, 0.95, [0.2, 0.4, 0.6, 0.8, 1.0]),
        (12.0, 87.0, [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
        (0.5, 0.5, [0.2, 0.4, 0.6, 0.8]),  # a single value still gets an axis around it
    ],
)
def test_nice_ticks_cover_the_range_with_round_steps(low, high, expected):
    assert svg.nice_ticks(low, high) == pytest.approx(expected)


def test_viridis_ends_and_middle():
    assert (svg.viridis(0.0), svg.viridis(0.5), svg.viridis(1.0)) == ("#440154", "#21918c", "#fde725")
    assert svg.viridis(-3) == "#440154" and svg.viridis(7) == "#fde725"


def parse(chart: str) -> ElementTree.Element:
    return ElementTree.fromstring(chart)  # raises on malformed markup or unescaped text


def test_line_chart_draws_a_line_per_series_and_escapes_names():
    series = [
        svg.Series("wanda <&>", [svg.Point(0.5, 0.8, "a"), svg.Point(0.6, 0.6, 'b "q"')]),
        svg.Series("single", [svg.Point(0.5, 0.7, "only")]),
    ]
    chart = svg.line_chart(series, x_label="sparsity", y_label="retention", reference=1.0, reference_label="dense")
    root = parse(chart)
    assert len(root.findall("g/polyline")) == 1 and len(root.findall(".//circle")) == 3  # one point draws no line
    assert "wanda &lt;&amp;&gt;" in chart and "<&>" not in chart
    assert "dense" in chart and "http" not in chart


def test_bar_chart_has_a_bar_and_a_marker_per_block():
    bars = [svg.Bar("language", str(i), 0.4 + 0.1 * i, 0.41 + 0.1 * i, f"block {i}") for i in range(3)]
    root = parse(svg.bar_chart(bars, x_label="block", y_label="sparsity", reference=0.5, marker_label="achieved"))
    assert len(root.findall("rect")) == 3


def test_heatmap_colours_recorded_cells_only():
    values = [[None, 0.9, 0.2], [None, None, 0.5], [None, None, None]]
    root = parse(svg.heatmap(values, x_label="j", y_label="i", value_label="cos", tooltip=lambda i, j, v: f"{i},{j}"))
    cells = [rect for rect in root.findall("rect") if rect.find("title") is not None]
    assert sorted(rect.find("title").text for rect in cells) == ["0,1", "0,2", "1,2"]
    colours = {rect.find("title").text: rect.get("fill") for rect in cells}
    assert colours["0,1"] == svg.viridis(1.0) and colours["0,2"] == svg.viridis(0.0)  # scaled to the data's range


def test_forest_plot_draws_each_estimate_on_its_own_row_with_its_interval():
    rows = [svg.Estimate("first", "best", 0.99, 0.98, 1.0, "a"), svg.Estimate("second", "worse", 0.9, 0.85, 0.95, "b"),
            svg.Estimate("no interval", "worse", 0.8, None, None, "c")]  # fmt: skip
    root = parse(svg.forest_plot(rows, x_label="retention", reference=1.0, reference_label="dense"))
    dots = root.findall("circle")
    assert len(dots) == 3 and len(root.findall("path")) == 2  # whiskers only where there is an interval
    heights = [float(dot.get("cy")) for dot in dots]
    assert heights == sorted(heights) and len(set(heights)) == 3  # top to bottom in the given order
    xs = [float(dot.get("cx")) for dot in dots]
    assert xs[0] > xs[1] > xs[2]  # placed by value
    assert dots[0].get("fill") != dots[1].get("fill") == dots[2].get("fill")  # coloured by group
