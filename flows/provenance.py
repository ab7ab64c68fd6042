"""Where a result came from: code version, package versions, machine."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

PACKAGES = ("prunebench", "torch", "transformers", "lm_eval", "lmms_eval", "prefect", "duckdb", "pydantic")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the project checkout, with '+dirty' when tracked files differ; 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


@lru_cache(maxsize=1)
def package_versions() -> str:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return json.dumps(versions, sort_keys=True)


def host() -> str:
    return socket.gethostname()


def device_description(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
