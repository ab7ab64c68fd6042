"""Registry of the local evaluation suites and the one call that writes their lm-eval task files.

A local suite is built from data on this machine (no hub); `build_suites` writes its JSONL + YAML
into one directory that lm-eval reads as `include_path`. Names that are not local are standard
lm-eval tasks and are resolved by `evals.lm_eval_bridge`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from evals.corpora import corpus_documents
from evals.suites.text import TEXT_SUITES, TEXT_TAG, TextSuite, write_suite
from pruning.errors import SuiteError

SUITES: dict[str, TextSuite] = {suite.name: suite for suite in TEXT_SUITES}
# Tags name several suites at once (also usable as `--tasks` with the lm-eval CLI on the directory).
SUITE_TAGS: dict[str, tuple[str, ...]] = {TEXT_TAG: tuple(suite.name for suite in TEXT_SUITES)}
LOCAL_SUITES: frozenset[str] = frozenset(SUITES) | frozenset(SUITE_TAGS)
# Image-QA suites: lmms-eval tasks written by `evals.imageqa` (evaluated through evals.lmms_eval_bridge).
IMAGE_SUITES: frozenset[str] = frozenset({"imageqa_mc", "imageqa_short", "prunebench_imageqa"})
# Every tag, text and image-QA (as evals.imageqa.tasks writes it), with the suites it stands for.
TAG_MEMBERS: dict[str, tuple[str, ...]] = {**SUITE_TAGS, "prunebench_imageqa": ("imageqa_mc", "imageqa_short")}
# Calibration corpora of image-question-answer pairs, for multimodal models.
IMAGE_CORPORA: frozenset[str] = frozenset({"imageqa"})


def local_suite_names() -> list[str]:
    """Every local suite name: text suites, then tags, then the image-QA suites."""
    return sorted(SUITES) + sorted(SUITE_TAGS) + sorted(IMAGE_SUITES)


def expand_suites(names: Iterable[str], tags: dict[str, tuple[str, ...]] = SUITE_TAGS) -> list[str]:
    """Tags replaced by their suites, first occurrence kept, order preserved; other names untouched.
    `tags`: the text tags (what lm-eval reads from the built directory), or `TAG_MEMBERS` for all."""
    expanded: list[str] = []
    for name in names:
        for member in tags.get(name, (name,)):
            if member not in expanded:
                expanded.append(member)
    return expanded


def build_suites(names: Iterable[str], out_dir: Path, cache_dir: Path) -> Path:
    """Write the task files of the requested local suites into `out_dir`; return it (lm-eval's include_path).

    Non-local names are ignored here (they are lm-eval's own tasks). Files are deterministic, so
    rebuilding gives identical bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents_of: dict[str, list[str]] = {}

    def test_split(corpus: str) -> list[str]:
        if corpus not in documents_of:
            documents_of[corpus] = corpus_documents(corpus, "test", Path(cache_dir))
        return documents_of[corpus]

    for name in expand_suites(names):
        suite = SUITES.get(name)
        if suite is not None:
            write_suite(suite, [test_split(corpus) for corpus in suite.corpora], out_dir, Path(cache_dir) / "datasets")
    return out_dir


def suite_config_path(name: str, suites_dir: Path) -> Path:
    """Where `build_suites` puts a local suite's YAML."""
    if name not in SUITES:
        raise SuiteError(f"{name!r} is not a local suite; local suites: {', '.join(local_suite_names())}")
    return Path(suites_dir) / f"{name}.yaml"
