"""`prunebench export RUN DIR`: a recorded run's checkpoint, compressed or --dense, with its tokenizer and a
model card; refused into a non-empty directory, and a clear line for a run whose checkpoint is gone.

The run is recorded straight into a tmp database (tests/reports/synthetic.py), beside a Wanda-pruned tiny
Llama saved as the pipeline saves it: no flow runs."""

from __future__ import annotations

import json

import pytest
import torch

from flows.cli import main
from pruning.local.walk import prune_model
from pruning.models.adapters import adapter_for
from pruning.models.sources import load_model, save_checkpoint
from pruning.specs import ModelSpec
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def recorded(tmp_path, smollm2_checkpoint):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()  # fmt: skip
    ids = torch.randint(0, len(tokenizer), (4, 16), generator=torch.Generator().manual_seed(1))
    report = prune_model(model, adapter_for(model), "wanda", ids, target=0.5, batch_size=4, progress=False)
    checkpoint = save_checkpoint(model, tokenizer, tmp_path / "work" / "checkpoints" / "wanda-50pct-abc", compress=True, extra={
        "method": {"name": "wanda", "sparsity": 0.5}, "calibration": {"corpus": "jargon", "n_samples": 4, "seq_len": 16},
        "achieved_sparsity": report.achieved_sparsity})  # fmt: skip
    own = tmp_path / "models" / "tiny"  # a dense run's checkpoint: the user's own files, no prunebench manifest
    LlamaForCausalLM(model.config).save_pretrained(own)
    store = ResultStore(tmp_path / "results.duckdb")
    for bundle, path in ((synthetic_bundle("wanda-run", "wanda", "wanda 50%", sparsity=0.5, quality=0.8), checkpoint),
                         (synthetic_bundle("gone-run", "magnitude", "magnitude 50%", sparsity=0.5, hours=1), tmp_path / "deleted"),
                         (synthetic_bundle("dense-run", "dense", "dense", hours=2), own),
                         (synthetic_bundle("unkept-run", "magnitude", "magnitude 60%", sparsity=0.6, hours=3), tmp_path / "removed")):  # fmt: skip
        kept = {"checkpoint_kept": False} if bundle.run.run_id == "unkept-run" else {}
        store.record(bundle.model_copy(update={"run": bundle.run.model_copy(update={"checkpoint": str(path), **kept})}))
    return model, store.path


def export(database, *args) -> int:
    return main(["export", *map(str, args), "--database", str(database)])


def assert_same_state(model, reloaded):
    expected, got = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(got[name], tensor) for name, tensor in expected.items())


def test_the_export_is_compressed_loads_with_our_loader_and_carries_a_model_card(recorded, tmp_path, capsys):
    model, database = recorded
    dest = tmp_path / "exported" / "wanda50"
    assert export(database, "wanda", dest) == 0
    assert f"exported run wanda to {dest}" in capsys.readouterr().out
    config = json.loads((dest / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["format"] == "sparse-bitmask"
    reloaded, tokenizer = load_model(dest, ModelSpec(source=str(dest)))
    assert_same_state(model, reloaded)
    assert tokenizer is not None and tokenizer("a pruned model").input_ids
    card = (dest / "README.md").read_text()
    assert "wanda 50%" in card and '"sparsity": 0.5' in card and "50.0% of the prunable weights set to zero" in card
    assert "| jargon_ppl | word_perplexity (primary) | 12.50 |" in card and "`jargon` (corpus=jargon, n_samples=4, seq_len=16)" in card
    assert "compressed-tensors `sparse-bitmask`" in card and "load_model" in card and "--dense" in card
    assert [path.name for path in dest.parent.iterdir()] == ["wanda50"]  # no temporary directory or lock left


def test_dense_export_loads_with_plain_transformers(recorded, tmp_path):
    from transformers import AutoModelForCausalLM

    model, database = recorded
    dest = tmp_path / "dense"
    dest.mkdir()  # an empty directory is fine
    assert export(database, "wanda-run", dest, "--dense") == 0
    assert "quantization_config" not in json.loads((dest / "config.json").read_text())
    assert_same_state(model, AutoModelForCausalLM.from_pretrained(dest))
    card = (dest / "README.md").read_text()
    assert "plain safetensors" in card and "AutoModelForCausalLM.from_pretrained" in card


def test_a_non_empty_directory_is_refused(recorded, tmp_path, capsys):
    _, database = recorded
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert export(database, "wanda-run", tmp_path / "taken") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not an empty directory" in error
    assert [path.name for path in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_a_run_whose_checkpoint_is_gone_says_so_and_how_to_rebuild_it(recorded, tmp_path, capsys):
    _, database = recorded
    assert export(database, "gone-run", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"checkpoint {tmp_path / 'deleted'} is gone (deleted)" in error
    assert "re-run its config to rebuild it: `prunebench run CONFIG` with the config of experiment 'main'" in error
    assert not (tmp_path / "out").exists()
    # a checkpoint its run's output.keep_checkpoints removed once the scores were recorded
    assert export(database, "unkept-run", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"checkpoint {tmp_path / 'removed'} was not kept" in error
    assert "with output.keep_checkpoints: last to rebuild it" in error and not (tmp_path / "out").exists()


def test_a_dense_run_exports_its_models_own_files(recorded, tmp_path):
    _, database = recorded
    assert export(database, "dense-run", tmp_path / "dense-export") == 0
    assert "quantization_config" not in json.loads((tmp_path / "dense-export" / "config.json").read_text())  # nothing sparse
    assert "the dense baseline" in (tmp_path / "dense-export" / "README.md").read_text()
