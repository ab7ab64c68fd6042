"""Docstrings of three locked pure-Python packages as a second offline English corpus.

The Jargon File's test split gives about 380 cloze passages; the evaluation suites need more
English text than that, and it must be on every machine without a download. These packages are:
they are in requirements.lock (torch requires NetworkX and SymPy; rouge-score, which lm-eval
uses, requires NLTK), so every environment built from the lock has the same source files, byte
for byte. Licences: NetworkX BSD-3-Clause, NLTK Apache-2.0, SymPy BSD-3-Clause ("New BSD").

Each documented module, class or function is a document: its dotted name is the title, and its
paragraphs are the prose of its docstring — the summary and the description, and the prose of
"Notes" / "Explanation" sections. Parameters, returns, examples, doctests, code, lists, field
lists and maths are left out. Files are read with `ast`, never imported, in sorted order; tests
are skipped. Splits are those of every corpus (`evals.corpora.splits`).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from evals.corpora.splits import Document, split_documents
from pruning.errors import SuiteError

# The installed packages whose files are this corpus. They are read, never imported, so tasks/cache.py
# learns of them from this name (a stage that builds suites from them is keyed on their versions).
READS_PACKAGES: tuple[str, ...] = ("networkx", "nltk", "sympy")
# numpydoc / SymPy / Google-style sections whose paragraphs are prose; every other section is not.
PROSE_SECTIONS = frozenset({"notes", "note", "explanation", "extended summary", "description"})
MIN_PROSE_WORDS = 3  # "Return the transpose." is a sentence; a shorter line is a heading or a stub
MIN_LETTER_SHARE = 0.8  # of the paragraph's visible characters

_UNDERLINE = re.compile(r"^([-=~^*+#])\1{2,}$")
_GOOGLE_SECTION = re.compile(r"^([A-Z][A-Za-z ]{1,30}):$")
_FIELD = re.compile(r"^[:@][A-Za-z]")  # `:param x:`, `:return:`, `@type x:`: a field list starts
_NOT_PROSE_LINE = re.compile(r"^(?:>>>|\.\.\.|\.\. |[|+*#-]|\d+[.)] |\(\d+\) |\[\d+\])")
_ROLE = re.compile(r":[A-Za-z:]+:`([^`]*)`")
_ANGLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]*>$")
_CITATION = re.compile(r"\s*\[\w+\]_")  # " [1]_", " [Knuth97]_": references to the list at the end
_INLINE = re.compile(r"``([^`]+)``|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*")
_SENTENCE_END = re.compile(r"[.!?][)\]\"'”’]*$")
_CODE_CHARACTERS = re.compile(r"[`$\\{}<>=_^|~#@]|\[|\]|\w\(|://|\.\w+\(")


# ---------------------------------------------------------------------------- cleaning (pure)


def _role_text(match: re.Match) -> str:
    """`:func:`~networkx.foo`` -> 'foo' (what Sphinx shows); `:class:`a graph <Graph>`` -> 'a graph'."""
    target = match.group(1)
    if titled := _ANGLE_TARGET.match(target):
        return titled.group(1)
    return target.lstrip("~").rsplit(".", 1)[-1] if target.startswith("~") else target


def _plain(text: str) -> str:
    """reStructuredText inline markup taken off: roles, ``literals``, *emphasis*, **strong**."""
    text = _ROLE.sub(_role_text, _CITATION.sub("", text))
    return _INLINE.sub(lambda m: next(group for group in m.groups() if group is not None), text)


def _section_title(lines: Sequence[str], index: int) -> str | None:
    """The section a line opens, lower-cased: 'Notes' over '-----' (numpydoc, SymPy) or 'Notes:' (Google)."""
    line = lines[index].strip()
    if index + 1 < len(lines) and line and _UNDERLINE.match(lines[index + 1].strip()):
        return line.lower()
    if (google := _GOOGLE_SECTION.match(line)) and (index + 1 == len(lines) or not lines[index + 1].strip() or lines[index + 1][:1].isspace()):
        return google.group(1).lower()
    return None


def _blocks(docstring: str) -> Iterator[list[str]]:
    """The docstring's blank-line-separated blocks in prose sections: before the first section
    heading, or under one of `PROSE_SECTIONS`."""
    lines = docstring.splitlines()
    keeping, block, index = True, [], 0
    while index < len(lines):
        title = _section_title(lines, index)
        if title is not None:
            if block and keeping:
                yield block
            keeping, block = title in PROSE_SECTIONS, []
            index += 2 if index + 1 < len(lines) and _UNDERLINE.match(lines[index + 1].strip()) else 1
            continue
        if lines[index].strip():
            block.append(lines[index])
        elif block:
            if keeping:
                yield block
            block = []
        index += 1
    if block and keeping:
        yield block


def prose_paragraphs(docstring: str) -> list[str]:
    """The paragraphs of running English text in a (cleaned, dedented) docstring, each on one line.

    A block is prose when no line is indented (code, definition lists), none starts a doctest, a
    directive, a list item or a table, it does not introduce a literal block (`::`), and once its
    inline markup is taken off it is words: no code characters, mostly letters, at least
    `MIN_PROSE_WORDS` words, ending like a sentence (one ending in ':' introduces an example). A
    field list (`:param x:`) ends the block."""
    paragraphs: list[str] = []
    for block in _blocks(docstring):
        fields = [index for index, line in enumerate(block) if _FIELD.match(line)]
        block = block[: fields[0]] if fields else block
        if not block or any(line[:1].isspace() or _NOT_PROSE_LINE.match(line) for line in block):
            continue
        if block[-1].rstrip().endswith("::"):
            continue
        text = _plain(" ".join(line.strip() for line in block))
        text = re.sub(r"\s+", " ", text).strip()
        visible = [ch for ch in text if not ch.isspace()]
        if not visible or _CODE_CHARACTERS.search(text) or sum(ch.isalpha() for ch in visible) < MIN_LETTER_SHARE * len(visible):
            continue
        if len(text.split()) >= MIN_PROSE_WORDS and _SENTENCE_END.search(text):
            paragraphs.append(text)
    return paragraphs


_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _definitions(node: ast.AST) -> Iterator[ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]:
    """The classes and functions defined directly in `node`, also under `if`, `try`, `with` ...."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _DEFINITIONS):
            yield child
        elif isinstance(child, (ast.stmt, ast.excepthandler)):
            yield from _definitions(child)


