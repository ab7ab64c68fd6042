"""INTERLACE's finetune: only the chosen layers move, masks survive, accumulation equals one big
batch, the schedule is warmup + cosine, the loss counts only supervised tokens, bad input fails early."""

from __future__ import annotations

import math

import pytest
import torch

from pruning.finetune import finetune, layer_prefixes
from pruning.models.adapters import adapter_for

VOCAB = 128  # tests/pruning/conftest.py's tiny decoders
LAYER_1 = "model.layers.1."


def _rows(n: int, lengths=(12,), seed: int = 1) -> list[dict]:
    """n one-row examples of random token ids, lengths cycling through `lengths`."""
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, VOCAB, (1, lengths[i % len(lengths)]), generator=generator)} for i in range(n)]


def _state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _run(model, rows, trainable=(LAYER_1,), **settings):
    settings = {"lr": 1e-3, "warmup_ratio": 0.0, "effective_batch": 2, "micro_batch_size": 1, "progress": False, **settings}
    return finetune(model, rows, trainable, **settings)


def test_only_the_trainable_layer_changes_and_flags_and_modes_are_restored(tiny_model):
    model = tiny_model("llama")
    model.model.embed_tokens.weight.requires_grad_(False)  # a caller's own flag, restored as it was
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    before = _state(model)
    report = _run(model, _rows(6, lengths=(12, 9)))
    after = model.state_dict()
    for name in before:
        if name.startswith(LAYER_1):
            assert not torch.equal(before[name], after[name]), name
        else:
            assert torch.equal(before[name], after[name]), name
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(module.training for module in model.modules())  # built in eval mode, left in eval mode
    layer_1_size = sum(p.numel() for name, p in model.named_parameters() if name.startswith(LAYER_1))
    assert report.trainable_params == layer_1_size
    assert report.steps == 3 and report.examples == 6
    assert report.tokens == 3 * 11 + 3 * 8  # next-token targets: length - 1 per row


