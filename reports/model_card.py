"""The README.md model card `prunebench export` writes beside an exported checkpoint: what was done to
the model (method, its parameters, sparsity or layers removed, calibration data, finetune), what it
scored (the run's results from the database) and how to load it. Pure: records in, markdown out."""

from __future__ import annotations

import json
from collections.abc import Sequence

from reports.records import ResultRow, RunRecord
from reports.tables import number, percent

_AUTO_CLASS = {  # the Auto class that loads a checkpoint of this architecture kind with transformers
    "ForCausalLM": "AutoModelForCausalLM",
    "ForConditionalGeneration": "AutoModelForImageTextToText",
}


def _removed(run: RunRecord) -> str:
    if run.achieved_weight_sparsity is not None:
        target = f" (target {percent(run.target_weight_sparsity)})" if run.target_weight_sparsity is not None else ""
        return f"{percent(run.achieved_weight_sparsity)} of the prunable weights set to zero{target}"
    if run.layers_dropped is not None:
        return f"{run.layers_dropped} of {run.layers_total} decoder layers removed (drop ratio {percent(run.target_drop_ratio or 0)})"
    return "nothing (the dense model)"


def _calibration(manifest: dict | None) -> str:
    calibration = (manifest or {}).get("calibration")
    if not calibration:
        return "not recorded in this checkpoint's manifest (a method that reads none, a layer drop or a finetune: see the run's config)"
    fields = ", ".join(f"{key}={value}" for key, value in calibration.items() if value is not None)
    return f"`{calibration.get('corpus', '?')}` ({fields})"


def _auto_class(architecture: str | None) -> str:
    for suffix, auto in _AUTO_CLASS.items():
        if architecture and architecture.endswith(suffix):
            return auto
    return "AutoModel"


def model_card(run: RunRecord, results: Sequence[ResultRow], manifest: dict | None, *, storage: str | None,
               architecture: str | None, run_command: str) -> str:  # fmt: skip
    """Markdown for the README.md of an exported checkpoint. `storage` is the compressed-tensors sparse format
    its weights are stored in, or None for plain safetensors; `architecture` its config's class name;
    `run_command` how to recompute the run (markdown, e.g. "`prunebench run CONFIG`")."""
    params = json.loads(run.method_params)
    lines = [
        "---",
        "library_name: transformers",
        f"tags: [prunebench, pruned, {run.method}]",
        "---",
        "",
        f"# {run.model}, {run.method_label}",
        "",
        (f"`{run.model_source}` as it is, the dense baseline" if run.method == "dense" else f"`{run.model_source}` pruned with **{run.method}**")
        + f" by prunebench (run `{run.run_id}`, experiment "
        f"`{run.experiment}`, {run.finished_at:%Y-%m-%d %H:%M} UTC, git {run.git_commit}).",
        "",
        "| | |",
        "|---|---|",
        f"| method | {run.method_label} |",
        f"| parameters | `{json.dumps(params, sort_keys=True)}` |",
        f"| removed | {_removed(run)} |",
        f"| parameters zeroed or removed | {run.params_pruned:,} of {run.params_total:,}"
        + (f" ({percent(run.params_pruned_share)})" if run.params_pruned_share is not None else "") + " |",
        f"| calibration data | {_calibration(manifest)} |",
    ]  # fmt: skip
    plan = (manifest or {}).get("drop_plan")
    if plan:
        lines.append(f"| layer-drop plan | `{json.dumps(plan, sort_keys=True)}` |")
    finetune = (manifest or {}).get("finetune")
    if finetune:
        layers = (manifest or {}).get("train_layers")
        lines.append(f"| finetune | `{json.dumps(finetune, sort_keys=True)}`" + (f", decoder layers {layers}" if layers else "") + " |")
    lines += [f"| dtype | {run.model_dtype or '?'} |", f"| stored as | {_storage(storage)} |", ""]
    lines += ["## Scores", ""]
    if results:
        lines += ["| suite | metric | value | stderr | items |", "|---|---|---:|---:|---:|"]
        lines += [f"| {row.suite} | {row.metric}{' (primary)' if row.is_primary else ''} | {number(row.value)} | "
                  f"{'-' if row.stderr is None else number(row.stderr)} | {'-' if row.n_samples is None else row.n_samples} |"
                  for row in results]  # fmt: skip
    else:
        lines.append("No scores recorded for this run.")
    lines += ["", "## Loading", ""] + _loading(storage, _auto_class(architecture))
    lines += ["", f"Recompute this run: {run_command} (its stages are cached; a deleted checkpoint is rebuilt).", ""]
    return "\n".join(lines)


def _storage(storage: str | None) -> str:
    if storage is None:
        return "plain safetensors"
    return f"compressed-tensors `{storage}` (compressed-tensors 0.14.0; lossless)"


def _loading(storage: str | None, auto_class: str) -> list[str]:
    if storage is None:
        return ["Plain safetensors: transformers loads it as it is.", "", "```python",
                f"from transformers import {auto_class}", f'model = {auto_class}.from_pretrained("THIS_DIR")', "```"]  # fmt: skip
    return [
        f"The pruned linear layers are stored in compressed-tensors' `{storage}` format (nonzero values plus a "
        "bitmask; `quantization_config.sparsity_config` in config.json says which). That format's compressor "
        "exists up to compressed-tensors 0.14.0, and transformers' own loader for it needs >= 0.15, so "
        "`from_pretrained` cannot read this directory. prunebench's loader decompresses it:",
        "",
        "```python",
        "from pruning.models.sources import load_model",
        "from pruning.specs import ModelSpec",
        'model, tokenizer = load_model("THIS_DIR", ModelSpec(source="THIS_DIR"))',
        "```",
        "",
        "For plain transformers, export the run with `--dense`: `prunebench export RUN DIR --dense`.",
    ]
