"""Local text corpora, by name: each gives documents in disjoint `calibration`, `train` and `test` splits.

Calibration (pruning statistics), train (finetuning stages) and test (evaluation suites) share no
document and no paragraph, so a pruned model is never scored on text it was calibrated on
(`evals.corpora.splits`, the same rule for every corpus).

- `jargon`: the Jargon File 4.4.7 (public domain), one document per glossary entry or section;
- `docstrings`: the prose of the docstrings of NetworkX, NLTK and SymPy as installed from
  requirements.lock (BSD-3-Clause, Apache-2.0, BSD-3-Clause), one document per documented name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from evals.corpora.docstrings import docstring_documents
from evals.corpora.jargon import jargon_documents
from pruning.errors import SuiteError

SPLITS = ("calibration", "train", "test")

# name -> (split, cache_dir) -> document texts
CORPORA: dict[str, Callable[[str, Path], list[str]]] = {
    "jargon": jargon_documents,
    "docstrings": docstring_documents,
}


def corpus_documents(name: str, split: str, cache_dir: Path) -> list[str]:
    """Document texts of one split of a registered corpus, in a fixed order."""
    if name not in CORPORA:
        raise SuiteError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))}")
    if split not in SPLITS:
        raise SuiteError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return CORPORA[name](split, Path(cache_dir))
