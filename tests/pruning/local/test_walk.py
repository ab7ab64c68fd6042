"""The shared model walk, on tiny random-init decoders (conftest) and once on the packaged SmolLM2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning.errors import AdapterError, ConfigError
from pruning.local.report import layer_sparsity
from pruning.local.walk import kept_tokens, prune_model, walk_blocks
from pruning.models.adapters import Adapter, BlockGroup, adapter_for, blocks, prunable_linears
from pruning.models.sources import load_model, save_checkpoint
from pruning.specs import ModelSpec


def prunable_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name in layer_sparsity(model, adapter_for(model))}


def reference_sequential_wanda(model: nn.Module, ids: torch.Tensor, sparsity: float, batch_size: int, sequential: bool):
    """Wanda written the slow, obvious way: full-model forwards with hooks, no captured block inputs.

    With `sequential`, block i's statistics come from a forward through the already pruned blocks
    0..i-1; without, every block's statistics come from one forward of the dense model.
    """
    group = adapter_for(model).groups[0]
    layer_stack = blocks(model, group)

    def statistics(targets: list[int]) -> dict[tuple[int, str], torch.Tensor]:
        sums, handles = {}, []
        for index in targets:
            for name, linear in prunable_linears(layer_stack[index], group).items():
                sums[index, name] = torch.zeros(linear.in_features, dtype=torch.float64)

                def hook(module, args, output, key=(index, name)):
                    sums[key] += args[0].reshape(-1, args[0].shape[-1]).double().pow(2).sum(0)

                handles.append(linear.register_forward_hook(hook))
        with torch.no_grad():
            for batch in ids.split(batch_size):
                model(input_ids=batch, use_cache=False)
        for handle in handles:
            handle.remove()
        return sums

    dense = None if sequential else statistics(list(range(len(layer_stack))))
    for index, block in enumerate(layer_stack):
        sums = statistics([index]) if sequential else dense
        for name, linear in prunable_linears(block, group).items():
            scores = linear.weight.detach().abs().double() * sums[index, name].sqrt()
            pruned = scores.argsort(dim=1, stable=True)[:, : int(linear.in_features * sparsity)]
            with torch.no_grad():
                linear.weight.scatter_(1, pruned, 0.0)


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    names = prunable_names(model)
    return {name: param == 0 for name, param in model.named_parameters() if name in names}


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2"])
def test_wanda_matches_sequential_reference(tiny_model, calibration_batch, family):
    walked, reference, one_shot = tiny_model(family), tiny_model(family), tiny_model(family)
    prune_model(walked, adapter_for(walked), "wanda", calibration_batch, target=0.5, batch_size=4, progress=False)
    reference_sequential_wanda(reference, calibration_batch, 0.5, batch_size=4, sequential=True)
    reference_sequential_wanda(one_shot, calibration_batch, 0.5, batch_size=4, sequential=False)
    walked_masks, reference_masks, one_shot_masks = zero_masks(walked), zero_masks(reference), zero_masks(one_shot)
    for name, mask in walked_masks.items():
        assert torch.equal(mask, reference_masks[name]), name
    # not vacuous: later blocks choose differently when they see pruned rather than dense inputs
    assert all(torch.equal(walked_masks[n], one_shot_masks[n]) for n in walked_masks if ".layers.0." in n)
    assert any(not torch.equal(walked_masks[n], one_shot_masks[n]) for n in walked_masks if ".layers.3." in n)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_prunable_linear_hits_its_target_and_nothing_else_changes(tiny_model, calibration_batch, method):
    model = tiny_model("llama")
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    report = prune_model(model, adapter_for(model), method, calibration_batch, target=0.5, progress=False)
    assert len(report.layers) == 4 * 7
    assert all(layer.achieved_sparsity == 0.5 == layer.target_sparsity for layer in report.layers)
    assert report.params_prunable == 4 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64)
    assert report.params_pruned == report.params_prunable // 2 and report.achieved_sparsity == 0.5
    if method == "wanda":
        for name, param in model.named_parameters():
            if name in prunable_names(model):
                assert (param == 0).sum(dim=1).eq(param.shape[1] // 2).all(), name
    untouched = [name for name in before if name not in prunable_names(model)]
    assert any("embed_tokens" in name for name in untouched) and any("norm" in name for name in untouched)
    for name in untouched:
        assert torch.equal(before[name], dict(model.named_parameters())[name]), name
    assert torch.isfinite(model(calibration_batch).logits).all()


def test_sparsegpt_in_the_walk_reconstructs_layers_best_and_takes_its_options(tiny_model):
    """Compare the first attention projection, whose input (the normed embedding) is the same
    whatever the method: SparseGPT's ‖WX − ŴX‖ is the lowest. (On a random-init model the logits
    need not follow; on SmolLM2 SparseGPT's held-out loss is lower than Wanda's.)"""
    calibration_batch = torch.randint(0, 128, (16, 32), generator=torch.Generator().manual_seed(3))
    dense = tiny_model("llama")
    with torch.no_grad():
        x = dense.model.embed_tokens(calibration_batch)
        x = dense.model.layers[0].input_layernorm(x).reshape(-1, 64)
    weight = dense.model.layers[0].self_attn.q_proj.weight
    errors, pruned = {}, {}
    for method, options in (("magnitude", None), ("wanda", None), ("sparsegpt", None), ("sparsegpt", {"blocksize": 16})):
        model = tiny_model("llama")
        prune_model(model, adapter_for(model), method, calibration_batch, target=0.5, batch_size=8, progress=False, options=options)
        key = (method, str(options))
        pruned[key] = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
        errors[key] = ((weight - pruned[key]) @ x.T).norm().item()
        assert torch.isfinite(model(calibration_batch).logits).all()
    assert errors["sparsegpt", "None"] < min(errors["wanda", "None"], errors["magnitude", "None"])
    assert not torch.equal(pruned["sparsegpt", "{'blocksize': 16}"], pruned["sparsegpt", "None"])  # the option reached the kernel


def test_non_uniform_block_sparsity(tiny_model, calibration_batch):
    model = tiny_model("llama")
    targets = [0.1, 0.3, 0.5, 0.7]
    report = prune_model(model, adapter_for(model), "wanda", calibration_batch, block_sparsity={"language": targets}, progress=False)
    for layer in report.layers:
        in_features = 128 if layer.layer.endswith("down_proj") else 64
        assert layer.target_sparsity == targets[layer.block]
        assert layer.achieved_sparsity == int(in_features * targets[layer.block]) / in_features, layer.layer


def test_n_m_pattern_holds_in_every_group(tiny_model, calibration_batch):
    model = tiny_model("qwen3")
    report = prune_model(model, adapter_for(model), "wanda", calibration_batch, n_m="2:4", progress=False)
    assert {layer.target_sparsity for layer in report.layers} == {0.5}
    for name, param in model.named_parameters():
        if name in prunable_names(model):
            assert (param == 0).reshape(param.shape[0], -1, 4).sum(dim=-1).eq(2).all(), name


def test_magnitude_needs_no_calibration_and_no_forward(tiny_model):
    model = tiny_model("llama")

    def fail(*args, **kwargs):
        raise AssertionError("magnitude pruning ran a forward pass")

    model.register_forward_pre_hook(fail)
    report = prune_model(model, adapter_for(model), "magnitude", None, target=0.5, progress=False)
    assert report.achieved_sparsity == 0.5


def test_restores_training_mode(tiny_model, calibration_batch):
    model = tiny_model("llama").train()
    prune_model(model, adapter_for(model), "wanda", calibration_batch, target=0.5, progress=False)
    assert model.training


def test_sparsity_survives_a_checkpoint_round_trip(tiny_model, calibration_batch, tmp_path):
    model = tiny_model("llama")
    report = prune_model(model, adapter_for(model), "wanda", calibration_batch, target=0.5, progress=False)
    reloaded, _ = load_model(save_checkpoint(model, None, tmp_path / "pruned"), ModelSpec(source=str(tmp_path / "pruned")))
    assert layer_sparsity(reloaded, adapter_for(reloaded)) == {layer.layer: layer.achieved_sparsity for layer in report.layers}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method_name="sparsegpt2", target=0.5), ConfigError, "known: magnitude, sparsegpt, wanda"),
        (dict(method_name="wanda", target=0.5, calibration=None), ValueError, "needs calibration"),
        (dict(method_name="wanda"), ValueError, "give `target`"),
        (dict(method_name="wanda", n_m="2:4", block_sparsity={"language": [0.5] * 4}), ValueError, "not both"),
        (dict(method_name="wanda", n_m="2:4", target=0.3), ValueError, "target=0.3"),
        (dict(method_name="wanda", block_sparsity={"language": [0.5] * 3}), ValueError, "3 entries for 4 blocks"),
        (dict(method_name="wanda", block_sparsity={"language": [0.5] * 3 + [1.0]}), ValueError, r"\[0, 1\)"),
        (dict(method_name="wanda", target=0.5, block_sparsity={"vision": [0.5]}), ValueError, "vision"),
        (dict(method_name="wanda", target=0.5, modality_options={"visual": {}}), ValueError, "'visual'"),
    ],
)
def test_rejects_bad_arguments_before_pruning(tiny_model, calibration_batch, kwargs, error, match):
    model = tiny_model("llama")
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    kwargs.setdefault("calibration", calibration_batch)
    with pytest.raises(error, match=match):
        prune_model(model, adapter_for(model), progress=False, **kwargs)
    assert all(torch.equal(before[name], param) for name, param in model.named_parameters())


def walked_statistics(model: nn.Module, statistic: str, calibration, exclude_padding: bool) -> dict[tuple, torch.Tensor]:
    """(modality, block, linear) -> the statistic the walk hands the pruner, on the dense model."""
    gathered = {}

    def record(group, index, linears, statistics):
        gathered.update({(group.modality, index, name): value.clone() for name, value in statistics.items()})

    walk_blocks(model, adapter_for(model), statistic, calibration, record, progress=False, exclude_padding=exclude_padding)
    return gathered


def assert_same_statistics(got: dict, expected: dict, same: bool = True) -> None:
    assert got.keys() == expected.keys()
    close = [torch.allclose(got[key], expected[key], rtol=1e-4, atol=1e-6) for key in got]
    assert all(close) if same else not any(close)


@pytest.mark.parametrize("statistic", ["input_sq_norm", "hessian"])
def test_padded_positions_left_out_give_the_statistic_of_the_batch_without_them(tiny_model, statistic):
    """Row 1 holds 7 tokens and 5 of padding (right-padded, as causal attention keeps the real tokens' states)."""
    model = tiny_model("llama")
    ids = torch.randint(1, 128, (2, 12), generator=torch.Generator().manual_seed(5))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 7:] = 0
    padded = [{"input_ids": ids.masked_fill(attention_mask == 0, 0), "attention_mask": attention_mask}]
    unpadded = [{"input_ids": ids[:1]}, {"input_ids": ids[1:, :7]}]
    expected = walked_statistics(model, statistic, unpadded, exclude_padding=False)
    assert_same_statistics(walked_statistics(model, statistic, padded, exclude_padding=True), expected)
    assert_same_statistics(walked_statistics(model, statistic, padded, exclude_padding=False), expected, same=False)


