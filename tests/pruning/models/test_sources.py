"""Checkpoints on disk: resolve, save atomically, load, and fail with errors that name the problem."""

from __future__ import annotations

import re
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
    with pytest.raises(ModelSourceError, match=r"prunebench-test/not-cached-anywhere.*`hf download prunebench-test/not-cached-anywhere`"):
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


# ---------------------------------------------------------------------------- the Hugging Face cache

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_repo(hub, repo_id: str, checkpoint, commit: str = COMMIT):
    """`checkpoint`'s files as `hf download repo_id` leaves them in the hub cache: blobs/<sha256> holds each
    file's bytes, snapshots/<commit>/<name> links to its blob, refs/main names the commit."""
    import hashlib
    import os

    folder = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(p for p in checkpoint.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")):
        blob = folder / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    return folder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache under a fresh HF_HOME, set after huggingface_hub was imported (it reads the
    variables once, at import: the cache must still be found from them at call time)."""
    import huggingface_hub  # noqa: F401 - imported first on purpose

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home" / "hub"


@pytest.fixture
def cached_llama(hub, tmp_path, smollm2_checkpoint):
    """A tiny random-init Llama with SmolLM2's tokenizer, saved with save_pretrained, in the hub cache as org/tiny-llama."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    return model, hub_repo(hub, "org/tiny-llama", saved)


def test_a_hub_id_resolves_to_its_snapshot_in_the_cache_named_by_hf_home_and_loads(cached_llama, tmp_path):
    model, folder = cached_llama
    snapshot = resolve_checkpoint(spec("org/tiny-llama"), tmp_path / "models")
    assert snapshot == folder / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").is_symlink()
    reloaded, tokenizer = load_model(snapshot, spec("org/tiny-llama"))
    assert tokenizer is not None and tokenizer("a hub model").input_ids
    ids = torch.arange(12).reshape(2, 6)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    assert not (tmp_path / "models").exists()  # read in place, never copied into prunebench's cache


def test_hf_hub_cache_wins_over_hf_home(cached_llama, tmp_path, monkeypatch):
    _, folder = cached_llama
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelSourceError, match=re.escape(str(tmp_path / "elsewhere" / "models--org--tiny-llama"))):
        resolve_checkpoint(spec("org/tiny-llama"), tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(folder.parent))
    assert resolve_checkpoint(spec("org/tiny-llama"), tmp_path) == folder / "snapshots" / COMMIT


def test_validate_reads_a_config_whose_source_is_a_hub_id(cached_llama, tmp_path, capsys, cache_dir):
    """`prunebench validate` (the CLI's own entry point) resolves the id in the cache, counts its parameters and
    fits the Llama adapter to it, before any weight loads."""
    import yaml

    from flows import cli

    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hub",
        "studies": [{"model": {"source": "org/tiny-llama", "dtype": "float32"},
                     "calibration": {"n_samples": 4, "seq_len": 32, "batch_size": 4},
                     "methods": [{"name": "dense"}, {"name": "wanda", "sparsity": 0.5}],
                     "eval": {"suites": ["jargon_ppl"], "limit": 2}}],
        "output": {"database": str(tmp_path / "results.duckdb"), "workdir": str(tmp_path / "work"), "cache": str(cache_dir)},
    }))  # fmt: skip
    assert cli.main(["validate", str(config)]) == 0
    out = capsys.readouterr().out
    assert "org/tiny-llama: 2 method(s) on jargon_ppl" in out and out.rstrip().endswith(f"{config}: ok")
    (cached_llama[1] / "refs" / "main").write_text("f" * 40)
    assert cli.main(["validate", str(config)]) != 0
    assert "refs/main names commit " + "f" * 40 in capsys.readouterr().err


def resolve_error(source: str, tmp_path) -> str:
    """The one-line ModelSourceError resolving `source` fails with."""
    with pytest.raises(ModelSourceError) as failed:
        resolve_checkpoint(spec(source), tmp_path)
    message = str(failed.value)
    assert "\n" not in message
    return message


def test_an_id_not_in_the_cache_names_where_it_looked_and_how_to_get_it(hub, tmp_path):
    message = resolve_error("org/not-cached", tmp_path)
    assert message.startswith(f"model 'org/not-cached' is not a local directory and is not in the local Hugging Face cache "
                              f"(looked for {hub / 'models--org--not-cached'}; ")  # fmt: skip
    assert "`hf download org/not-cached`" in message and "set `source:` to a local directory" in message


def test_refs_main_naming_a_missing_snapshot_is_named(cached_llama, tmp_path):
    _, folder = cached_llama
    shutil.rmtree(folder / "snapshots" / COMMIT)  # a copy of the cache that left the snapshot behind
    message = resolve_error("org/tiny-llama", tmp_path)
    assert message.startswith(f"model 'org/tiny-llama': {folder / 'refs' / 'main'} names commit {COMMIT}, but "
                              f"{folder / 'snapshots' / COMMIT} is missing (an interrupted download or a partial copy); ")  # fmt: skip
    assert "`hf download org/tiny-llama`" in message
    (folder / "refs" / "main").unlink()
    assert "has no refs/main (which snapshot to use)" in resolve_error("org/tiny-llama", tmp_path)
