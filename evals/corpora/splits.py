"""Documents and how every corpus splits them: by a stable hash of the title, paragraphs never shared.

Calibration (pruning statistics), train (finetuning stages) and test (evaluation suites) share no
document, and a paragraph that occurs in documents of several splits is kept in one of them only,
so a pruned model is never scored on text it was calibrated or finetuned on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

# Split shares, in hash order; evaluation (test) and calibration never share a document.
SPLIT_SHARES: tuple[tuple[str, float], ...] = (("calibration", 0.4), ("train", 0.2), ("test", 0.4))
# A paragraph found in several splits stays only in the first of these (evaluation text is kept whole).
DEDUPE_PRIORITY: tuple[str, ...] = ("test", "calibration", "train")


@dataclass(frozen=True)
class Document:
    """A titled text: a glossary entry, a chapter section, a documented function."""

    title: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join((self.title, *self.paragraphs))


def split_of(title: str, shares: Sequence[tuple[str, float]] = SPLIT_SHARES) -> str:
    """The split a document belongs to, from a stable hash of its title (same on every machine)."""
    unit = int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in shares:
        edge += share
        if unit < edge:
            return name
    return shares[-1][0]


def split_documents(
    documents: Sequence[Document],
    shares: Sequence[tuple[str, float]] = SPLIT_SHARES,
    priority: Sequence[str] = DEDUPE_PRIORITY,
) -> dict[str, list[Document]]:
    """Documents by split; a paragraph present in several splits is kept only in the first by `priority`."""
    by_split: dict[str, list[Document]] = {name: [] for name, _ in shares}
    for document in documents:
        by_split[split_of(document.title, shares)].append(document)
    claimed: dict[str, str] = {}  # paragraph -> split that keeps it
    for name in priority:
        for document in by_split[name]:
            for paragraph in document.paragraphs:
                claimed.setdefault(paragraph, name)
    return {
        name: [
            Document(document.title, kept)
            for document in docs
            if (kept := tuple(p for p in document.paragraphs if claimed[p] == name))
        ]
        for name, docs in by_split.items()
    }