def test_padding_exclusion_reaches_the_pruner(tiny_model):
    ids = torch.randint(1, 128, (4, 16), generator=torch.Generator().manual_seed(6))
    attention_mask = torch.ones_like(ids)
    attention_mask[:, 6:] = 0  # most positions padding: the statistics, and so the masks, change
    padded = [{"input_ids": ids.masked_fill(attention_mask == 0, 0), "attention_mask": attention_mask}]
    masks = {}
    for exclude_padding in (False, True):
        model = tiny_model("llama")
        prune_model(model, adapter_for(model), "wanda", padded, target=0.5, progress=False, exclude_padding=exclude_padding)
        masks[exclude_padding] = zero_masks(model)
    reference = tiny_model("llama")
    prune_model(reference, adapter_for(reference), "wanda", [{"input_ids": ids[:, :6]}], target=0.5, progress=False)
    assert all(torch.equal(masks[True][name], mask) for name, mask in zero_masks(reference).items())
    assert not all(torch.equal(masks[False][name], mask) for name, mask in zero_masks(reference).items())


def test_kept_tokens_select_the_unpadded_positions_of_either_layout():
    inputs = torch.arange(12.0).reshape(2, 3, 2)  # [batch, seq, features]
    token_mask = torch.tensor([[True, True, False], [True, False, False]])
    expected = torch.tensor([[0.0, 1.0], [2.0, 3.0], [6.0, 7.0]])
    assert torch.equal(kept_tokens(inputs, token_mask), expected)
    assert torch.equal(kept_tokens(inputs.reshape(6, 2), token_mask), expected)  # flattened, as OPT's MLP sees it
    with pytest.raises(AdapterError, match="cannot tell which rows are padding"):
        kept_tokens(torch.zeros(3, 2, 2), token_mask)