def module_docstrings(source: str, module: str) -> Iterator[tuple[str, str]]:
    """(dotted name, docstring) of a module's source and of its classes and functions, in source order."""

    def walk(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> Iterator[tuple[str, str]]:
        if (docstring := ast.get_docstring(node, clean=True)) is not None:
            yield name, docstring
        for definition in _definitions(node):
            yield from walk(definition, f"{name}.{definition.name}")

    yield from walk(ast.parse(source), module)


def documents_of_sources(sources: Iterable[tuple[str, str]]) -> list[Document]:
    """Documents from (module name, source) pairs: one per documented name with prose; a name
    defined twice (a property's getter and setter) is one document. A source that does not parse
    is skipped."""
    paragraphs_of: dict[str, list[str]] = {}
    for module, source in sources:
        try:
            docstrings = list(module_docstrings(source, module))
        except SyntaxError:
            continue
        for name, docstring in docstrings:
            if paragraphs := prose_paragraphs(docstring):
                kept = paragraphs_of.setdefault(name, [])
                kept += [paragraph for paragraph in paragraphs if paragraph not in kept]
    return [Document(name, tuple(paragraphs)) for name, paragraphs in paragraphs_of.items()]


# ---------------------------------------------------------------------------- the installed packages


def package_root(package: str) -> Path:
    """The installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError(
            f"the docstrings corpus reads the installed package {package!r}, which is not installed; "
            "install the environment from requirements.lock (make venv)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_sources(package: str) -> Iterator[tuple[str, str]]:
    """(module name, source) of the package's modules, by sorted relative path; tests left out."""
    root = package_root(package)
    paths = sorted(root.rglob("*.py"), key=lambda path: path.relative_to(root).as_posix())
    for path in paths:
        parts = path.relative_to(root.parent).with_suffix("").parts
        if any(part in ("tests", "test", "testing") or part.startswith("test_") or part == "conftest" for part in parts):
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            yield module, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


@lru_cache(maxsize=2)
def _splits_of_packages(versions: tuple[tuple[str, str], ...]) -> Mapping[str, tuple[str, ...]]:
    """Parsed and split once per process per set of installed versions."""
    documents = [document for package, _version in versions for document in documents_of_sources(package_sources(package))]
    return {name: tuple(document.text for document in docs) for name, docs in split_documents(documents).items()}


def source_versions(packages: Sequence[str] = READS_PACKAGES) -> tuple[tuple[str, str], ...]:
    """(package, installed version) of each source package; a missing one is refused with what to do."""
    for package in packages:
        package_root(package)
    return tuple((package, importlib.metadata.version(package)) for package in packages)


def docstring_documents(split: str, cache_dir: Path) -> list[str]:
    """Texts (dotted name, blank line, paragraphs separated by blank lines) of one split. `cache_dir` is
    unused: the packages are the source."""
    splits = _splits_of_packages(source_versions())
    if split not in splits:
        raise SuiteError(f"unknown split {split!r} of the docstrings corpus; known: {', '.join(splits)}")
    return list(splits[split])
