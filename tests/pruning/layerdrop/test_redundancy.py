"""Layer redundancy from block inputs/outputs, checked against hooks on a plain forward; SLEB's removal order."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning.layerdrop.redundancy import LayerRedundancy, SlebOrder, layer_redundancy, sleb_order
from pruning.layerdrop.selection import select_layers
from pruning.layerdrop.surgery import protected_layers
from pruning.models.adapters import adapter_for, blocks


def language_layers(model: nn.Module) -> nn.ModuleList:
    return blocks(model, adapter_for(model).group("language"))


def make_identity(layer: nn.Module) -> None:
    """Zero the residual branches' output projections: the layer then returns its input exactly."""
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


def reference_cosines(
    model: nn.Module, batches: list[dict], states: str = "block_io", counted: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos_mean, cos_last and angle_last written plainly: hooks record every layer's input and the last
    layer's output in the model's own forward (or the forward's own `output_hidden_states`); cosines
    per token, averaged per sequence over its real tokens (every position when `counted`), then over
    sequences; the angle is each sequence's arccos(cos)/pi on its last token, averaged over sequences."""
    layers = language_layers(model)
    recorded: list[torch.Tensor] = []
    handles = [
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: recorded.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
        )
        for layer in layers
    ]
    handles.append(layers[-1].register_forward_hook(lambda module, args, output: recorded.append(output)))
    mean_sum = last_sum = angle_sum = 0
    n_sequences = 0
    try:
        for batch in batches:
            recorded.clear()
            with torch.no_grad():
                outputs = model(**batch, use_cache=False, output_hidden_states=True)
            hidden = recorded if states == "block_io" else outputs.hidden_states
            stacked = torch.stack(list(hidden)).double()  # [L+1, B, T, D]
            cos = F.cosine_similarity(stacked[:, None], stacked[None, :], dim=-1)  # [L+1, L+1, B, T]
            mask = batch.get("attention_mask", torch.ones(stacked.shape[1:3])).double()
            if counted:
                mask = torch.ones_like(mask)
            mean_sum = mean_sum + ((cos * mask).sum(-1) / mask.sum(-1)).sum(-1)
            last = torch.stack([row.nonzero().max() for row in mask])
            last_cos = cos[:, :, torch.arange(len(last)), last]
            last_sum = last_sum + last_cos.sum(-1)
            angle_sum = angle_sum + (torch.arccos(last_cos.clamp(-1, 1)) / torch.pi).sum(-1)
            n_sequences += stacked.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    angle = angle_sum / n_sequences
    return mean_sum / n_sequences, last_sum / n_sequences, angle.fill_diagonal_(0.0)


def assert_matches(redundancy: LayerRedundancy, expected: tuple[torch.Tensor, torch.Tensor, torch.Tensor], atol: float = 2e-6) -> None:
    for name, matrix in zip(("cos_mean", "cos_last"), expected):
        torch.testing.assert_close(torch.tensor(getattr(redundancy, name), dtype=torch.float64), matrix, rtol=0, atol=atol)
    # arccos is steep near 1: a float32 cosine off by 1e-7 there moves the angle by ~1e-4
    torch.testing.assert_close(torch.tensor(redundancy.angle_last, dtype=torch.float64), expected[2], rtol=0, atol=3e-4)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_cosines_match_a_plain_forward_per_sequence(tiny_model, calibration_batch, family):
    model = tiny_model(family)
    redundancy = layer_redundancy(model, adapter_for(model), calibration_batch, batch_size=4, progress=False)
    # batches of 4 and 2 sequences: a mean per batch, not per sequence, would differ
    assert_matches(redundancy, reference_cosines(model, [{"input_ids": calibration_batch}]))
    assert redundancy.n_layers == 4 and redundancy.n_sequences == 6


@pytest.mark.parametrize("family", ["qwen3_vl", "llava"])
def test_vlm_cosines_include_what_the_model_adds_between_layers(tiny_vlm, family):
    """Qwen3-VL adds DeepStack features after layers 0 and 1: h_1, h_2 are what layers 1, 2 receive."""
    model, batches = tiny_vlm(family)
    redundancy = layer_redundancy(model, adapter_for(model), batches, progress=False)
    assert_matches(redundancy, reference_cosines(model, batches))


def test_an_identity_layer_is_fully_redundant(tiny_model, calibration_batch):
    model = tiny_model("llama")
    make_identity(language_layers(model)[2])
    redundancy = layer_redundancy(model, adapter_for(model), calibration_batch, batch_size=4, progress=False)
    assert redundancy.s(1)[2] == pytest.approx(1.0, abs=1e-6)
    assert redundancy.block_influence()[2] == pytest.approx(0.0, abs=1e-6)
    assert redundancy.angular_distance(1)[2] == pytest.approx(0.0, abs=2e-3)  # arccos is steep at 1
    others = [bi for index, bi in enumerate(redundancy.block_influence()) if index != 2]
    assert min(others) > 1e-3
    assert min(d for index, d in enumerate(redundancy.angular_distance(1)) if index != 2) > 0.02
    assert select_layers("shortgpt", 0.25, 4, redundancy=redundancy).drop == (2,)
    assert select_layers("angular", 0.25, 4, redundancy=redundancy).drop == (2,)
    for matrix in (torch.tensor(redundancy.cos_mean), torch.tensor(redundancy.cos_last)):
        assert torch.equal(matrix, matrix.T)
        torch.testing.assert_close(matrix.diagonal(), torch.ones(5, dtype=matrix.dtype), rtol=0, atol=1e-6)


def test_padding_tokens_are_left_out(tiny_model):
    """Right-padded sequences of lengths 10, 16, 6 give what each gives alone; junk pad tokens do not count."""
    model = tiny_model("llama")
    adapter = adapter_for(model)
    generator = torch.Generator().manual_seed(5)
    lengths = [10, 16, 6]
    sequences = [torch.randint(0, 128, (1, n), generator=generator) for n in lengths]
    padded = torch.randint(0, 128, (3, 16), generator=generator)  # junk where the padding is
    mask = torch.zeros(3, 16, dtype=torch.long)
    for row, (sequence, n) in enumerate(zip(sequences, lengths)):
        padded[row, :n] = sequence[0]
        mask[row, :n] = 1
    alone = layer_redundancy(model, adapter, [{"input_ids": sequence} for sequence in sequences], progress=False)
    together = layer_redundancy(model, adapter, [{"input_ids": padded, "attention_mask": mask}], progress=False)
    torch.testing.assert_close(torch.tensor(together.cos_mean), torch.tensor(alone.cos_mean), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(together.cos_last), torch.tensor(alone.cos_last), rtol=0, atol=1e-5)
    unmasked = layer_redundancy(model, adapter, [{"input_ids": padded}], progress=False)
    assert not torch.allclose(torch.tensor(unmasked.cos_mean), torch.tensor(alone.cos_mean), atol=1e-3)
    assert not torch.allclose(torch.tensor(unmasked.cos_last), torch.tensor(alone.cos_last), atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_output_hidden_states_are_the_models_own_tuple_whose_last_entry_is_post_norm(tiny_model, calibration_batch, family):
    """states='output_hidden_states' reads the forward's own tuple (what sramshetty/ShortGPT and INTERLACE's
    get_hidden_states.py read): the same h_0..h_{L-1} as the blocks' inputs, a different h_L (after the final norm)."""
    model = tiny_model(family)
    with torch.no_grad():  # an RMSNorm of constant weight keeps directions; a trained one does not
        model.model.norm.weight.uniform_(0.2, 2.0, generator=torch.Generator().manual_seed(1))
    adapter = adapter_for(model)
    theirs = layer_redundancy(model, adapter, calibration_batch, batch_size=4, progress=False, states="output_hidden_states")
    assert_matches(theirs, reference_cosines(model, [{"input_ids": calibration_batch}], states="output_hidden_states"))
    ours = layer_redundancy(model, adapter, calibration_batch, batch_size=4, progress=False)
    mine, other = torch.tensor(ours.cos_mean), torch.tensor(theirs.cos_mean)
    torch.testing.assert_close(other[:4, :4], mine[:4, :4], rtol=0, atol=1e-6)
    assert (other[:4, 4] - mine[:4, 4]).abs().max() > 1e-3  # the final norm turned h_L


def test_counted_padding_averages_over_every_position(tiny_model):
    """padding='counted' (sramshetty/ShortGPT flattens the padded batch): pad positions count as tokens,
    while the forward still masks them; the last token is the last position."""
    model = tiny_model("llama")
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 128, (3, 16), generator=generator)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[0, 10:] = 0
    mask[2, 6:] = 0
    batches = [{"input_ids": ids, "attention_mask": mask}]
    counted = layer_redundancy(model, adapter_for(model), batches, progress=False, padding="counted")
    assert_matches(counted, reference_cosines(model, batches, counted=True), atol=1e-5)
    masked = layer_redundancy(model, adapter_for(model), batches, progress=False)
    assert_matches(masked, reference_cosines(model, batches), atol=1e-5)
    assert not torch.allclose(torch.tensor(counted.cos_mean), torch.tensor(masked.cos_mean), atol=1e-3)


def test_measurement_options_are_checked(tiny_model, calibration_batch):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="states must be"):
        layer_redundancy(model, adapter_for(model), calibration_batch, progress=False, states="post_norm")
    with pytest.raises(ValueError, match="padding must be"):
        layer_redundancy(model, adapter_for(model), calibration_batch, progress=False, padding="ignored")


