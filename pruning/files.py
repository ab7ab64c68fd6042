"""Files written whole or not at all: a reader (or a rerun after a kill) sees the old file or the new
one, never half of one. Checkpoint directories have their own rename in `pruning.models.sources`."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "prunebench-checkpoint.json"  # what `save_checkpoint` writes last into a checkpoint directory


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary sibling of `path` to write; renamed onto `path` when the block ends without
    an error, removed when it raises. Unique per call, so concurrent writers never share one."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (16 hex digits): for small files a stage writes and a later one reads."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_problem(path: Path, digest: str) -> str | None:
    """Why the file a cached stage wrote must not be used (missing, or its bytes changed since), or None."""
    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist"
    if file_digest(path) != digest:
        return f"{path} changed after the stage that wrote it was cached (truncated or overwritten)"
    return None
