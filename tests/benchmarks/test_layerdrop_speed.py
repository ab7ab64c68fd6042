"""benchmarks/layerdrop_speed.py: its speedup arithmetic on hand-made timings, and one tiny run end to end."""

from __future__ import annotations

import math
import re

import pytest
import torch


@pytest.fixture
def layerdrop_speed(benchmark_script):
    return benchmark_script("layerdrop_speed")


def test_rest_is_extrapolated_from_the_layers_kept(layerdrop_speed):
    # 8 layers of 10 ms on 20 ms of rest: dense 100 ms; layer 0 alone kept: 30 ms
    assert layerdrop_speed.rest_ms(dense_ms=100.0, kept_ms=30.0, n_layers=8, n_kept=1) == pytest.approx(20.0)
    # two layers kept (a protected one besides layer 0): 40 ms
    assert layerdrop_speed.rest_ms(dense_ms=100.0, kept_ms=40.0, n_layers=8, n_kept=2) == pytest.approx(20.0)


def test_an_ideal_drop_reaches_the_ideal_and_amdahls_bound(layerdrop_speed):
    # dropping 2 of 8 layers of 10 ms leaves 20 + 60 = 80 ms
    speedup = layerdrop_speed.Speedup(dense_ms=100.0, rest_ms=20.0, dropped_ms=80.0, n_layers=8, n_drop=2)
    assert speedup.decoder_share == pytest.approx(0.8)
    assert speedup.decoder == pytest.approx(80 / 60)
    assert speedup.decoder_ideal == pytest.approx(8 / 6)
    assert speedup.share_of_ideal == pytest.approx(1.0)
    assert speedup.end_to_end == pytest.approx(1.25)
    assert speedup.end_to_end_ideal == pytest.approx(1 / (0.2 + 0.8 * 6 / 8))  # = 1.25


def test_a_slow_drop_falls_short_of_the_ideal(layerdrop_speed):
    # the dropped model's decoder takes 70 ms, not 60: 80/70 of an ideal 8/6
    speedup = layerdrop_speed.Speedup(dense_ms=100.0, rest_ms=20.0, dropped_ms=90.0, n_layers=8, n_drop=2)
    assert speedup.share_of_ideal == pytest.approx((80 / 70) / (8 / 6))
    assert speedup.end_to_end < speedup.end_to_end_ideal


def test_drop_shape_drops_the_last_layers_and_keeps_layer_0(layerdrop_speed):
    from transformers import LlamaConfig, LlamaForCausalLM

    from pruning.models.adapters import adapter_for

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=2, num_key_value_heads=1, vocab_size=64)
    model = LlamaForCausalLM(config).eval()
    shape = layerdrop_speed.drop_shape(model, adapter_for(model), drop_ratio=0.5)
    assert (shape.n_layers, shape.dropped, shape.kept_for_rest) == (5, (3, 4), (0,))


def test_a_tiny_run_prints_every_row(layerdrop_speed, capsys):
    layerdrop_speed.main([
        "--models", "shape", "--shape", "smollm2-135m", "--layers", "4", "--drop-ratio", "0.5",
        "--seq-len", "8", "--new-tokens", "3", "--repeats", "2", "--warmup", "1", "--n-samples", "2", "--batch-size", "2",
        "--finetune-steps", "2", "--finetune-batch", "1", "--finetune-layer", "0", "--threads", "1", "--same-process",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "drop K = 2 (rho = 0.5): layers [2, 3]" in out
    for row in ("prefill 8", "decode / token", "redundancy, 2 x 8 tokens", "finetune layer 0,", "finetune layers 0,1,", "per trained layer"):
        assert row in out, row
    shares = re.findall(r"(prefill|decode)\s+(-?[\d.]+)%", out.rsplit("goal", 1)[1])
    assert [phase for phase, _ in shares] == ["prefill", "decode"]
    assert all(math.isfinite(float(share)) for _, share in shares)
