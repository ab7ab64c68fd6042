"""Experiment configs: YAML in, validated pydantic out, before any model loads.

An experiment is a list of studies; a study is one model, its calibration set, the methods to
apply to it and the suites to evaluate every result on. A bad file fails with one line naming
the file, the field, the value and what was expected.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from pruning.errors import ConfigError
from pruning.specs import CalibrationSpec, MethodSpec, ModelSpec, Spec, distinct_tail, validation_problem


class EvalSpec(Spec):
    """Which suites to run and how; local suite names, the user's own task names (`include_path`), or
    standard lm-eval task names."""

    suites: list[str] = Field(min_length=1)
    batch_size: int = Field(8, gt=0)
    limit: int | None = Field(None, gt=0, description="at most this many documents per suite (smoke runs)")
    max_length: int | None = Field(None, gt=0, description="context window for perplexity; default: the model's")
    # The fields below are left out of the dump at their defaults, so configs without them keep their
    # config hash and their evaluations' cache keys.
    include_path: list[Path] = Field(
        default_factory=list,
        exclude_if=lambda paths: not paths,
        description="directories of your own lm-eval task YAMLs (lmms-eval's for a VLM), whose tasks `suites` may name",
    )
    num_fewshot: int | None = Field(None, ge=0, exclude_if=lambda n: n is None, description="few-shot examples per prompt; default: each task's own")
    apply_chat_template: bool = Field(False, exclude_if=lambda on: not on, description="prompts through the tokenizer's chat template")
    log_samples: bool = Field(
        False,
        exclude_if=lambda on: not on,
        description="write the harness's per-sample log (prompts, responses, per-item metrics) as JSONL under <workdir>/samples",
    )
    # How results are read, not what is computed: left out of the dump when empty, so configs without
    # it keep their config hash and cache keys (`run_bundle` leaves it out of the config hash always).
    primary_metrics: dict[str, str] = Field(
        default_factory=dict,
        exclude_if=lambda chosen: not chosen,
        description="suite -> the metric mean retention averages for it (default: evals.suites.primary)",
    )

    @field_validator("primary_metrics")
    @classmethod
    def _of_evaluated_suites(cls, chosen: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        from evals.suites.primary import check_primary_metrics

        if "suites" in info.data:  # else `suites` itself failed, and says so
            check_primary_metrics(chosen, info.data["suites"])
        return chosen

    @field_validator("include_path", mode="before")
    @classmethod
    def _one_or_more(cls, paths: Any) -> Any:
        return [paths] if isinstance(paths, (str, Path)) else paths

    @field_validator("include_path")
    @classmethod
    def _directories_of_task_files(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.is_dir():
                raise ValueError(f"{str(path)!r} is not a directory (of lm-eval task YAMLs)")  # repr: one line, whatever the name
            if not any(path.rglob("*.yaml")) and not any(path.rglob("*.yml")):
                raise ValueError(f"{str(path)!r} holds no task YAML (*.yaml)")
        return paths

    def evaluated(self) -> "EvalSpec":
        """This spec as far as it decides what is evaluated: `primary_metrics` only says how results are
        read and `log_samples` only what is written beside them, so neither an evaluation's cache key nor
        a run's config hash sees them (the per-sample log's directory is an input of its own)."""
        return self.model_copy(update={"primary_metrics": {}, "log_samples": False})


class StudySpec(Spec):
    model: ModelSpec
    calibration: CalibrationSpec = CalibrationSpec()
    methods: list[MethodSpec] = Field(min_length=1)
    eval: EvalSpec

    @field_validator("methods", mode="before")
    @classmethod
    def _expand_grids(cls, methods: Any) -> Any:
        """An entry with lists for values is a grid: one method per combination."""
        if not isinstance(methods, list):
            return methods
        return [expanded for entry in methods for expanded in expand_grid(entry)]

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, methods: list) -> list:
        """The one thing refused: the identical method (all parameters equal) listed twice."""
        seen: dict[str, int] = {}
        for index, method in enumerate(methods):
            first = seen.setdefault(method.method_id, index)
            if first != index:
                raise ValueError(
                    f"the same method is listed twice (entries {first + 1} and {index + 1} after expanding grids, "
                    f"{method.base_label}, every parameter equal); change a parameter or remove one"
                )
        return methods

    @model_validator(mode="after")
    def _offloading_runs_forwards_only(self) -> "StudySpec":
        """First-order scores need a backward through the whole model at once, which an offloaded model
        (one block at a time on the device) cannot run: refused here rather than after the model loads."""
        if self.model.offload != "none":
            for index, method in enumerate(self.methods):
                scores = getattr(method, "scores", None)
                if scores is not None and scores.kind == "first":
                    raise ValueError(
                        f"methods.{index} ({method.base_label}): first-order scores need the whole model on the device "
                        f"(a backward), but model.offload is {self.model.offload!r}; use score: zeroth, or offload: none"
                    )
        return self


class OutputSpec(Spec):
    database: Path = Path("results/prunebench.duckdb")
    workdir: Path = Path(".prunebench")
    cache: Path | None = Field(None, description="models converted from packages and corpora; default <workdir>/cache")
    compress_checkpoints: bool = Field(True, description="store pruned (and their finetuned) checkpoints in compressed-tensors' sparse format")
    keep_checkpoints: Literal["all", "last", "none"] = Field(
        "last",
        description="which checkpoints a branch leaves under <workdir>/checkpoints: `all` (pruned or dropped, and "
        "finetuned), `last` (the one it evaluated; the one before finetuning is removed), `none` (each removed once its "
        "scores are recorded; a later stage that needs one rebuilds it). The models in the cache are never removed",
    )

    @model_validator(mode="after")
    def _folders_can_be_folders(self) -> "OutputSpec":
        """A workdir or cache that exists as a file, or a database that is a folder, fails here, not after the compute."""
        for name, folder in (("workdir", self.workdir), ("cache", self.cache), ("database's folder", self.database.parent)):
            if folder is not None and folder.exists() and not folder.is_dir():
                raise ValueError(f"{name} {folder} is a file, not a folder")
        if self.database.is_dir():
            raise ValueError(f"database {self.database} is a folder; name a file in it, e.g. {self.database / 'prunebench.duckdb'}")
        return self

    @property
    def cache_dir(self) -> Path:
        """Shared by every experiment that names the same directory; safe to delete (rebuilt on demand)."""
        return self.cache if self.cache is not None else self.workdir / "cache"


class ExperimentConfig(Spec):
    # ASCII: the name goes into Prefect artifact keys, file names and HTML ids
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    studies: list[StudySpec] = Field(min_length=1)
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _label_models(self) -> "ExperimentConfig":
        """Each study's model label: its `name` or the source's last part, plus what tells it apart from
        the experiment's other models of that label (`base/llama-7b` and `chat/llama-7b`; `llama-7b
        (dtype=bfloat16)`). Results are recorded and compared by that label, so two different models
        under one label would be merged: refused, when no label can tell them apart."""
        models = [study.model for study in self.studies]
        labels = distinguishing_model_labels(models)
        seen: dict[str, tuple] = {}
        for index, (model, label) in enumerate(zip(models, labels)):
            other = seen.setdefault(label, (index, model.identity()))
            if other[1] != model.identity():
                raise ValueError(
                    f"studies {other[0] + 1} and {index + 1} are different models ({models[other[0]].source}, "
                    f"{model.source}) that cannot be told apart: both would be recorded as {label!r}; give one a `name`"
                )
            model.labelled(label)
        return self

    @model_validator(mode="after")
    def _label_methods(self) -> "ExperimentConfig":
        """Each method's label: its `id` or its own label, plus the parameters that tell it apart from the
        experiment's other methods of that label (two SparseGPT block sizes read `sparsegpt 50% (blocksize=32)`
        and `sparsegpt 50% (blocksize=128)`)."""
        methods = [method for study in self.studies for method in study.methods]
        for method, label in zip(methods, distinguishing_labels(methods)):
            method.labelled(label)
        return self


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML; `overrides` replace top-level `output` fields."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line: the reader's errors span two
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
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
    more = f" [and {len(problems) - 1} more problem(s)]" if len(problems) > 1 else ""
    return f"{validation_problem(problems[0])}{more}"


def expand_grid(entry: Any) -> list[Any]:
    """A method entry whose values include lists -> one entry per combination, in order (nested mappings
    such as `finetune` expand too): `{name: owl, sparsity: [0.5, 0.7], lam: [0.04, 0.08]}` gives four.
    No method parameter is a list, so a list always means a grid."""
    if not isinstance(entry, dict):
        return [entry]
    axes = []
    for key, value in entry.items():
        if isinstance(value, list):
            if not value:
                raise ValueError(f"{key}: an empty list (a grid of no values) gives no method to run")
            options = value
        else:
            options = expand_grid(value) if isinstance(value, dict) else [value]
        axes.append([(key, option) for option in options])
    return [dict(combination) for combination in itertools.product(*axes)]


def distinguishing_labels(methods: Sequence) -> list[str]:
    """For each method, its `id` or own label, and where other methods (of other parameters) share that
    label, the parameters whose values differ among them, in the spec's field order."""
    def name(method) -> str:
        return method.id or method.base_label

    flat = {method.method_id: _flat(method.canonical_params()) for method in methods}
    groups: dict[str, list[str]] = {}
    for method in methods:
        members = groups.setdefault(name(method), [])
        if method.method_id not in members:
            members.append(method.method_id)
    labels = []
    for method in methods:
        members = groups[name(method)]
        keys = dict.fromkeys(key for member in members for key in flat[member])  # ordered union
        differing = [key for key in keys if len({repr(flat[member].get(key)) for member in members}) > 1]
        shown = ", ".join(f"{key}={_shown(flat[method.method_id].get(key))}" for key in differing)
        labels.append(f"{name(method)} ({shown})" if shown else name(method))
    return labels


def distinguishing_model_labels(models: Sequence[ModelSpec]) -> list[str]:
    """For each model, its `name` or the source's last part; where different models (source, dtype,
    device, adapter) share that, the shortest end of their paths that differs (the name kept in front
    when given) and the dtype, device and adapter family where those differ."""
    def name(model: ModelSpec) -> str:
        return model.name or model.base_label

    groups: dict[str, list[tuple]] = {}
    for model in models:
        members = groups.setdefault(name(model), [])
        if model.identity() not in members:
            members.append(model.identity())
    labels = []
    for model in models:
        members = groups[name(model)]
        if len(members) == 1:
            labels.append(name(model))
            continue
        source, dtype, device, _ = model.identity()
        label, shown = name(model), []
        if len({member[0] for member in members}) > 1:
            tail = distinct_tail(source, [member[0] for member in members])
            label, shown = (label, [tail]) if model.name else (tail, [])
        adapter = model.adapter.family if model.adapter is not None else "built-in"
        shown += [f"{key}={value}" for key, value, position in (("dtype", dtype, 1), ("device", device, 2), ("adapter", adapter, 3))
                  if len({member[position] for member in members}) > 1]  # fmt: skip
        labels.append(f"{label} ({', '.join(shown)})" if shown else label)
    return labels


def _flat(params: dict, prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted keys: {"finetune": {"lr": 1e-5}} -> {"finetune.lr": 1e-5}."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def spec_hash(*specs: Spec | dict | str) -> str:
    """A stable short hash of specs (their JSON with sorted keys)."""
    payload = [s.model_dump(mode="json") if isinstance(s, Spec) else s for s in specs]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
