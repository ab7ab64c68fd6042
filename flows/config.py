"""Experiment configs: YAML in, validated pydantic out, before any model loads.

An experiment is a list of studies; a study is one model, its calibration set, the methods to
apply to it and the suites to evaluate every result on. A bad file fails with one line naming
the file, the field, the value and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from pruning.errors import ConfigError
from pruning.specs import CalibrationSpec, MethodSpec, ModelSpec, Spec


class EvalSpec(Spec):
    """Which suites to run and how; local suite names or standard lm-eval task names."""

    suites: list[str] = Field(min_length=1)
    batch_size: int = Field(8, gt=0)
    limit: int | None = Field(None, gt=0, description="at most this many documents per suite (smoke runs)")
    max_length: int | None = Field(None, gt=0, description="context window for perplexity; default: the model's")


class StudySpec(Spec):
    model: ModelSpec
    calibration: CalibrationSpec = CalibrationSpec()
    methods: list[MethodSpec] = Field(min_length=1)
    eval: EvalSpec

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, methods: list) -> list:
        labels = [method.label for method in methods]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"method listed twice: {', '.join(repeated)}")
        return methods


class OutputSpec(Spec):
    database: Path = Path("results/prunebench.duckdb")
    workdir: Path = Path(".prunebench")
    cache: Path | None = Field(None, description="models converted from packages and corpora; default <workdir>/cache")

    @property
    def cache_dir(self) -> Path:
        """Shared by every experiment that names the same directory; safe to delete (rebuilt on demand)."""
        return self.cache if self.cache is not None else self.workdir / "cache"


class ExperimentConfig(Spec):
    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    description: str = ""
    studies: list[StudySpec] = Field(min_length=1)
    output: OutputSpec = OutputSpec()


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML; `overrides` replace top-level `output` fields."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    if overrides:
        raw.setdefault("output", {}).update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe_validation_error(err)}") from None


def describe_validation_error(err: ValidationError) -> str:
    """The first problem as 'field.path: message (got value)'; the count of others if any."""
    problems = err.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    more = f" [and {len(problems) - 1} more problem(s)]" if len(problems) > 1 else ""
    return f"{where}: {first['msg']}{shown}{more}"


def spec_hash(*specs: Spec | dict | str) -> str:
    """A stable short hash of specs (their JSON with sorted keys)."""
    payload = [s.model_dump(mode="json") if isinstance(s, Spec) else s for s in specs]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
