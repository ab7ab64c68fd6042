"""The docstrings corpus: prose kept and everything else left out on hand-made docstrings, names in
source order, and the split of the real corpus (the locked NetworkX, NLTK and SymPy)."""

from __future__ import annotations

import importlib.metadata

import pytest

from evals.corpora import SPLITS, corpus_documents
from evals.corpora.docstrings import READS_PACKAGES, documents_of_sources, module_docstrings, package_root, prose_paragraphs
from evals.corpora.splits import Document
from flows.environment import read_lock
from pruning.errors import SuiteError

NUMPYDOC = '''Return the nodes of the largest clique.

A *clique* is a subset of nodes in which each pair of nodes is adjacent. See :func:`~networkx.algorithms.cliques`
and :class:`the graph class <networkx.Graph>` for the ``G`` argument [1]_.

Parameters
----------
G : NetworkX graph
    An undirected graph.

Returns
-------
list
    The nodes.

Notes
-----
This function is a heuristic: it is fast on sparse graphs.

The bound is $O(n^2)$ in the worst case.

Examples
--------
>>> find_largest_clique(G)
[1, 2]

References
----------
.. [1] A paper, 1999.
'''

SPHINX = '''Read the corpus files and return their words.

The reader caches what it has read, so a second call costs nothing.
:param fileids: which files to read, by default every file of the corpus.
:type fileids: list(str)

For example::

    words = reader.words()

Some steps:

- strip the markup
- split the words

Args:
    path: where it is.
'''


def test_numpydoc_prose_is_kept_and_the_rest_left_out():
    assert prose_paragraphs(NUMPYDOC) == [
        "Return the nodes of the largest clique.",
        "A clique is a subset of nodes in which each pair of nodes is adjacent. See cliques "
        "and the graph class for the G argument.",
        "This function is a heuristic: it is fast on sparse graphs.",
    ]


def test_field_lists_literal_blocks_lists_and_google_sections_are_left_out():
    assert prose_paragraphs(SPHINX) == [
        "Read the corpus files and return their words.",
        "The reader caches what it has read, so a second call costs nothing.",
    ]


def test_sympy_explanation_sections_are_prose():
    docstring = (
        "Integrate f over x.\n\nExplanation\n===========\n\nThe integral is computed by the Risch algorithm when it applies.\n\n"
        "See Also\n========\n\ndiff, the derivative of an expression.\n"
    )
    assert prose_paragraphs(docstring) == ["Integrate f over x.", "The integral is computed by the Risch algorithm when it applies."]


SOURCE = '''"""A module about graphs, written for a test."""

class Graph:
    """A graph has nodes and edges between them."""

    @property
    def name(self):
        """The name of the graph, a string."""

    @name.setter
    def name(self, value):
        """Set the name of the graph to a new value."""

    def _helper(self):
        pass

if True:
    def conditional():
        """A function defined under an if statement."""
'''


def test_names_in_source_order_and_a_name_defined_twice_is_one_document():
    assert [name for name, _ in module_docstrings(SOURCE, "pkg.graphs")] == [
        "pkg.graphs", "pkg.graphs.Graph", "pkg.graphs.Graph.name", "pkg.graphs.Graph.name", "pkg.graphs.conditional",
    ]  # fmt: skip
    documents = documents_of_sources([("pkg.graphs", SOURCE), ("pkg.broken", "def (:")])
    assert documents == [
        Document("pkg.graphs", ("A module about graphs, written for a test.",)),
        Document("pkg.graphs.Graph", ("A graph has nodes and edges between them.",)),
        Document("pkg.graphs.Graph.name", ("The name of the graph, a string.", "Set the name of the graph to a new value.")),
        Document("pkg.graphs.conditional", ("A function defined under an if statement.",)),
    ]


def test_a_missing_package_says_what_to_do():
    with pytest.raises(SuiteError, match="requirements.lock"):
        package_root("no_such_package_for_prunebench")


# ---------------------------------------------------------------------------- the real corpus


@pytest.fixture(scope="module")
def splits(cache_dir) -> dict[str, list[str]]:
    return {split: corpus_documents("docstrings", split, cache_dir) for split in SPLITS}


def test_the_packages_are_pinned_by_the_lock():
    """What makes the corpus the same on every machine: the same files, from the same locked versions."""
    pinned = read_lock()
    for package in READS_PACKAGES:
        assert importlib.metadata.version(package) == pinned[package]


def test_a_title_is_one_document(splits):
    assert all(len(docs) == len({text.split("\n\n", 1)[0] for text in docs}) for docs in splits.values())


def test_real_corpus_sources(splits):
    assert {text.split(".", 1)[0].split("\n", 1)[0] for text in splits["test"]} == set(READS_PACKAGES)
    for text in splits["test"]:
        assert ">>>" not in text and "`" not in text and "$" not in text and ":param" not in text


def test_real_corpus_is_deterministic(splits, cache_dir):
    from evals.corpora import docstrings

    docstrings._splits_of_packages.cache_clear()
    assert {split: corpus_documents("docstrings", split, cache_dir) for split in SPLITS} == splits
