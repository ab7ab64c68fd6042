"""The Jargon File corpus: cleaning on a hand-made snippet, .deb extraction, lookup order, and the
split of the real corpus (fetched once into <repo>/.prunebench/cache)."""

from __future__ import annotations

import gzip
import io
import re
import shutil
import tarfile

import pytest

from evals.corpora import SPLITS, corpus_documents
from evals.corpora import jargon
from evals.corpora.jargon import ar_members, deb_member, locate_jargon, parse_jargon, read_text
from evals.corpora.splits import Document, split_documents
from pruning.errors import SuiteError

# Every construct of the real file: centred titles, a table of contents, a chapter heading at
# column 0 (with the no-break spaces the file uses), a box table, glossary entries with
# pronunciations and {cross-references}, a 4-space code block, ASCII art at the body indent,
# a cartoon caption and a repeated glossary index line.
SNIPPET = """\
                                The Jargon File

   Table of Contents

   1. Hacker Slang

                          Welcome to the Jargon File

   This is the Jargon File, a comprehensive compendium of hacker slang
   illuminating many aspects of hackish tradition.

   ┌───────┬─────────┐
   │ glyph │ meaning │
   └───────┴─────────┘

Chapter\u00a01.\u00a0Hacker Slang

   Hackers use a {kluge} when nothing
   elegant will do.

Glossary

   A

   abbrev

   :abbrev: /*-bree'v/, n.

   Common abbreviation for
   abbreviation. See {kluge}.

   (The next cartoon in the Crunchly saga is 73-05-18.)

   :kluge: /klooj/

   A clever programming trick intended to solve a particular nasty case in
   an expedient way.

       if (x) { goto fail; }

   \\_\\                           /_/

   abbrev
"""

EXPECTED = [
    Document(
        "Welcome to the Jargon File",
        ("This is the Jargon File, a comprehensive compendium of hacker slang illuminating many aspects of hackish tradition.",),
    ),
    Document("Chapter 1. Hacker Slang", ("Hackers use a kluge when nothing elegant will do.",)),
    Document("abbrev: n.", ("Common abbreviation for abbreviation. See kluge.",)),
    Document("kluge", ("A clever programming trick intended to solve a particular nasty case in an expedient way.",)),
]


def test_cleaning_a_hand_made_snippet():
    assert parse_jargon(SNIPPET) == EXPECTED


# ---------------------------------------------------------------------------- .deb extraction


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def test_deb_member_reads_data_tar_of_a_hand_built_deb():
    payload = gzip.compress(b"   :kluge: n.\n\n   A trick.\n")
    deb = _ar(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz/", b"odd"),  # GNU-style name and an odd size (padding byte follows)
            ("data.tar.xz", _tar_xz({"./usr/share/doc/jargon-text/README": b"x", f"./{jargon.DEB_MEMBER}": payload})),
        ]
    )
    assert [name for name, _ in ar_members(deb)] == ["debian-binary", "control.tar.xz", "data.tar.xz"]
    assert deb_member(deb, jargon.DEB_MEMBER) == payload
    with pytest.raises(KeyError):
        deb_member(deb, "usr/share/doc/other/file")
    with pytest.raises(ValueError):
        list(ar_members(b"not an archive"))


def test_read_text_accepts_gzip_and_plain(tmp_path):
    (tmp_path / "a.gz").write_bytes(gzip.compress("héllo".encode()))
    (tmp_path / "b.txt").write_text("héllo", encoding="utf-8")
    assert read_text(tmp_path / "a.gz") == read_text(tmp_path / "b.txt") == "héllo"


# ---------------------------------------------------------------------------- lookup order


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(jargon, "SYSTEM_PATH", tmp_path / "absent" / "jargon.txt.gz")
    monkeypatch.delenv(jargon.ENV_PATH, raising=False)


def test_explicit_path_wins(monkeypatch, tmp_path):
    explicit = tmp_path / "mine.txt"
    explicit.write_text(SNIPPET)
    monkeypatch.setenv(jargon.ENV_PATH, str(explicit))
    assert locate_jargon(tmp_path / "cache") == explicit
    monkeypatch.setenv(jargon.ENV_PATH, str(tmp_path / "missing.txt.gz"))
    with pytest.raises(SuiteError, match=jargon.ENV_PATH):
        locate_jargon(tmp_path / "cache")


def test_cached_copy_is_used(no_system_copy, tmp_path):
    cached = tmp_path / "cache" / "corpora" / jargon.CACHE_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(gzip.compress(SNIPPET.encode()))
    assert locate_jargon(tmp_path / "cache") == cached


def test_nothing_available_says_how_to_provide_it(no_system_copy, monkeypatch, tmp_path):
    monkeypatch.setattr(jargon.shutil, "which", lambda _: None)  # as on a machine without apt
    with pytest.raises(SuiteError) as raised:
        locate_jargon(tmp_path / "cache")
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert jargon.ENV_PATH in message and "apt-get install jargon-text" in message


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_apt_download_into_an_empty_cache(no_system_copy, tmp_path):
    """The path CI takes on a fresh machine: a private apt state, no root, only jargon.txt.gz kept."""
    path = locate_jargon(tmp_path / "cache")
    assert path == tmp_path / "cache" / "corpora" / jargon.CACHE_NAME
    assert [p.name for p in path.parent.iterdir()] == [jargon.CACHE_NAME]
    assert "The Jargon File" in read_text(path)[:500]


# ---------------------------------------------------------------------------- the real corpus


@pytest.fixture(scope="module")
def splits(cache_dir) -> dict[str, list[str]]:
    return {split: corpus_documents("jargon", split, cache_dir) for split in SPLITS}


def test_real_corpus_cleanliness(splits):
    for docs in splits.values():
        for text in docs:
            assert not re.search(r"\{\w[^{}]*\}", text)  # no cross-reference braces left
            assert "│" not in text and "\u00a0" not in text and "   " not in text  # no tables


def test_real_corpus_split_is_deterministic(splits, cache_dir):
    path = locate_jargon(cache_dir)
    recomputed = split_documents(parse_jargon(read_text(path)))
    assert {split: [d.text for d in docs] for split, docs in recomputed.items()} == splits


def test_unknown_corpus_or_split(cache_dir):
    with pytest.raises(SuiteError, match="unknown corpus"):
        corpus_documents("wikitext", "test", cache_dir)
    with pytest.raises(SuiteError, match="unknown split"):
        corpus_documents("jargon", "validation", cache_dir)
