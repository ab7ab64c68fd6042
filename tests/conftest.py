"""Shared fixtures. The packaged model and the corpus are cached under <repo>/.prunebench/cache,
the same place real runs use, so each is prepared once per machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".prunebench" / "cache"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs two pytest workers (pytest-xdist) on CI's two cores: each worker, and every process its
# tests start, computes on one thread (set before torch is imported), so the two never fight over a core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


@pytest.fixture(scope="session")
def smollm2_checkpoint(cache_dir: Path) -> Path:
    from pruning.models.sources import materialize_packaged

    return materialize_packaged("smollm2-135m", cache_dir / "models")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """`tmp_path_factory.mktemp` for a module's shared work, removed once the module's tests are done
    unless one of them failed. Pytest keeps every directory until the session ends; the flow tests
    write gigabytes of checkpoints (the smoke run alone 1.6 GB) and CI's disk is small."""
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
