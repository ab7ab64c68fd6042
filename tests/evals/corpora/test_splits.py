"""Splitting a corpus: a stable hash of the title, a shared paragraph kept in one split only."""

from __future__ import annotations

import pytest

from evals.corpora import SPLITS, corpus_documents
from evals.corpora.splits import SPLIT_SHARES, Document, split_documents, split_of


def test_document_text_is_title_then_paragraphs():
    document = Document("kluge: n.", ("First.", "Second."))
    assert document.text == "kluge: n.\n\nFirst.\n\nSecond."


def test_split_of_is_a_stable_hash_of_the_title():
    # sha256 of the title: the same on every machine and Python (no PYTHONHASHSEED dependence)
    assert [split_of(t) for t in ("kluge: n.", "hack: n.", "entry 0")] == ["test", "calibration", "train"]


def test_a_paragraph_in_several_splits_stays_only_in_test():
    titles = {}
    for index in range(200):
        titles.setdefault(split_of(f"entry {index}"), f"entry {index}")
    shared = "A paragraph that two entries repeat word for word."
    documents = [Document(titles[name], (shared, f"Own text of {name}.")) for name in SPLITS]
    splits = split_documents(documents)
    assert [p for d in splits["test"] for p in d.paragraphs] == [shared, "Own text of test."]
    assert [p for d in splits["calibration"] for p in d.paragraphs] == ["Own text of calibration."]
    assert [p for d in splits["train"] for p in d.paragraphs] == ["Own text of train."]


@pytest.mark.parametrize("corpus, min_words, tolerance", [("jargon", 200_000, 0.06), ("docstrings", 150_000, 0.08)])
def test_real_corpus_splits_have_their_shares_and_are_disjoint_in_documents_and_text(corpus, min_words, tolerance, cache_dir):
    splits = {split: corpus_documents(corpus, split, cache_dir) for split in SPLITS}
    words = {split: sum(len(text.split()) for text in docs) for split, docs in splits.items()}
    assert sum(words.values()) > min_words
    for split, share in SPLIT_SHARES:
        assert words[split] / sum(words.values()) == pytest.approx(share, abs=tolerance)
    titles = {split: {text.split("\n\n", 1)[0] for text in docs} for split, docs in splits.items()}
    paragraphs = {split: {p for text in docs for p in text.split("\n\n")[1:]} for split, docs in splits.items()}
    for one, other in [("calibration", "test"), ("calibration", "train"), ("train", "test")]:
        assert not titles[one] & titles[other]
        assert not paragraphs[one] & paragraphs[other]
