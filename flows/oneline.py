"""`prunebench prune MODEL --method M ...`: the experiment config a one-line prune runs. The config goes
through the same validation and the same flow as any other (cached, recorded), so a one-liner is never a
second code path; its `--out` is `prunebench export --dense` of the run (flows.export)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pruning.errors import ConfigError


def oneline_config(
    model: str, method: str, *, sparsity: float | None = None, drop_ratio: float | None = None, fields: list[str] = (),
    calibration: str | None = None, n_samples: int | None = None, seq_len: int | None = None, suites: str = "jargon_ppl",
    limit: int | None = None, dtype: str | None = None, device: str | None = None, database: Path, workdir: Path | None = None,
    cache: Path | None = None, offload: str | None = None, adapter: Path | None = None, trust_remote_code: bool = False,
    include_path: list[Path] = (),
) -> dict:  # fmt: skip
    """The config of one model pruned by one method, beside its dense baseline, as a plain dict (YAML-able)."""
    entry: dict = {"name": method}
    if sparsity is not None:
        entry["sparsity"] = sparsity
    if drop_ratio is not None:
        entry["drop_ratio"] = drop_ratio
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {field!r}: write FIELD=VALUE, e.g. --set blocksize=64")
        try:  # "2:4" stays a pattern (YAML 1.1 reads it as the base-60 number 124)
            entry[key.strip()] = value.strip() if re.fullmatch(r"\s*\d+:\d+\s*", value) else yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {field!r}: {value!r} is not a YAML value") from None
    study: dict = {"model": {"source": model}, "methods": [{"name": "dense"}, entry]}
    study["model"].update({key: value for key, value in (("dtype", dtype), ("device", device), ("offload", offload)) if value is not None})
    if adapter is not None:  # the config is written beside the database: every path it names is absolute
        study["model"]["adapter"] = str(Path(adapter).resolve())
    if trust_remote_code:
        study["model"]["trust_remote_code"] = True
    chosen = {key: value for key, value in (("corpus", calibration), ("n_samples", n_samples), ("seq_len", seq_len)) if value is not None}
    if chosen:
        study["calibration"] = chosen
    study["eval"] = {"suites": [suite.strip() for suite in suites.split(",") if suite.strip()]}
    if limit is not None:
        study["eval"]["limit"] = limit
    if include_path:
        study["eval"]["include_path"] = [str(Path(path).resolve()) for path in include_path]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.removeprefix("packaged:").rstrip("/").split("/")[-1]).strip("-") or "model"
    ratio = "" if sparsity is None and drop_ratio is None else f"-{round(100 * (sparsity if sparsity is not None else drop_ratio))}"
    output = {"database": str(Path(database).resolve())}
    output |= {key: str(Path(folder).resolve()) for key, folder in (("workdir", workdir), ("cache", cache)) if folder is not None}
    return {"name": f"prune-{label}-{method}{ratio}"[:100], "studies": [study], "output": output}
