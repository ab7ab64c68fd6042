"""A stage's measured cost: the GPU peak is every GPU's (faked here: CI has none), None without CUDA."""

from __future__ import annotations

import torch

from evals.measure import GIB, measure_resources


def test_the_gpu_peak_is_the_largest_over_every_gpu_reset_at_the_start(monkeypatch):
    allocated = {0: 1 * GIB, 1: 3 * GIB}  # a stage on cuda:1 (an offloaded model's execution device)
    reset = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: reset.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: allocated[device])
    with measure_resources() as usage:
        assert reset == [0, 1]
    assert usage.peak_gpu_gb == 3.0


def test_no_gpu_peak_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with measure_resources() as usage:
        pass
    assert usage.peak_gpu_gb is None and usage.peak_rss_gb > 0
