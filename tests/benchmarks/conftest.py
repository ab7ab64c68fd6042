"""What the tests of benchmarks/ share: importing a script as the module it is when run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmark_script(monkeypatch):
    """`benchmark_script(name)` imports benchmarks/<name>.py, its siblings importable as when it is run."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module