def test_redundancy_round_trips_through_json(tiny_model, calibration_batch):
    model = tiny_model("qwen3")
    redundancy = layer_redundancy(model, adapter_for(model), calibration_batch[:2], progress=False)
    assert LayerRedundancy.from_dict(json.loads(json.dumps(redundancy.to_dict()))) == redundancy
    with pytest.raises(ValueError, match="span p must be in 1..4, got 5"):
        redundancy.s(5)


def sharp_model_and_its_own_text(tiny_model, identity: int) -> tuple[nn.Module, torch.Tensor]:
    """A tiny llama with one identity layer, confident logits (lm_head x 20), and 4 greedy continuations
    of its own: on them every real layer's removal raises the NLL, the identity's leaves it unchanged."""
    model = tiny_model("llama")
    make_identity(language_layers(model)[identity])
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
        prompt = torch.randint(0, 128, (4, 2), generator=torch.Generator().manual_seed(0))
        text = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=14, min_new_tokens=14, do_sample=False, pad_token_id=0
        )
    return model, text


def nll_with_identity(model: nn.Module, text: torch.Tensor, skip: list[int]) -> float:
    """Next-token NLL, mean over tokens, with layers `skip` replaced by an identity (written independently)."""
    layers = language_layers(model)
    for index in skip:
        layers[index].forward = lambda hidden_states, *args, **kwargs: hidden_states
    try:
        with torch.no_grad():
            logits = model(input_ids=text, use_cache=False).logits
    finally:
        for index in skip:
            del layers[index].forward
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), text[:, 1:].flatten()))


