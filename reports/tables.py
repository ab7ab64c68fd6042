"""Plain tables for terminals and markdown: number formats and column padding, shared by every report."""

from __future__ import annotations

import math
from collections.abc import Sequence

MISSING = "—"  # a cell with no value


def number(value: float) -> str:
    """Short and readable: 18.31 (perplexity), 0.457 (accuracy), 1,234 (a collapsed perplexity)."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def percent(fraction: float) -> str:
    return f"{fraction:.1%}"


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Lines of a markdown table whose columns are padded, so it also reads as a table in a terminal."""
    lines = [[cell.replace("|", "\\|") for cell in line] for line in (header, *body)]
    widths = _widths(lines)
    rule = [("-" * (width - 1) + ":") if is_right else (":" + "-" * (width - 1)) for width, is_right in zip(widths, right)]
    padded_header, *padded_body = [_pad(line, widths, right) for line in lines]
    return ["| " + " | ".join(cells) + " |" for cells in (padded_header, rule, *padded_body)]


def text_table(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Lines of plain aligned columns under a rule, no markdown punctuation."""
    lines = [list(header), *(list(line) for line in body)]
    widths = _widths(lines)
    padded_header, *padded_body = [_pad(line, widths, right) for line in lines]
    return ["  ".join(cells).rstrip() for cells in (padded_header, ["-" * width for width in widths], *padded_body)]


def _widths(lines: list[list[str]]) -> list[int]:
    return [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]


def _pad(cells: Sequence[str], widths: list[int], right: Sequence[bool]) -> list[str]:
    return [cell.rjust(width) if is_right else cell.ljust(width) for cell, width, is_right in zip(cells, widths, right)]
