"""Removing a checkpoint beside concurrent readers: plain directories, threads, no flow."""

from __future__ import annotations

import threading
from pathlib import Path

from pruning.files import MANIFEST
from pruning.models.removal import checkpoint_bytes, checkpoint_in_use, remove_unused_checkpoint
from pruning.models.sources import checkpoint_fingerprint, checkpoint_lock, checkpoint_problem


def fake_checkpoint(path: Path, weights: bytes = b"\x00" * 1000) -> Path:
    """A directory `checkpoint_problem` accepts: weights and the manifest listing them."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights)
    (path / MANIFEST).write_text(f'{{"files": {{"model.safetensors": {len(weights)}}}}}')
    return path


def test_an_unused_checkpoint_is_removed_and_its_bytes_counted(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "wanda-50pct-abc")
    size = checkpoint_bytes(checkpoint)
    assert remove_unused_checkpoint(checkpoint, checkpoint_fingerprint(checkpoint)) == size > 1000
    assert not checkpoint.exists()
    # what stays: the two empty lock files (deleting a lock file others may hold would split the lock)
    assert all(path.name.startswith(".") and path.stat().st_size == 0 for path in tmp_path.iterdir())
    assert remove_unused_checkpoint(checkpoint) == 0  # gone already


def test_a_checkpoint_a_reader_holds_is_left_until_the_reader_is_done(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "ckpt")
    holding, done = threading.Event(), threading.Event()

    def reader() -> None:
        with checkpoint_in_use(checkpoint):
            holding.set()
            done.wait()

    thread = threading.Thread(target=reader)
    thread.start()
    holding.wait()
    assert remove_unused_checkpoint(checkpoint) is None  # another thread of this process holds it
    assert checkpoint_problem(checkpoint) is None
    done.set()
    thread.join()
    assert remove_unused_checkpoint(checkpoint) > 0 and not checkpoint.exists()


def test_a_checkpoint_rewritten_since_is_not_the_removers_to_remove(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "ckpt")
    known = checkpoint_fingerprint(checkpoint)
    (checkpoint / "model.safetensors").write_bytes(b"\x01" * 1001)  # another writer's version
    assert remove_unused_checkpoint(checkpoint, known) is None and checkpoint.is_dir()


def test_a_removal_waits_for_a_write_in_progress(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "ckpt")
    removed = []
    with checkpoint_lock(checkpoint):  # a writer of this checkpoint
        remover = threading.Thread(target=lambda: removed.append(remove_unused_checkpoint(checkpoint)))
        remover.start()
        remover.join(timeout=0.5)  # a bounded wait for something that must not happen, not a sleep to let it happen
        assert remover.is_alive() and checkpoint.is_dir() and not removed
    remover.join()
    assert removed[0] > 0 and not checkpoint.exists()


def test_many_readers_each_see_it_whole_and_exactly_one_removes_it(tmp_path):
    """Every reader holds it, checks it, then lets go and tries to remove it, as a branch does: while
    any reader holds it no removal happens, and the last one out removes it (once)."""
    checkpoint = fake_checkpoint(tmp_path / "ckpt")
    fingerprint = checkpoint_fingerprint(checkpoint)
    n_readers = 8
    all_holding = threading.Barrier(n_readers)
    seen: list[str | None] = []
    freed: list[int | None] = []
    lock = threading.Lock()

    def branch() -> None:
        with checkpoint_in_use(checkpoint):
            all_holding.wait()
            problem = checkpoint_problem(checkpoint, fingerprint)
        outcome = remove_unused_checkpoint(checkpoint, fingerprint)
        with lock:
            seen.append(problem)
            freed.append(outcome)

    threads = [threading.Thread(target=branch) for _ in range(n_readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [None] * n_readers
    assert len([bytes_freed for bytes_freed in freed if bytes_freed]) == 1 and not checkpoint.exists()


def test_a_reader_arriving_during_a_removal_waits_and_then_finds_it_gone(tmp_path):
    """The flow checks a checkpoint only while holding it, so it either sees it whole (and no removal can
    take it) or sees it gone (and rebuilds it): never half removed."""
    checkpoint = fake_checkpoint(tmp_path / "ckpt")
    outcome = []
    with checkpoint_lock(checkpoint):  # the removal below stops here, holding the readers' lock exclusively
        remover = threading.Thread(target=lambda: outcome.append(remove_unused_checkpoint(checkpoint)))
        remover.start()
        remover.join(timeout=0.5)
        assert remover.is_alive()  # past the readers' lock (its only other wait), waiting for this one
        reader_saw = []
        reader = threading.Thread(target=lambda: reader_saw.append(_held_problem(checkpoint)))
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive() and not reader_saw  # waits for the removal under way
    remover.join()
    reader.join()
    assert outcome[0] > 0 and reader_saw == [f"{checkpoint} does not exist"]


def _held_problem(checkpoint: Path) -> str | None:
    with checkpoint_in_use(checkpoint):
        return checkpoint_problem(checkpoint)