def test_sleb_removes_the_identity_layer_first_and_re_evaluates_after_each_removal(tiny_model):
    model, text = sharp_model_and_its_own_text(tiny_model, identity=2)
    order = sleb_order(model, adapter_for(model), text, n_drop=2, batch_size=4, progress=False)
    assert order.removed[0] == 2
    assert order.nll[0] == pytest.approx(order.dense_nll, abs=1e-5)
    # the second removal is the best layer to remove *given* that 2 is gone
    second = {candidate: nll_with_identity(model, text, [2, candidate]) for candidate in (0, 1, 3)}
    assert order.removed[1] == min(second, key=second.get)
    assert order.nll[1] == pytest.approx(second[order.removed[1]], abs=1e-4)
    assert order.dense_nll == pytest.approx(nll_with_identity(model, text, []), abs=1e-4)
    assert all("forward" not in vars(layer) for layer in language_layers(model))  # restored
    assert SlebOrder.from_dict(json.loads(json.dumps(order.to_dict()))) == order
    assert select_layers("sleb", 0.25, 4, sleb_order=order.removed).drop == (2,)


def test_sleb_never_tries_the_layers_it_is_told_to_spare(tiny_model):
    """The reference's barriers: with layer 0 (an identity, SLEB's first pick) and layer 3 spared, the
    first removal is the better of 1 and 2, worked out independently."""
    model, text = sharp_model_and_its_own_text(tiny_model, identity=0)
    assert sleb_order(model, adapter_for(model), text, n_drop=1, batch_size=4, progress=False).removed == (0,)
    order = sleb_order(model, adapter_for(model), text, n_drop=2, batch_size=4, progress=False, never=(0, 3))
    first = {candidate: nll_with_identity(model, text, [candidate]) for candidate in (1, 2)}
    assert order.removed[0] == min(first, key=first.get)
    assert set(order.removed) == {1, 2}
    with pytest.raises(ValueError, match="n_drop must be in 1..2"):
        sleb_order(model, adapter_for(model), text, n_drop=3, progress=False, never=(0, 3))


