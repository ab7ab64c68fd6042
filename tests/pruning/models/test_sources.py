"""Checkpoints on disk: resolve, save atomically, load, and fail with errors that name the problem."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch

from pruning.errors import CheckpointError, ModelSourceError
from pruning.models.sources import MANIFEST, checkpoint_digest, checkpoint_fingerprint, checkpoint_lock, device_problem, is_complete_checkpoint, load_model, resolve_checkpoint, save_checkpoint
from pruning.specs import ModelSpec


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    model = tiny_model("llama")
    return model, save_checkpoint(model, None, tmp_path / "tiny")


def spec(path) -> ModelSpec:
    return ModelSpec(source=str(path))


def test_round_trip_reproduces_logits_without_a_tokenizer(checkpoint, calibration_batch):
    model, path = checkpoint
    assert is_complete_checkpoint(path)
    assert resolve_checkpoint(spec(path), path.parent) == path.resolve()
    reloaded, tokenizer = load_model(path, spec(path))
    assert tokenizer is None and not reloaded.training
    with torch.no_grad():
        assert torch.equal(model(calibration_batch).logits, reloaded(calibration_batch).logits)


def test_the_digest_is_of_the_contents_wherever_they_are_and_read_once_per_version(checkpoint, tmp_path):
    model, path = checkpoint
    memo = tmp_path / "digests"
    digest = checkpoint_digest(path, memo)
    copy = shutil.copytree(path, tmp_path / "elsewhere" / "tiny", copy_function=shutil.copy)  # new file times
    assert checkpoint_digest(copy, memo) == digest  # another place and other file times: the same model
    assert len(list(memo.iterdir())) == 2  # one memo per version of the files (names, sizes, times)
    kept = memo / f"{checkpoint_fingerprint(copy)}.sha256"
    kept.write_text("f" * 16)
    assert checkpoint_digest(copy, memo) == "f" * 16  # read from the memo, not from the files
    kept.write_text("not a digest")
    assert checkpoint_digest(copy, memo) == digest  # a damaged memo is read past
    (copy / MANIFEST).write_text((copy / MANIFEST).read_text() + " ")  # prunebench's own bookkeeping
    (copy / ".tiny.lock").write_text("")
    assert checkpoint_digest(copy, memo) == digest
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1  # a fine-tune: same names, shapes and sizes
    assert checkpoint_digest(save_checkpoint(model, None, tmp_path / "tuned"), memo) != digest


def test_truncated_weights_are_incomplete_and_fail_to_load_naming_the_path(checkpoint):
    _, path = checkpoint
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert not is_complete_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path, spec(path))


def test_missing_path_is_a_model_source_error(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_checkpoint(spec(tmp_path / "nowhere"), tmp_path)


def test_uncached_hub_id_says_how_to_fetch_it(tmp_path):
    with pytest.raises(ModelSourceError, match=r"prunebench-test/not-cached-anywhere.*huggingface-cli download"):
        resolve_checkpoint(spec("prunebench-test/not-cached-anywhere"), tmp_path)


def test_directory_left_by_a_crash_is_not_a_checkpoint(checkpoint):
    model, path = checkpoint
    # a save killed before its rename leaves `.<name>.tmp-*` beside the destination, maybe half written
    crashed = path.parent / f".{path.name}.tmp-deadbeef"
    shutil.copytree(path, crashed)
    (crashed / MANIFEST).unlink()
    shutil.rmtree(path)
    assert not is_complete_checkpoint(path) and not is_complete_checkpoint(crashed)
    with pytest.raises(ModelSourceError):
        resolve_checkpoint(spec(path), path.parent)
    assert is_complete_checkpoint(save_checkpoint(model, None, path))  # a new save is not blocked by it
    assert not crashed.exists()  # and removes what the killed writer of that checkpoint left


def test_concurrent_saves_of_one_checkpoint_take_turns_and_leave_one_whole_checkpoint(checkpoint):
    model, path = checkpoint
    (path.parent / f".{path.name}.old-0badc0de").mkdir()  # what a writer killed mid-swap leaves
    errors = []

    def save() -> None:
        try:
            save_checkpoint(model, None, path)
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert is_complete_checkpoint(path)
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{path.name}.lock", path.name]


def test_the_checkpoint_lock_excludes_a_second_writer(tmp_path):
    dest = tmp_path / "ckpt"
    order = []

    def second() -> None:
        with checkpoint_lock(dest):
            order.append("second")

    with checkpoint_lock(dest):
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive()  # blocked while the first holds it
        order.append("first")
    waiting.join(timeout=10)
    assert order == ["first", "second"]
    with checkpoint_lock(dest), checkpoint_lock(dest):  # the holder may take it again (a builder that saves)
        order.append("again")
    assert order[-1] == "again"


def test_a_packaged_model_being_converted_by_another_process_is_waited_for_not_converted_twice(tmp_path, monkeypatch):
    from pruning.models import sources

    converted = []
    monkeypatch.setattr(sources, "_convert_packaged", lambda name, dest: converted.append(dest) or dest)
    dest = tmp_path / "smollm2-135m"
    with checkpoint_lock(dest):
        waiting = threading.Thread(target=sources.materialize_packaged, args=("smollm2-135m", tmp_path))
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and converted == []  # waits while the other converts
    waiting.join(timeout=10)
    assert converted == [dest]


def test_a_device_this_machine_lacks_is_named(monkeypatch):
    assert device_problem("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_problem("cuda:0") == "'cuda:0': this machine has no CUDA device that torch can use"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_problem("cuda:1") is None
    assert device_problem("cuda:2") == "'cuda:2': this machine has 2 CUDA device(s), numbered from 0"
