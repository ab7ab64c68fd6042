"""Families we do not ship, described by the user: an adapter YAML (`model.adapter`) or an installed
package's `prunebench.adapters` entry point; checked against the checkpoint before any weight loads."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pruning.errors import AdapterError, ConfigError
from pruning.layerdrop import drop_layers
from pruning.local.walk import prune_model
from pruning.models import adapters
from pruning.models.adapters import OPT, adapter_for, blocks, find_adapter
from pruning.models.sources import checkpoint_adapter
from pruning.specs import AdapterSpec, ModelSpec, model_identity

REPO = Path(__file__).resolve().parents[3]
# StarCoder's layout (GPTBigCode): no built-in adapter covers it (configs/adapters/starcoder.yaml)
STARCODER = {
    "family": "starcoder",
    "model_types": ["gpt_bigcode"],
    "groups": [
        {
            "modality": "language",
            "path": "transformer.h",
            "prunable": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
            "droppable": True,
        }
    ],
}


def tiny_starcoder(seed: int = 0):
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    torch.manual_seed(seed)
    config = GPTBigCodeConfig(n_embd=64, n_layer=4, n_head=4, n_inner=128, vocab_size=128, n_positions=64, multi_query=True)
    return GPTBigCodeForCausalLM(config).eval()


def test_the_shipped_example_is_this_adapter():
    assert AdapterSpec.from_file(REPO / "configs" / "adapters" / "starcoder.yaml") == AdapterSpec.model_validate(STARCODER)


def adapter_file(tmp_path, content=STARCODER, name="starcoder.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def test_no_built_in_adapter_says_how_to_add_one_in_one_line():
    with pytest.raises(AdapterError) as caught:
        adapter_for(tiny_starcoder())
    message = str(caught.value)
    assert "no adapter for model family 'gpt_bigcode'" in message and "\n" not in message
    assert "model.adapter" in message and "family, model_types, groups" in message and "'prunebench.adapters'" in message


def test_a_yaml_adapter_prunes_and_drops_a_family_we_do_not_ship(tmp_path, calibration_batch):
    spec = ModelSpec(source="somewhere", adapter=str(adapter_file(tmp_path)))
    model = tiny_starcoder()
    adapter = adapter_for(model, spec.declared_adapter())
    assert adapter.family == "starcoder" and len(blocks(model, adapter.group("language"))) == 4

    report = prune_model(model, adapter, "wanda", calibration_batch, target=0.5, batch_size=4, progress=False)
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01) and len(report.layers) == 16
    drop_layers(model, adapter, [2])
    assert len(blocks(model, adapter.group("language"))) == 3 == model.config.num_hidden_layers
    with torch.no_grad():
        assert torch.isfinite(model(calibration_batch[:2]).logits).all()


def test_the_adapters_contents_are_part_of_the_models_identity_and_keys(tmp_path):
    from flows.config import spec_hash

    plain = ModelSpec(source="somewhere")
    assert "adapter" not in plain.model_dump()  # configs without one keep their hashes and cache keys
    first = ModelSpec(source="somewhere", adapter=str(adapter_file(tmp_path)))
    moved = ModelSpec(source="somewhere", adapter=str(adapter_file(tmp_path, name="elsewhere.yaml")))
    changed = ModelSpec(
        source="somewhere",
        adapter=str(adapter_file(tmp_path, {**STARCODER, "groups": [{**STARCODER["groups"][0], "prunable": ["mlp.c_fc"]}]}, "b.yaml")),
    )
    assert first.model_dump()["adapter"]["groups"][0]["path"] == "transformer.h"  # the contents, not the path
    assert spec_hash(first) == spec_hash(moved) != spec_hash(changed) != spec_hash(plain)
    assert first.identity() == moved.identity() != changed.identity() != plain.identity()
    assert model_identity("d", "float32", "cpu") != model_identity("d", "float32", "cpu", first.adapter_digest)
    assert ModelSpec.model_validate(first.model_dump()) == first  # a dump validates back (inline adapter)


@pytest.mark.parametrize(
    "content, expected",
    [
        ({**STARCODER, "groups": [{"modality": "text", "path": "transformer.h", "prunable": ["mlp.c_fc"]}]}, "groups.0.modality: Input should be 'vision' or 'language' (got 'text')"),
        ({"family": "x", "model_types": []}, "model_types: Tuple should have at least 1 item after validation, not 0; groups: Field required"),
        ({**STARCODER, "groups": [{**STARCODER["groups"][0], "path": "transformer h"}]}, "groups.0.path: String should match pattern"),
        ({**STARCODER, "groups": [{**STARCODER["groups"][0], "prunables": ["mlp.c_fc"]}]}, "groups.0.prunables: Extra inputs are not permitted"),
    ],
)
def test_a_bad_adapter_file_names_the_file_and_every_problem(tmp_path, content, expected):
    path = adapter_file(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        AdapterSpec.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"adapter file {path}: ") and expected in message and "\n" not in message


def test_a_bad_adapter_file_fails_the_config_at_the_door(tmp_path):
    from flows.config import load_config

    config = {
        "name": "x",
        "studies": [{"model": {"source": "m", "adapter": str(tmp_path / "missing.yaml")}, "methods": [{"name": "dense"}], "eval": {"suites": ["jargon"]}}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"studies\.0\.model\.adapter: .*missing\.yaml: cannot be read"):
        load_config(path)


def test_a_declared_adapter_must_cover_the_model():
    declared = AdapterSpec.model_validate(STARCODER).to_adapter()
    with pytest.raises(AdapterError, match=r"model.adapter 'starcoder' covers model_types \['gpt_bigcode'\], but the model is 'opt'"):
        find_adapter("opt", None, declared)


def test_an_entry_point_adapter_is_found(tmp_path, monkeypatch):
    (tmp_path / "starcoder_adapter.py").write_text(
        "from pruning.specs import AdapterSpec\n"
        f"ADAPTER = AdapterSpec.model_validate({STARCODER!r}).to_adapter()\n"
        "def broken():\n    return 'not an adapter'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [importlib.metadata.EntryPoint("starcoder", "starcoder_adapter:ADAPTER", adapters.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found if group == adapters.ENTRY_POINT_GROUP else [])
    adapters.entry_point_adapters.cache_clear()
    try:
        assert adapter_for(tiny_starcoder()).family == "starcoder"
        found[0] = importlib.metadata.EntryPoint("bad", "starcoder_adapter:broken", adapters.ENTRY_POINT_GROUP)
        adapters.entry_point_adapters.cache_clear()
        with pytest.raises(AdapterError, match="entry point 'bad' .* gave a str, expected a pruning.models.adapters.Adapter"):
            adapter_for(tiny_starcoder())
    finally:
        adapters.entry_point_adapters.cache_clear()
        sys.modules.pop("starcoder_adapter", None)


def test_the_checkpoint_is_checked_from_its_config_on_the_meta_device(tmp_path, tiny_model):
    opt = tmp_path / "opt"
    tiny_model("opt").save_pretrained(opt)
    assert checkpoint_adapter(opt, ModelSpec(source=str(opt))) is OPT

    starcoder = tmp_path / "starcoder"
    tiny_starcoder().save_pretrained(starcoder)
    with pytest.raises(AdapterError, match="no adapter for model family 'gpt_bigcode'"):
        checkpoint_adapter(starcoder, ModelSpec(source=str(starcoder)))
    assert checkpoint_adapter(starcoder, ModelSpec(source=str(starcoder), adapter=STARCODER)).family == "starcoder"
    wrong = {**STARCODER, "groups": [{**STARCODER["groups"][0], "prunable": ["mlp.fc1"]}]}
    with pytest.raises(AdapterError, match="has no submodule 'mlp.fc1'"):
        checkpoint_adapter(starcoder, ModelSpec(source=str(starcoder), adapter=wrong))


FALCON = {
    "family": "falcon",
    "model_types": ["falcon"],
    "groups": [
        {
            "modality": "language",
            "path": "transformer.h",
            "prunable": ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"],
            "droppable": True,
            "returns": "tuple",  # Falcon's model reads `outputs[0]` of every block
        }
    ],
}


def tiny_falcon():
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(0)
    return FalconForCausalLM(FalconConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=128)).eval()


def test_blocks_that_return_a_tuple_are_stood_in_for_by_a_tuple(calibration_batch):
    from pruning.layerdrop import layer_redundancy, sleb_order

    model = tiny_falcon()
    adapter = adapter_for(model, AdapterSpec.model_validate(FALCON).to_adapter())
    redundancy = layer_redundancy(model, adapter, calibration_batch, batch_size=4, progress=False)
    assert redundancy.n_layers == 4 and redundancy.n_sequences == 6
    order = sleb_order(model, adapter, calibration_batch, n_drop=1, batch_size=4, progress=False)  # skips layers by stand-ins
    report = prune_model(model, adapter, "sparsegpt", calibration_batch, target=0.5, batch_size=4, progress=False)
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    drop_layers(model, adapter, order.removed)
    with torch.no_grad():
        assert torch.isfinite(model(calibration_batch[:2]).logits).all()

    as_tensor = {**FALCON, "groups": [{**FALCON["groups"][0], "returns": "tensor"}]}
    with pytest.raises(AdapterError, match="block 1 was not called with block 0's output"):
        prune_model(tiny_falcon(), AdapterSpec.model_validate(as_tensor).to_adapter(), "wanda", calibration_batch, target=0.5, progress=False)
