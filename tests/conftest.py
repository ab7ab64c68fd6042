"""Shared fixtures. The packaged model and the corpus are cached under <repo>/.prunebench/cache,
the same place real runs use, so each is prepared once per machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".prunebench" / "cache"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


@pytest.fixture(scope="session")
def smollm2_checkpoint(cache_dir: Path) -> Path:
    from pruning.models.sources import materialize_packaged

    return materialize_packaged("smollm2-135m", cache_dir / "models")
