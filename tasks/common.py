"""What every task shares: its cache policy, the code fingerprint, and how it stamps its cost."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.runtime import flow_run

from evals.measure import ResourceUsage
from tasks.artifacts import StageUsage

# TASK_SOURCE only sees the task function's own text; every cached task also takes `code`, the
# fingerprint of the algorithm packages, so that editing a kernel invalidates what it produced.
CACHED = INPUTS + TASK_SOURCE
PACKAGES = ("pruning", "evals")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over the source of the packages whose code decides what a stage produces."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def stamp(usage: ResourceUsage) -> StageUsage:
    """The measured cost, tagged with the flow run that paid it (so cache hits can be told apart)."""
    return StageUsage(
        wall_s=round(usage.wall_s, 3),
        peak_rss_gb=round(usage.peak_rss_gb, 3),
        peak_gpu_gb=None if usage.peak_gpu_gb is None else round(usage.peak_gpu_gb, 3),
        computed_by=flow_run.get_id(),
    )


def checkpoint_slug(label: str) -> str:
    """A method label as a directory name: `wanda 2:4 +ft` -> `wanda-2of4-+ft`, `interlace[random, train-all] 25%` -> `interlacerandom-train-all-25pct`."""
    return label.replace(" ", "-").replace(":", "of").replace("%", "pct").replace("[", "").replace("]", "").replace(",", "")
