"""benchmarks/checkpoint_disk.py on a workdir holding one compressed pruned checkpoint and one plain one."""

from __future__ import annotations

import re

from pruning.models.sources import save_checkpoint
from tests.pruning.conftest import build_tiny


def test_the_table_has_each_checkpoint_its_bytes_now_and_dense(benchmark_script, tmp_path, capsys):
    checkpoint_disk = benchmark_script("checkpoint_disk")
    pruned = build_tiny("llama")
    for module in pruned.model.layers.modules():  # magnitude by hand: half of every linear's weights zeroed
        if hasattr(module, "weight") and module.weight.dim() == 2:
            module.weight.data[:, : module.weight.shape[1] // 2] = 0  # not 2:4: whole groups of 4 zero or kept
    save_checkpoint(pruned, None, tmp_path / "checkpoints" / "tiny" / "magnitude-50pct-abc", compress=True)
    save_checkpoint(build_tiny("llama"), None, tmp_path / "checkpoints" / "tiny" / "dense-abc", compress=True)
    assert checkpoint_disk.main(["--workdir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["checkpoint", "stored", "as", "zeros"]
    (dense,) = [line for line in lines if line.startswith("tiny/dense-abc")]
    (compressed,) = [line for line in lines if line.startswith("tiny/magnitude-50pct-abc")]
    ratios = {line.split()[0]: [float(r) for r in re.findall(r"\s(\d\.\d{3})(?=\s|$)", line)] for line in (dense, compressed)}
    assert " plain " in dense and ratios["tiny/dense-abc"] == [1.0, 1.0]  # the same bytes either way
    assert " sparse-bitmask " in compressed and ratios["tiny/magnitude-50pct-abc"][0] < 0.75
    assert lines[-1].startswith("all")
