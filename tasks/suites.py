from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.imageqa.generator import build_imageqa
from evals.suites import build_suites
from tasks.common import STAGE


# Building suites and image data is file I/O (corpus reads, JSONL and image writes): retried on a
# transient failure (a full disk being cleared, a network filesystem hiccup), unlike compute stages.
@task(**STAGE, task_run_name="suites[{names}]", retries=2, retry_delay_seconds=5)
def eval_suites(names: list[str], workdir: str, cache_dir: str) -> str:
    """lm-eval task files (YAML + JSONL) for our local suites; returns the include path."""
    return str(build_suites(names, Path(workdir) / "suites", Path(cache_dir)))


@task(**STAGE, task_run_name="imageqa[data]", retries=2, retry_delay_seconds=5)
def imageqa_data(cache_dir: str) -> str:
    """The image-QA build (train / calibration / test splits and its lmms-eval task files); returns its folder."""
    return str(build_imageqa(Path(cache_dir)))
