"""Shared fixtures. The packaged model and the corpus are cached under <repo>/.prunebench/cache,
the same place real runs use, so each is prepared once per machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / ".prunebench" / "cache"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs two pytest workers (pytest-xdist) on CI's two cores: each worker, and every process its
# tests start, computes on one thread (set before torch is imported), so the two never fight over a core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


@pytest.fixture(scope="session")
def smollm2_checkpoint(cache_dir: Path) -> Path:
    from pruning.models.sources import materialize_packaged

    return materialize_packaged("smollm2-135m", cache_dir / "models")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """`tmp_path_factory.mktemp` for a module's shared work, removed once the module's tests are done
    unless one of them failed. Pytest keeps every directory until the session ends; the flow tests
    write gigabytes of checkpoints (the smoke run alone 1.6 GB) and CI's disk is small."""
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


# A user's own lm-eval task, as the README shows one: multiple choice over a local JSONL (`eval.include_path`).
MC_ITEMS = [
    {"question": "Which animal barks?", "choices": ["dog", "cat", "fish", "owl"], "answer": 0},
    {"question": "What colour is grass?", "choices": ["blue", "green", "red", "black"], "answer": 1},
    {"question": "How many legs has a spider?", "choices": ["two", "four", "six", "eight"], "answer": 3},
    {"question": "Which is a fruit?", "choices": ["stone", "chair", "apple", "river"], "answer": 2},
    {"question": "What falls from clouds?", "choices": ["rain", "sand", "glass", "bread"], "answer": 0},
    {"question": "Where do fish live?", "choices": ["trees", "water", "deserts", "caves"], "answer": 1},
]
MC_SHOTS = [
    {"question": "What is hot?", "choices": ["ice", "fire", "snow", "frost"], "answer": 1},
    {"question": "Which one flies?", "choices": ["bird", "rock", "table", "shoe"], "answer": 0},
]


@pytest.fixture(scope="session")
def user_mc_task() -> Callable[..., Path]:
    """`write(root, n_items=6)`: writes the task `my_mc` and returns its include_path (`root/tasks`); its
    data lie outside it (`root/data`), named by absolute path, with a few-shot split of their own."""

    def write(root: Path, n_items: int = len(MC_ITEMS)) -> Path:
        import json

        import yaml

        tasks, data = root / "tasks", root / "data"
        tasks.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        for name, items in (("items.jsonl", MC_ITEMS[:n_items]), ("shots.jsonl", MC_SHOTS)):
            (data / name).write_text("".join(json.dumps(item) + "\n" for item in items))
        config = {
            "task": "my_mc",
            "dataset_path": "json",
            "dataset_kwargs": {
                "data_files": {"train": str(data / "shots.jsonl"), "test": str(data / "items.jsonl")},
                "cache_dir": str(root / "hf-datasets"),
            },
            "training_split": "train",
            "test_split": "test",
            "fewshot_split": "train",
            "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_choice": "choices",
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        (tasks / "my_mc.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return tasks

    return write


def pytest_collection_modifyitems(config, items):
    """Files with end-to-end tests (whole flows in subprocesses, minutes each) run first, each file's tests in
    their order: with `make test`'s two workers taking a file at a time, the long ones then never start last
    while the other worker idles."""
    heavy = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path not in heavy)
