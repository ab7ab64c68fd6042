"""Local text corpora, by name: each gives documents in disjoint `calibration`, `train` and `test` splits.

Calibration (pruning statistics), train (finetuning stages) and test (evaluation suites) share no
document and no paragraph, so a pruned model is never scored on text it was calibrated on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from evals.corpora.jargon import jargon_documents
from pruning.errors import SuiteError

SPLITS = ("calibration", "train", "test")

# name -> (split, cache_dir) -> document texts
CORPORA: dict[str, Callable[[str, Path], list[str]]] = {
    "jargon": jargon_documents,
}


def corpus_documents(name: str, split: str, cache_dir: Path) -> list[str]:
    """Document texts of one split of a registered corpus, in a fixed order."""
    if name not in CORPORA:
        raise SuiteError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    if split not in SPLITS:
        raise SuiteError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return CORPORA[name](split, Path(cache_dir))
