import torch
from torch import nn

from pruning.local.statistics import InputSqNorm


def test_input_sq_norm_sums_squares_over_every_token_of_every_batch():
    statistic = InputSqNorm(nn.Linear(3, 2))
    statistic.update(torch.tensor([[[1.0, 2.0, 0.0], [1.0, 0.0, -1.0]]]))  # [batch, seq, features]
    statistic.update(torch.tensor([[3.0, 0.0, 2.0]]))
    assert statistic.result().tolist() == [11.0, 4.0, 5.0]


def test_accumulates_in_float32_for_bfloat16_inputs():
    statistic = InputSqNorm(nn.Linear(1, 1))
    for _ in range(1000):  # bf16 could not represent the running sum 257, 258, ...
        statistic.update(torch.ones(1, 1, dtype=torch.bfloat16))
    assert statistic.result().dtype == torch.float32 and statistic.result().item() == 1000.0