def test_prefix_matches_at_a_dot_boundary_only(tiny_model):
    """"model.layers.1" is layer 1, never layers 10-19 (here: a 12-layer model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, num_hidden_layers=12, num_attention_heads=2, intermediate_size=32, vocab_size=VOCAB))
    before = _state(model)
    _run(model, _rows(2), trainable=["model.layers.1"])
    after = model.state_dict()
    changed = {name.split(".")[2] for name in before if name.startswith("model.layers.") and not torch.equal(before[name], after[name])}
    assert changed == {"1"}


def test_layer_prefixes_name_the_adapters_blocks(tiny_model):
    model = tiny_model("llama")
    assert layer_prefixes(adapter_for(model), [3, 1]) == ["model.layers.1.", "model.layers.3."]


def test_pruned_weights_stay_exactly_zero(tiny_model):
    model = tiny_model("llama")
    linears = [module for name, module in model.named_modules() if name.startswith(LAYER_1) and isinstance(module, torch.nn.Linear)]
    masks = []
    with torch.no_grad():
        for linear in linears:
            mask = torch.rand(linear.weight.shape, generator=torch.Generator().manual_seed(0)) < 0.5
            linear.weight[mask] = 0
            masks.append(mask)
    before = [linear.weight.detach().clone() for linear in linears]
    report = _run(model, _rows(6), weight_decay=0.1)
    for linear, mask, weight in zip(linears, masks, before):
        assert torch.all(linear.weight[mask] == 0)
        assert torch.all(linear.weight[~mask] != weight[~mask])  # every kept weight moved
    assert report.kept_zeros == sum(int(mask.sum()) for mask in masks)


def test_without_keep_masks_the_zeros_fill_in(tiny_model):
    """The control for the test above: the mask is the reason the zeros stay."""
    model = tiny_model("llama")
    weight = model.model.layers[1].mlp.up_proj.weight
    with torch.no_grad():
        weight[:, ::2] = 0
    report = _run(model, _rows(6), keep_masks=False)
    assert (weight[:, ::2] != 0).float().mean() > 0.9 and report.kept_zeros == 0


def _layer_1_update(state: dict, start: dict) -> torch.Tensor:
    return torch.cat([(state[n].float() - start[n].float()).flatten() for n in start if n.startswith(LAYER_1)])


def _bf16_run_against_fp32(tiny_model, **settings):
    """The same seeded model and rows trained in fp32 and in bf16: (bf16 report, bf16 model, its start,
    share of layer 1's bf16 weights that moved, cosine of its update with the fp32 run's)."""
    rows = _rows(40)
    fp32 = tiny_model("llama")
    start = _state(fp32)
    assert _run(fp32, rows, lr=3e-5, max_grad_norm=None).master_params == 0
    bf16 = tiny_model("llama").to(torch.bfloat16)  # the same seeded weights, rounded
    bf16_start = _state(bf16)
    report = _run(bf16, rows, lr=3e-5, max_grad_norm=None, **settings)
    update = _layer_1_update(bf16.state_dict(), bf16_start)
    cosine = float(torch.nn.functional.cosine_similarity(update, _layer_1_update(fp32.state_dict(), start), dim=0))
    return report, bf16, bf16_start, float((update != 0).float().mean()), cosine


def test_bf16_weights_learn_through_fp32_masters_as_fp32_weights_do(tiny_model):
    """AdamW at lr 3e-5 moves a weight by at most ~3e-5 a step, under half of bf16's resolution near
    0.02 (~1.2e-4): stepped in bf16 most updates round away; through fp32 copies they add up over the
    20 steps, as in an fp32 run (measured: 73% moved, cosine 0.95 with fp32's update; in bf16 29%, 0.52)."""
    report, bf16, bf16_start, moved, cosine = _bf16_run_against_fp32(tiny_model)
    layer_1 = [p for name, p in bf16.named_parameters() if name.startswith(LAYER_1)]
    assert report.steps == 20 and report.master_params == report.trainable_params == sum(p.numel() for p in layer_1)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert moved > 0.6, f"only {moved:.0%} of layer 1's bf16 weights moved"
    assert cosine > 0.9
    after = bf16.state_dict()
    assert all(torch.equal(after[n], bf16_start[n]) for n in bf16_start if not n.startswith(LAYER_1))


def test_bf16_weights_stepped_in_bf16_barely_move(tiny_model):
    """The control for the test above: without master copies the same run rounds most updates away."""
    report, _, _, moved, cosine = _bf16_run_against_fp32(tiny_model, master_weights=False)
    assert report.master_params == 0 and moved < 0.4, f"{moved:.0%} of layer 1's bf16 weights moved"
    assert cosine < 0.7


def test_bf16_masks_survive_the_master_copies(tiny_model):
    model = tiny_model("llama").to(torch.bfloat16)
    weight = model.model.layers[1].mlp.up_proj.weight
    with torch.no_grad():
        weight[:, ::2] = 0
    report = _run(model, _rows(6), weight_decay=0.1)
    assert torch.all(weight[:, ::2] == 0) and (weight[:, 1::2] != 0).float().mean() > 0.9
    assert report.kept_zeros == weight[:, ::2].numel() and all(p.grad is None for p in model.parameters())


def test_gradient_accumulation_equals_one_big_batch(tiny_model):
    """One step over 8 rows of different lengths: 4 micro-batches of 2 (padded to their own longest)
    and 1 of 8 (padded to 16) give the same step loss and the same updated weights. Micro-batches
    hold different token counts, so a mean of micro-batch means would differ."""
    rows = _rows(8, lengths=(16, 5, 9, 3, 12, 4, 7, 14))
    runs = []
    for micro_batch_size in (2, 8):
        model = tiny_model("llama").double()
        report = _run(model, rows, trainable=["model.layers.1", "model.layers.2"], effective_batch=8, micro_batch_size=micro_batch_size)
        runs.append((report, _state(model)))
    (accumulated, accumulated_state), (single, single_state) = runs
    assert accumulated.steps == single.steps == 1 and accumulated.tokens == single.tokens == sum(n - 1 for n in (16, 5, 9, 3, 12, 4, 7, 14))
    assert accumulated.first_loss == pytest.approx(single.first_loss, rel=1e-6)
    for name, tensor in single_state.items():
        torch.testing.assert_close(accumulated_state[name], tensor, rtol=0, atol=1e-10, msg=name)
    # the equality is not vacuous: the step moved layer 1 by about lr
    name = "model.layers.1.mlp.up_proj.weight"
    assert (single_state[name] - tiny_model("llama").double().state_dict()[name]).abs().max() > 5e-4


def test_lr_schedule_is_linear_warmup_then_cosine_to_zero(tiny_model):
    """10 steps, warmup ceil(0.2 · 10) = 2: lr · [0, 1/2], then lr · (1 + cos(π (s − 2) / 8)) / 2."""
    seen = []
    report = _run(tiny_model("llama"), _rows(20), lr=1e-4, warmup_ratio=0.2, on_step=lambda step, loss, lr: seen.append((step, lr)))
    expected = [0.0, 0.5e-4] + [1e-4 * (1 + math.cos(math.pi * (s - 2) / 8)) / 2 for s in range(2, 10)]
    assert [step for step, _ in seen] == list(range(1, 11))
    assert [lr for _, lr in seen] == pytest.approx(expected, abs=1e-12)
    assert report.learning_rates == pytest.approx(expected, abs=1e-12) and expected[-1] < 0.04e-4


def test_default_warmup_of_three_percent_rounds_up(tiny_model):
    """100 steps · 0.03 is 3.0000000000000004 in floating point: still 3 warmup steps, not 4."""
    seen = []
    _run(tiny_model("llama"), _rows(100, lengths=(3,)), trainable=["model.norm"], effective_batch=1,
         warmup_ratio=0.03, lr=1.0, on_step=lambda step, loss, lr: seen.append(lr))
    assert seen[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_loss_decreases_when_training_everything_on_a_repeated_batch(tiny_model):
    model = tiny_model("llama")
    report = _run(model, _rows(2) * 12, trainable=["model", "lm_head"], lr=3e-3, effective_batch=2, micro_batch_size=2)
    assert report.steps == 12
    assert report.last_loss < report.losses[6] < report.first_loss  # measured: 4.83, 3.35, 3.01
    assert report.last_loss < 0.7 * report.first_loss
    assert all(p.requires_grad for p in model.parameters())


def test_answer_labels_count_only_answer_tokens(tiny_model):
    """Two image-QA-style rows, labels -100 on the prompt: the first step's loss is the mean
    cross-entropy over the 2 + 5 answer targets of both rows, not the mean of the rows' means."""
    generator = torch.Generator().manual_seed(3)
    rows = []
    for prompt_len, answer_len in ((6, 2), (4, 5)):
        input_ids = torch.randint(0, VOCAB, (1, prompt_len + answer_len), generator=generator)
        labels = input_ids.clone()
        labels[:, :prompt_len] = -100
        rows.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels})
    model = tiny_model("llama")
    per_row = []
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=row["input_ids"]).logits[0, :-1]
            targets = row["labels"][0, 1:]
            scored = targets != -100
            per_row.append(torch.nn.functional.cross_entropy(logits[scored], targets[scored], reduction="none"))
    expected = torch.cat(per_row).mean().item()
    mean_of_means = (per_row[0].mean() + per_row[1].mean()).item() / 2
    assert abs(expected - mean_of_means) > 1e-3  # the two readings differ here
    report = _run(model, rows, effective_batch=2, micro_batch_size=1)
    assert report.tokens == 7
    assert report.first_loss == pytest.approx(expected, rel=1e-5)


