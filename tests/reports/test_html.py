"""The HTML report: every section with data, nothing fetched from anywhere, text escaped, and a page
that headless Chromium renders into a non-blank screenshot."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from reports.html import to_html
from reports.sections import report_sections
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle

SECTION_IDS = ("leaderboard", "retention-vs-sparsity", "retention-vs-drop-ratio", "allocation", "redundancy", "speed-memory")
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source"}
SVG_LEAVES = {"line", "polyline", "rect", "circle", "path"}  # may be self-closed


class PageParser(HTMLParser):
    """Collects ids, every src/href/xlink:href, and checks that elements nest and close."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name == "id":
                self.ids.append(value)
            if name in ("src", "href", "xlink:href", "action", "poster", "data"):
                self.links.append(value or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def parsed(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def page(synthetic_store) -> str:
    return to_html(report_sections(synthetic_store, generated_at=datetime(2025, 3, 2, tzinfo=timezone.utc)),
                   source=str(synthetic_store.path))  # fmt: skip


def test_every_section_with_data_is_there(page):
    parser = parsed(page)
    assert parser.errors == [] and parser.stack == []
    assert [anchor for anchor in parser.ids if anchor in SECTION_IDS] == list(SECTION_IDS)
    assert page.count("<svg") == 2 + 1 + 5 + 2  # sparsity curves per model, drop-ratio curves, allocations, heatmaps
    for text in ("smollm2-135m", "toy-vlm", "owl+wanda 60%", "interlace", "cos_mean", "mean retention", "12.50 s"):
        assert text in page, text


def test_the_page_is_self_contained(page):
    parser = parsed(page)
    assert all(link.startswith("#") for link in parser.links), parser.links  # in-page anchors only
    assert not parser.tags & {"script", "link", "img", "iframe", "object", "embed"}
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered and "url(" not in lowered and "@import" not in lowered
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page and "<style>" in page


def test_sections_without_data_are_left_out(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    store.record(synthetic_bundle("dense", "dense", "dense"))
    store.record(synthetic_bundle("wanda", "wanda", "wanda 50%", sparsity=0.5, quality=0.8))
    ids = parsed(to_html(report_sections(store))).ids
    assert [anchor for anchor in ids if anchor in SECTION_IDS] == ["leaderboard", "retention-vs-sparsity", "speed-memory"]
    empty = to_html(report_sections(ResultStore(tmp_path / "none.duckdb")))
    assert "No results recorded" in empty and not set(parsed(empty).ids) & set(SECTION_IDS)


def test_text_from_the_database_is_escaped(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    evil = "<script>alert(1)</script>"
    store.record(synthetic_bundle("dense", "dense", "dense", model=evil))
    store.record(synthetic_bundle("odd", "owl", 'owl "&" <u>50%</u>', model=evil, sparsity=0.5, quality=0.7,
                                  allocation=[0.4, 0.6], redundancy_layers=3))  # fmt: skip
    page = to_html(report_sections(store), source="<db>")
    assert evil not in page and "<u>" not in page and "<db>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&quot;&amp;&quot;" in page
    parser = parsed(page)
    assert parser.errors == [] and "script" not in parser.tags and "u" not in parser.tags


# -- rendered by a real browser ----------------------------------------------------------------


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def test_headless_chromium_renders_a_non_blank_page(page, tmp_path):
    from PIL import Image

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; `make test` installs it when root)")
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    screenshot = tmp_path / "report.png"
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}",
        "--window-size=1280,2000", report.as_uri(),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), f"no screenshot (exit {finished.returncode}): {finished.stderr[-2000:]}"
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    background_share = max(count for count, _ in colours) / (image.width * image.height)
    assert len(colours) > 100 and background_share < 0.9  # plenty drawn on the page, not one flat colour
    pixels = [colour for _, colour in colours]
    assert (0x1F, 0x3A, 0x5F) in pixels  # the header's inline CSS applied
    assert (0x00, 0x72, 0xB2) in pixels  # the first chart line drawn (inline SVG rendered)


def test_the_report_stack_imports_no_torch():
    import sys

    code = ("import sys, flows.cli, reports.html, reports.markdown, reports.regressions, reports.runs, reports.sections; "
            "flows.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr[-1000:]
