"""The files a user's own harness tasks (`eval.include_path`) are read from, and one digest of their contents.

An evaluation is cached on its inputs; a task's name says nothing of its items, so the key holds
this digest too: editing a task YAML, its `!function` helpers or the local data it names recomputes
the evaluation. Read here: every `*.yaml`/`*.yml` and `*.py` under each include directory, and the
local files the YAMLs name (`dataset_path`, `dataset_kwargs.data_files`/`data_dir`, `include`),
where the harness reads them (relative names: from the working directory, as `datasets` does, or
beside the YAML). Hub data sets are left out: they are versioned by the Hub, not by these files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from pruning.files import file_digest

TASK_FILE_SUFFIXES = (".yaml", ".yml", ".py")
_GLOB_CHARACTERS = frozenset("*?[")


def task_files_digest(include_paths: Sequence[str | Path]) -> str:
    """SHA-256 (24 hex digits) over the path and contents of every file `task_files` finds."""
    digest = hashlib.sha256()
    for path in task_files(include_paths):
        digest.update(f"{path}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()[:24]


def task_files(include_paths: Sequence[str | Path]) -> list[Path]:
    """The task files under `include_paths` and the local data files their YAMLs name; resolved, sorted, unique."""
    found: set[Path] = set()
    for directory in include_paths:
        for path in sorted(Path(directory).resolve().rglob("*")):
            if path.is_file() and path.suffix in TASK_FILE_SUFFIXES and "__pycache__" not in path.parts:
                found.add(path)
    for config_file in [path for path in found if path.suffix in (".yaml", ".yml")]:
        for name in _named_files(_read_yaml(config_file)):
            found |= set(_local_files(name, config_file.parent))
    return sorted(found)


def _named_files(config: Any) -> Iterator[str]:
    """Every file name a task config names, at any depth (a group YAML holds whole task configs)."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key in ("dataset_path", "data_dir", "include") and isinstance(value, str):
                yield value
            elif key == "data_files":
                yield from _strings(value)
            else:
                yield from _named_files(value)
    elif isinstance(config, list):
        for value in config:
            yield from _named_files(value)


def _strings(value: Any) -> Iterator[str]:
    """`data_files` in each of its shapes: a name, a list of names, {split: name or list}."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for element in value:
            yield from _strings(element)
    elif isinstance(value, dict):
        for element in value.values():
            yield from _strings(element)


def _local_files(name: str, beside: Path) -> list[Path]:
    """The files `name` stands for on this machine (a file, every file of a folder, a glob's matches);
    none for a Hub id or a builder name (`json`)."""
    if "://" in name:  # a URL: not a file of this machine
        return []
    for base in (Path.cwd(), beside):
        candidate = base / name  # an absolute `name` stays itself
        if _GLOB_CHARACTERS & set(name):
            root = Path(candidate.anchor)
            files = [path.resolve() for path in root.glob(str(candidate.relative_to(root))) if path.is_file()]
        elif candidate.is_file():
            files = [candidate.resolve()]
        elif candidate.is_dir():
            files = [path.resolve() for path in candidate.rglob("*") if path.is_file()]
        else:
            files = []
        if files:
            return files
    return []


class _TaskYamlLoader(yaml.SafeLoader):
    """Safe loading of harness YAMLs: their tags (`!function utils.process_docs`) read as the plain value."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None)


def _read_yaml(path: Path) -> Any:
    """A task YAML's contents; one the harness would refuse names nothing here (the harness says why)."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)
    except (yaml.YAMLError, UnicodeDecodeError):
        return None

