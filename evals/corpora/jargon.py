"""The Jargon File as the offline English corpus: located or fetched, cleaned into documents, split.

Licence: the Jargon File (version 4.4.7, 29 Dec 2003, edited by Eric S. Raymond) is in the
public domain ("to be freely used, shared, and modified"); Debian ships it as `jargon-text`.

Lookup order: an explicit path (argument or $PRUNEBENCH_JARGON_PATH), the installed Debian file,
`<cache_dir>/corpora/jargon.txt.gz`, then `apt-get download jargon-text` into a private apt
state directory (no root, no system change) with the .deb unpacked in pure Python.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from evals.corpora.splits import Document, split_documents
from pruning.errors import SuiteError
from pruning.files import atomic_path

ENV_PATH = "PRUNEBENCH_JARGON_PATH"
SYSTEM_PATH = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
CACHE_NAME = "jargon.txt.gz"
DEB_PACKAGE = "jargon-text"
DEB_MEMBER = "usr/share/doc/jargon-text/jargon.txt.gz"
APT_TIMEOUT_S = 300

HOW_TO_PROVIDE = (
    f"install Debian's {DEB_PACKAGE} package (apt-get install {DEB_PACKAGE}), or set {ENV_PATH} to a copy of "
    f"jargon.txt.gz (Jargon File 4.4.7, public domain), or place that file at <cache>/corpora/{CACHE_NAME}"
)


# ---------------------------------------------------------------------------- locating the file


def locate_jargon(cache_dir: Path, explicit: Path | None = None) -> Path:
    """Path of jargon.txt(.gz) on this machine, fetching it into `cache_dir/corpora` if needed."""
    explicit = explicit or (Path(os.environ[ENV_PATH]) if os.environ.get(ENV_PATH) else None)
    if explicit is not None:
        if not Path(explicit).is_file():
            raise SuiteError(f"Jargon File path {explicit} (from {ENV_PATH} or the argument) does not exist; {HOW_TO_PROVIDE}")
        return Path(explicit)
    if SYSTEM_PATH.is_file():
        return SYSTEM_PATH
    cached = Path(cache_dir) / "corpora" / CACHE_NAME
    if cached.is_file():
        return cached
    try:
        return fetch_jargon_deb(cached)
    except (OSError, subprocess.SubprocessError, ValueError, tarfile.TarError, KeyError) as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise SuiteError(f"the Jargon File corpus is not on this machine and apt-get could not fetch it ({reason}); {HOW_TO_PROVIDE}") from err


def fetch_jargon_deb(dest: Path) -> Path:
    """`apt-get download jargon-text` with a private lists/cache directory, keep only jargon.txt.gz."""
    if shutil.which("apt-get") is None:
        raise OSError("apt-get is not available")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".apt-") as apt_dir:
        state = Path(apt_dir)
        (state / "lists" / "partial").mkdir(parents=True)
        (state / "cache" / "archives" / "partial").mkdir(parents=True)
        options = [
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip
        for command in (["apt-get", *options, "-q", "update"], ["apt-get", *options, "download", DEB_PACKAGE]):
            done = subprocess.run(command, cwd=state, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
            if done.returncode != 0:
                raise OSError(f"`{' '.join(command[:1] + command[-2:])}` failed: {done.stderr.strip() or done.stdout.strip()}")
        debs = sorted(state.glob(f"{DEB_PACKAGE}_*.deb"))
        if not debs:
            raise OSError(f"apt-get download left no {DEB_PACKAGE}_*.deb")
        payload = deb_member(debs[-1].read_bytes(), DEB_MEMBER)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(payload)
    return dest


def ar_members(archive: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each member of a Unix `ar` archive (the container format of a .deb)."""
    if not archive.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (missing !<arch> magic)")
    offset = 8
    while offset + 60 <= len(archive):
        header = archive[offset : offset + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"corrupt ar header at byte {offset}")
        name = header[:16].decode("ascii").strip().rstrip("/")  # GNU ar ends names with '/'
        size = int(header[48:58].decode("ascii").strip())
        start = offset + 60
        yield name, archive[start : start + size]
        offset = start + size + (size & 1)  # members are padded to an even offset


def deb_member(deb: bytes, member: str) -> bytes:
    """The bytes of one file of a .deb's data.tar.* (gz/xz/bz2), without dpkg."""
    for name, data in ar_members(deb):
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                wanted = member.lstrip("./")
                for info in tar.getmembers():
                    if info.isfile() and info.name.lstrip("./") == wanted:
                        extracted = tar.extractfile(info)
                        assert extracted is not None
                        return extracted.read()
            raise KeyError(f"{member} is not in the package's {name}")
    raise KeyError("the .deb has no data.tar member")