class PrependsAToken(nn.Module):
    """One linear block fed the embedded ids with one more position in front: the mask no longer lines up."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(8, 4)
        self.layers = nn.ModuleList([nn.Linear(4, 4)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = self.embed(input_ids)
        return self.layers[0](torch.cat([hidden_states[:, :1], hidden_states], dim=1))


def test_padding_that_cannot_be_lined_up_with_the_blocks_positions_is_refused():
    adapter = Adapter(family="test", model_types=(), groups=(BlockGroup("language", "layers", ("",)),))
    calibration = [{"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}]
    with pytest.raises(AdapterError, match=r"\(2, 4\) but the batch's attention_mask is \(2, 3\)"):
        walk_blocks(PrependsAToken(), adapter, "input_sq_norm", calibration, lambda *args: None, progress=False, exclude_padding=True)
    walk_blocks(PrependsAToken(), adapter, "input_sq_norm", calibration, lambda *args: None, progress=False)  # counted: no need to line up


@pytest.mark.e2e
def test_wanda_2_4_on_packaged_smollm2(smollm2_checkpoint):
    from pruning.calibration import calibration_ids

    model, tokenizer = load_model(smollm2_checkpoint, ModelSpec(source=str(smollm2_checkpoint)))
    text = (
        "Pruning removes weights from a trained network. Wanda scores each weight by its magnitude "
        "times the norm of the input feature it multiplies, and compares weights within each output row. "
    ) * 8
    ids = calibration_ids([text, text], tokenizer, n_samples=4, seq_len=32, seed=0)
    # the dequantized Q4_1 weights hold a few exact zeros already; a group may keep one of them
    dense_zeros = layer_sparsity(model, adapter_for(model))
    report = prune_model(model, adapter_for(model), "wanda", ids, n_m="2:4", batch_size=4, progress=False)
    assert len(report.layers) == 30 * 7
    for layer in report.layers:
        assert 0.5 <= layer.achieved_sparsity <= 0.5 + dense_zeros[layer.layer], layer.layer
    names = {f"{layer.layer}.weight" for layer in report.layers}
    for name, param in model.named_parameters():
        if name in names:
            assert (param != 0).reshape(param.shape[0], -1, 4).sum(dim=-1).le(2).all(), name
    with torch.no_grad():
        assert torch.isfinite(model(ids[:1]).logits).all()
