import hashlib
import os
import threading

import pytest

from pruning.files import atomic_path, file_digest, file_problem, write_text_atomic


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_the_file_appears_whole_and_no_temporary_stays(tmp_path):
    path = tmp_path / "a.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second" and leftovers(tmp_path) == []


def test_a_write_that_raises_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_concurrent_writers_get_their_own_temporaries_and_one_of_them_wins(tmp_path):
    path = tmp_path / "shared.txt"
    texts = [str(i) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=write_text_atomic, args=(path, text)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_text() in texts and leftovers(tmp_path) == []


def test_a_changed_or_missing_file_is_named(tmp_path):
    path = tmp_path / "calibration.safetensors"
    path.write_bytes(b"0123456789" * 100)
    digest = file_digest(path)
    assert digest == hashlib.sha256(b"0123456789" * 100).hexdigest()[:16]
    assert file_problem(path, digest) is None
    os.truncate(path, 300)
    assert file_problem(path, digest) == f"{path} changed after the stage that wrote it was cached (truncated or overwritten)"
    path.write_bytes(b"9123456789" * 100)  # same size, other bytes
    assert file_problem(path, digest) is not None
    path.unlink()
    assert file_problem(path, digest) == f"{path} does not exist"