def read_text(path: Path) -> str:
    """The file's text, gunzipped when it starts with the gzip magic."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


# ---------------------------------------------------------------------------- cleaning (pure)

_ENTRY_HEADER = re.compile(r"^   :(?P<term>.+?):(?:\s+(?P<rest>.*))?$")
_PRONUNCIATION = re.compile(r"/[^/]*/")
_CROSS_REFERENCE = re.compile(r"\{+([^{}]*)\}+")  # also the file's few doubled {{braces}}
_BOX_DRAWING = re.compile(r"[\u2500-\u257f]")
_SENTENCE_END = re.compile(r"[.!?:;][)\]\"'”’]*$")
_NAVIGATION = re.compile(r"^\((?:The next|This is the last) cartoon in the Crunchly saga")
MIN_PROSE_WORDS = 8  # a paragraph shorter than this must end like a sentence (drops tables of contents)


def _blocks(lines: Sequence[str]) -> Iterator[list[str]]:
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def _heading(block: list[str]) -> str | None:
    """Chapter/section titles sit at column 0; part titles are centred. Tables and art are not headings."""
    if len(block) != 1 or _BOX_DRAWING.search(block[0]):
        return None
    line = block[0]
    indent = len(line) - len(line.lstrip())
    text = " ".join(line.split())  # also turns the no-break spaces of "Chapter\xa01." into spaces
    if indent == 0 or (indent >= 10 and re.fullmatch(r"[\w .,'’‘:-]+", text)):
        return text
    return None


def _entry_title(term: str, rest: str | None) -> str:
    """':@-party: /at'par`tee/, n.' -> '@-party: n.' (pronunciations are dropped: not prose)."""
    grammar = _PRONUNCIATION.sub("", rest or "")
    grammar = re.sub(r"\s+", " ", grammar).strip(" ,")
    term = " ".join(term.split())
    return f"{term}: {grammar}" if grammar else term


def reflow(lines: Sequence[str]) -> str:
    """Join wrapped lines into one paragraph; drop `{cross-reference}` braces."""
    text = " ".join(line.strip() for line in lines)
    return re.sub(r"\s+", " ", _CROSS_REFERENCE.sub(r"\1", text)).strip()


def is_prose(lines: Sequence[str]) -> bool:
    """A paragraph of running text: every line at the body indent (3 spaces), no tables, art or code."""
    for line in lines:
        # columns of a table are runs of spaces (some of them no-break spaces) inside a line
        if not re.match(r"^   \S", line) or re.search(r"\S\s{3,}\S", line) or _BOX_DRAWING.search(line):
            return False
    text = reflow(lines)
    visible = [ch for ch in text if not ch.isspace()]
    if sum(ch.isalpha() for ch in visible) < 0.6 * len(visible) or _NAVIGATION.match(text):
        return False
    return len(text.split()) >= MIN_PROSE_WORDS or bool(_SENTENCE_END.search(text))


def parse_jargon(raw: str) -> list[Document]:
    """Clean the plain-text Jargon File into documents: one per glossary entry, one per section.

    Text before the first heading, tables of contents, tables, ASCII art and code are dropped;
    documents left without a paragraph are dropped too.
    """
    lines = raw.splitlines()
    # Tables of contents repeat every title as a one-line paragraph; these are dropped by name.
    titles = {" ".join(m["term"].split()) for line in lines if (m := _ENTRY_HEADER.match(line))}
    titles |= {heading for block in _blocks(lines) if (heading := _heading(block))}
    documents: list[Document] = []
    title: str | None = None
    paragraphs: list[str] = []

    def close() -> None:
        if title is not None and paragraphs:
            documents.append(Document(title, tuple(paragraphs)))

    for block in _blocks(lines):
        header = _ENTRY_HEADER.match(block[0])
        heading = None if header else _heading(block)
        if header or heading:
            close()
            title = _entry_title(header["term"], header["rest"]) if header else heading
            paragraphs = []
            block = block[1:] if header else []
        if block and is_prose(block) and (paragraph := reflow(block)) not in titles:
            paragraphs.append(paragraph)
    close()
    return documents


# ---------------------------------------------------------------------------- entry point


@lru_cache(maxsize=4)
def _splits_of_file(path: Path, size: int, mtime_ns: int) -> Mapping[str, tuple[str, ...]]:
    """Parsed and split once per process per file version (the suites and calibration all ask)."""
    splits = split_documents(parse_jargon(read_text(path)))
    return {name: tuple(document.text for document in docs) for name, docs in splits.items()}


def jargon_documents(split: str, cache_dir: Path, path: Path | None = None) -> list[str]:
    """Texts (title line, blank line, paragraphs separated by blank lines) of one split."""
    located = locate_jargon(cache_dir, path).resolve()
    stat = located.stat()
    splits = _splits_of_file(located, stat.st_size, stat.st_mtime_ns)
    if split not in splits:
        raise SuiteError(f"unknown split {split!r} of the jargon corpus; known: {', '.join(splits)}")
    return list(splits[split])
