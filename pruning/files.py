"""Files written whole or not at all: a reader (or a rerun after a kill) sees the old file or the new
one, never half of one. Checkpoint directories have their own rename in `pruning.models.sources`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
