"""Wall time and peak memory of a stage: resident set size sampled in a thread, plus CUDA peaks."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import psutil
import torch

GIB = 1024**3


@dataclass
class ResourceUsage:
    wall_s: float = 0.0
    peak_rss_gb: float = 0.0  # peak resident memory of this process while the stage ran
    peak_gpu_gb: float | None = None  # peak CUDA memory allocated by torch, where a GPU is used


@contextmanager
def measure_resources(interval_s: float = 0.05) -> Iterator[ResourceUsage]:
    """Fill a ResourceUsage while the block runs. RSS is sampled, so very short spikes may be missed."""
    usage = ResourceUsage()
    process = psutil.Process()
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval_s):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    # every GPU's peak, not the current one's: a stage on cuda:1 allocates nothing on cuda:0
    gpus = range(torch.cuda.device_count()) if torch.cuda.is_available() else range(0)
    for gpu in gpus:
        torch.cuda.reset_peak_memory_stats(gpu)
    start = time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        usage.wall_s = time.perf_counter() - start
        usage.peak_rss_gb = peak[0] / GIB
        if gpus:
            usage.peak_gpu_gb = max(torch.cuda.max_memory_allocated(gpu) for gpu in gpus) / GIB