def test_sleb_never_tries_protected_deepstack_layers(tiny_vlm):
    model, batches = tiny_vlm("qwen3_vl")
    adapter = adapter_for(model)
    assert protected_layers(model, adapter) == {0, 1}
    assert sleb_order(model, adapter, batches, n_drop=1, progress=False).removed == (2,)
    with pytest.raises(ValueError, match="n_drop must be in 1..1"):
        sleb_order(model, adapter, batches, n_drop=2, progress=False)


def test_selection_on_measured_qwen3_vl_redundancy_spares_deepstack_layers(tiny_vlm):
    model, batches = tiny_vlm("qwen3_vl")
    adapter = adapter_for(model)
    redundancy = layer_redundancy(model, adapter, batches, progress=False)
    protected = protected_layers(model, adapter)
    for method in ("shortgpt", "angular", "consecutive", "random", "interlace"):
        plan = select_layers(method, 0.34, 3, redundancy=redundancy, protected=protected)
        assert plan.drop == (2,), method


@pytest.mark.parametrize("states", ["block_io", "output_hidden_states"])
def test_an_offloaded_model_gives_the_same_cosines_one_layer_at_a_time(calibration_batch, states, monkeypatch):
    from pruning.models.offload import offload_model
    from tests.pruning.local.test_offload import DeviceLedger, tiny_llama

    model = tiny_llama()
    adapter = adapter_for(model)
    expected = layer_redundancy(model, adapter, calibration_batch, batch_size=4, progress=False, states=states)
    offload_model(model, adapter, "cpu")
    ledger = DeviceLedger(monkeypatch, model)
    offloaded = layer_redundancy(model, adapter, calibration_batch, batch_size=4, progress=False, states=states, execution_device="cpu")
    assert offloaded == expected  # every cosine, bit for bit
    assert ledger.peak_blocks == 1 and ledger.on_device == {}
    assert ledger.onloads > len(language_layers(model))  # each layer came over, once per batch


def test_an_offloaded_model_gives_the_same_sleb_order(monkeypatch):
    from pruning.models.offload import offload_model
    from tests.pruning.local.test_offload import DeviceLedger, tiny_llama

    model = tiny_llama()
    adapter = adapter_for(model)
    ids = torch.randint(0, 128, (4, 12), generator=torch.Generator().manual_seed(3))
    expected = sleb_order(model, adapter, ids, 2, batch_size=2, progress=False)
    offload_model(model, adapter, "cpu")
    ledger = DeviceLedger(monkeypatch, model)
    assert sleb_order(model, adapter, ids, 2, batch_size=2, progress=False, execution_device="cpu") == expected
    assert ledger.peak_blocks == 1 and ledger.on_device == {}
