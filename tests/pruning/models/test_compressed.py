"""Compressed checkpoints (compressed-tensors 0.14 sparse formats): the round trip is bit-exact, half the bytes
at 50%, 2:4 only where it holds, readers of checkpoint files see the dense model, a corrupt file names itself."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from pruning.errors import CheckpointError
from pruning.local.walk import prune_model
from pruning.models.adapters import adapter_for
from pruning.models.compressed import is_two_four, sparsity_config_of
from pruning.models.sources import checkpoint_adapter, checkpoint_problem, count_parameters, load_model, save_checkpoint
from pruning.specs import ModelSpec


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pruned(tiny_model, calibration_batch, method: str, n_m: str | None = None, dtype=torch.float32):
    model = tiny_model("llama").to(dtype)
    prune_model(model, adapter_for(model), method, calibration_batch, target=None if n_m else 0.5, n_m=n_m, batch_size=4, progress=False)
    return model


def weights_bytes(path) -> int:
    return sum(file.stat().st_size for file in path.glob("*.safetensors"))


def quantization_config(path) -> dict | None:
    return json.loads((path / "config.json").read_text()).get("quantization_config")


def assert_same_state(model, reloaded):
    expected, got = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


@pytest.mark.parametrize(
    ("method", "n_m", "form"),
    [("wanda", None, "sparse-bitmask"), ("wanda", "2:4", "sparse-24-bitmask"), ("sparsegpt", None, "sparse-bitmask")],
)
def test_the_round_trip_is_bit_exact(tiny_model, calibration_batch, tmp_path, method, n_m, form):
    model = pruned(tiny_model, calibration_batch, method, n_m)
    path = save_checkpoint(model, None, tmp_path / "compressed", compress=True)
    written = quantization_config(path)
    sparsity = written["sparsity_config"]
    assert written["quant_method"] == "compressed-tensors" and written["version"] == "0.14.0"
    assert sparsity["format"] == form and sparsity["sparsity_structure"] == ("2:4" if n_m else "unstructured")
    assert sparsity["targets"] == ["Linear"] and sparsity["ignore"] == ["lm_head"]
    assert 0.3 < sparsity["global_sparsity"] < 0.5  # half of the linears' weights, less of the whole model
    with safe_open(path / "model.safetensors", framework="pt") as tensors:
        names = set(tensors.keys())
    assert "model.layers.0.mlp.up_proj.bitmask" in names and "model.layers.0.mlp.up_proj.weight" not in names
    assert "model.embed_tokens.weight" in names  # dense tensors stay as they are
    reloaded, _ = load_model(path, ModelSpec(source=str(path)))
    assert_same_state(model, reloaded)
    assert not hasattr(reloaded.config, "quantization_config")  # a re-save of the loaded model is not mislabelled
    assert checkpoint_problem(path) is None
    assert count_parameters(path) == count_parameters(save_checkpoint(model, None, tmp_path / "dense"))
    assert checkpoint_adapter(path, ModelSpec(source=str(path))).family == "llama-like"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_half_the_weights_zero_takes_about_half_the_bytes(calibration_batch, tmp_path, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    # wider than the shared tiny models, so the linears outweigh the embeddings and the per-row offsets, as in a real model
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    model = LlamaForCausalLM(config).eval().to(dtype)
    prune_model(model, adapter_for(model), "wanda", calibration_batch, target=0.5, batch_size=4, progress=False)
    dense = save_checkpoint(model, None, tmp_path / "dense")
    compressed = save_checkpoint(model, None, tmp_path / "compressed", compress=True)
    assert weights_bytes(compressed) < 0.65 * weights_bytes(dense)
    reloaded, _ = load_model(compressed, ModelSpec(source=str(compressed), dtype=str(dtype).removeprefix("torch.")))
    assert_same_state(model, reloaded)


def test_a_dense_model_saved_with_compress_is_written_plain_and_round_trips(tiny_model, tmp_path):
    model = tiny_model("llama")
    path = save_checkpoint(model, None, tmp_path / "dense", compress=True)
    assert quantization_config(path) is None  # nothing worth compressing: transformers loads it as it is
    reloaded, _ = load_model(path, ModelSpec(source=str(path)))
    assert_same_state(model, reloaded)


def test_two_four_only_where_every_compressed_linear_is_two_four(tiny_model, calibration_batch, tmp_path):
    model = pruned(tiny_model, calibration_batch, "wanda", "2:4")
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight[0, :3] = 1.0  # one group of 4 now holds 3 nonzeros
    assert not is_two_four(model.model.layers[2].mlp.down_proj.weight)
    path = save_checkpoint(model, None, tmp_path / "mixed", compress=True)
    assert quantization_config(path)["sparsity_config"]["format"] == "sparse-bitmask"
    assert_same_state(model, load_model(path, ModelSpec(source=str(path)))[0])


def test_a_corrupt_compressed_file_is_a_checkpoint_error_naming_it(tiny_model, calibration_batch, tmp_path):
    model = pruned(tiny_model, calibration_batch, "magnitude")
    path = save_checkpoint(model, None, tmp_path / "compressed", compress=True)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"cannot decompress {path} \\(sparse-bitmask\\)"):
        load_model(path, ModelSpec(source=str(path)))


def test_a_compressed_tensors_format_it_cannot_read_is_named():
    quantized = {"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"g": {}}}}
    with pytest.raises(CheckpointError, match="only the sparse formats sparse-bitmask, sparse-24-bitmask are read"):
        sparsity_config_of(quantized)
    assert sparsity_config_of({"model_type": "llama"}) is None
    stored_dense = {"quant_method": "compressed-tensors", "version": "0.14.0", "sparsity_config": {"format": "dense", "global_sparsity": 0.5}}
    assert sparsity_config_of({"quantization_config": stored_dense}) is None  # llm-compressor's uncompressed sparse save


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "blip-2+opt"])
def test_a_pruned_vlm_round_trips_compressed(tiny_vlm, tmp_path, family):
    # llava and qwen2.5-vl are families transformers saves under legacy names by default: compressed
    # checkpoints keep the module names, so every pruned linear is found and compressed
    model, _ = tiny_vlm(family)
    prune_model(model, adapter_for(model), "magnitude", None, target=0.5, progress=False)
    path = save_checkpoint(model, None, tmp_path / "vlm", compress=True)
    with safe_open(path / "model.safetensors", framework="pt") as tensors:
        compressed = [name for name in tensors.keys() if name.endswith(".bitmask")]
    pruned = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and (module.weight == 0).float().mean() > 0.4]
    assert sorted(name.removesuffix(".bitmask") for name in compressed) == sorted(pruned)
    assert_same_state(model, load_model(path, ModelSpec(source=str(path)))[0])


def test_a_sharded_checkpoint_compresses_shard_by_shard_and_its_index_follows(tiny_model, calibration_batch, tmp_path):
    from pruning.models.compressed import compress_checkpoint

    model = pruned(tiny_model, calibration_batch, "magnitude")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB", save_original_format=False)
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 2
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    assert compress_checkpoint(tmp_path / "sharded", linears) == "sparse-bitmask"
    weight_map = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.self_attn.q_proj.bitmask" in weight_map and "model.layers.1.self_attn.q_proj.weight" not in weight_map
    assert_same_state(model, load_model(tmp_path / "sharded", ModelSpec(source=str(tmp_path / "sharded")))[0])
