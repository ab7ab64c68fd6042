"""Removing a checkpoint that no one is using (`output.keep_checkpoints`), safely beside concurrent users.

Branches of a sweep run side by side (threads of one process, Dask workers sharing a workdir) and two
of them may read one checkpoint (the same cache key). Two advisory locks beside each checkpoint say who
is doing what with it, across threads and processes (`flock` is per open file, so two threads of one
process exclude each other like two processes do), and both go when their holder dies:

- `.<name>.users`: every reader holds it *shared* (`checkpoint_in_use`) from before it checks that the
  checkpoint is whole until it is done with it. A remover takes it *exclusive, without waiting*: if
  any reader holds it, the remover leaves the checkpoint alone (the last reader's own removal, which
  comes after, takes care of it, or keeps it if its policy says so).
- `.<name>.lock` (`checkpoint_lock`): writers take turns on it. The remover takes it too, waiting
  for a write in progress to end, and removes only the version it was told of (by fingerprint): a
  checkpoint rewritten meanwhile belongs to whoever rewrote it.

A reader that finds its checkpoint gone after all (removed between its stage's cached result and its
hold) rebuilds it: the flow checks a checkpoint only while holding it (flows/checkpoints.py).
The two lock files are left in place: deleting a lock file others may have open would let two
holders lock two different files of the same name.
"""

from __future__ import annotations

import fcntl
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pruning.models.sources import checkpoint_fingerprint, checkpoint_lock


def _users_file(path: Path) -> Path:
    return path.parent / f".{path.name}.users"


@contextmanager
def checkpoint_in_use(path: Path) -> Iterator[None]:
    """Hold the checkpoint in `path` as one of its readers (a shared lock): no removal takes it meanwhile.
    Waits while a removal is under way. Not reentrant: hold a checkpoint once per reader."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_users_file(path), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def checkpoint_bytes(path: Path) -> int:
    """The size of a checkpoint directory's files."""
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def remove_unused_checkpoint(path: Path, fingerprint: str | None = None) -> int | None:
    """Remove the checkpoint in `path` unless someone holds it (`checkpoint_in_use`) or it is no longer the
    version whose `fingerprint` the caller knows. Returns the bytes freed (0 when it was gone already),
    or None when it was left in place. The caller must not hold it itself."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    with open(_users_file(path), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a reader holds it
        try:
            with checkpoint_lock(path):  # after any write of it in progress
                if not path.is_dir():
                    return 0
                if fingerprint is not None and checkpoint_fingerprint(path) != fingerprint:
                    return None
                freed = checkpoint_bytes(path)
                # out of sight in one rename (readers never see half a checkpoint), then deleted;
                # a `.old-*` left by a crash here is removed by the next save of this checkpoint
                trash = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                path.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
                return freed
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
