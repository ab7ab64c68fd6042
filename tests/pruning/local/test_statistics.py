import pytest
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


class ThreeLinears(nn.Module):
    """a and b read the same tensor; c reads it after an in-place change; d is never called."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(3, 2) for _ in range(4))

    def forward(self, x):
        out = self.a(x) + self.b(x)
        x.mul_(2)  # same object, new contents: c must not share a's statistic
        return out + self.c(x)


def gather(block: nn.Module, batches: list[torch.Tensor], statistic: str = "input_sq_norm") -> dict[str, torch.Tensor]:
    from pruning.local.walk import GroupInputs, _gather_statistics

    inputs = GroupInputs(hidden_states=batches, block_args=[[((), {})] * len(batches)], injections=[[None] * len(batches)])
    linears = {name: getattr(block, name) for name in "abcd"}
    with torch.no_grad():
        return _gather_statistics(statistic, block, 0, linears, inputs)


def test_linears_on_the_same_input_share_one_statistic_gathered_once(monkeypatch):
    from pruning.local import statistics

    updates = []

    class Counting(InputSqNorm):
        def update(self, inputs):
            updates.append(inputs)
            super().update(inputs)

    monkeypatch.setitem(statistics.STATISTICS, "input_sq_norm", Counting)
    batches = [torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])]
    result = gather(ThreeLinears(), [batch.clone() for batch in batches])
    assert len(updates) == 4  # a (shared with b) and c, in each of the 2 batches
    assert result["a"] is result["b"]
    assert result["a"].tolist() == [2.0, 5.0, 9.0]
    assert result["c"].tolist() == [8.0, 20.0, 36.0]  # the doubled inputs
    assert result["d"].tolist() == [0.0, 0.0, 0.0]  # never called: the empty statistic, as before
    assert list(result) == ["a", "b", "c", "d"]


def test_a_linear_that_stops_sharing_its_input_is_an_error():
    class Fickle(ThreeLinears):
        def forward(self, x):  # b reads a copy from the second batch on
            return self.a(x) + self.b(x if len(x) == 1 else x.clone())

    from pruning.errors import AdapterError

    with pytest.raises(AdapterError, match="b was first called on the same input as a"):
        gather(Fickle(), [torch.ones(1, 3), torch.ones(2, 3)])


def test_linears_called_twice_share_only_when_every_call_has_the_same_input():
    from pruning.errors import AdapterError

    class Twice(ThreeLinears):  # a and b both see x, then both see y: shared, and both inputs count
        def forward(self, x):
            y = 2 * x
            return self.a(x) + self.b(x) + self.a(y) + self.b(y)

    class Reused(ThreeLinears):  # a sees x and 2x, b only x: not the same statistic
        def forward(self, x):
            return self.a(x) + self.b(x) + self.a(2 * x)

    result = gather(Twice(), [torch.tensor([[1.0, 0.0, 2.0]])])
    assert result["a"] is result["b"] and result["a"].tolist() == [5.0, 0.0, 20.0]
    with pytest.raises(AdapterError, match="b shares the input statistic of a, but one forward called it 1 time"):
        gather(Reused(), [torch.tensor([[1.0, 0.0, 2.0]])])