def test_vlm_rows_batch_together_and_only_the_language_layer_moves(tiny_vlm):
    model, batches = tiny_vlm("llava")
    rows = []
    for batch in batches:  # split each 2-row batch into rows; answer = the last 3 tokens
        for i in range(batch["input_ids"].shape[0]):
            row = {key: value[i : i + 1] for key, value in batch.items()}
            row["labels"] = torch.full_like(row["input_ids"], -100)
            row["labels"][:, -3:] = row["input_ids"][:, -3:]
            rows.append(row)
    before = _state(model)
    prefix = layer_prefixes(adapter_for(model), [0])
    report = _run(model, rows, trainable=prefix, effective_batch=4, micro_batch_size=2, epochs=2)
    after = model.state_dict()
    assert report.steps == 2 and report.tokens == 2 * len(rows) * 3
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.startswith(prefix[0]) for name in moved)


@pytest.mark.parametrize(
    "rows, trainable, settings, message",
    [
        ([], [LAYER_1], {}, "no examples"),
        (None, [], {}, "no trainable parameters"),
        (None, [LAYER_1, "model.layers.9", "vision"], {}, r"match no parameter of LlamaForCausalLM: \['model.layers.9', 'vision'\]"),
        (None, [LAYER_1], {"effective_batch": 2, "micro_batch_size": 4}, r"effective_batch \(2\) must be ≥ micro_batch_size \(4\)"),
        (None, [LAYER_1], {"lr": 0.0}, "lr must be positive"),
        (None, [LAYER_1], {"lr": -1e-5}, "lr must be positive"),
        (None, [LAYER_1], {"warmup_ratio": 1.0}, "warmup_ratio"),
        (None, [LAYER_1], {"epochs": 0}, "epochs"),
        ([{"input_ids": torch.zeros(5, dtype=torch.long)}], [LAYER_1], {}, r"example 0: input_ids must be .* \[1, seq_len\].*got \(5,\)"),
        ([{"input_ids": torch.zeros(1, 4, dtype=torch.long), "labels": torch.full((1, 4), -100)}], [LAYER_1], {},
         "example 0 has no supervised token"),
    ],
)
def test_bad_input_fails_before_training(tiny_model, rows, trainable, settings, message):
    model = tiny_model("llama")
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        finetune(model, _rows(2) if rows is None else rows, trainable, progress=False, **settings)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_a_single_string_prefix_is_refused(tiny_model):
    with pytest.raises(TypeError, match="wrap it in a list"):
        finetune(tiny_model("llama"), _rows(2), LAYER_1, progress=False)
