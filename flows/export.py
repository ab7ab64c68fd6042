"""`prunebench export RUN DIR`: the model a recorded run evaluated (pruned, layer-dropped or finetuned), as a
self-contained checkpoint directory: weights, config, tokenizer or processor, and a README.md model card.

Compressed (compressed-tensors' sparse format, read by `pruning.models.sources.load_model`) by default;
`dense=True` writes plain safetensors that transformers' `from_pretrained` loads directly. Written into a
temporary sibling and renamed into place, so DIR is whole or absent.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from pruning.errors import PrunebenchError
from pruning.files import MANIFEST
from pruning.models.compressed import stored_format
from pruning.models.sources import checkpoint_problem, load_model, save_checkpoint
from pruning.specs import ModelSpec
from reports.model_card import model_card
from reports.records import RunRecord
from reports.regressions import find_run
from reports.runs import manifest
from reports.store import ResultStore


def rerun_command(run: RunRecord, database: Path) -> str:
    """How to recompute a run: its config, where `prunebench prune` wrote it (beside the database), else by name."""
    config = Path(database).parent / f"{run.experiment}.yaml"
    return f"`prunebench run {config}`" if config.is_file() else f"`prunebench run CONFIG` with the config of experiment {run.experiment!r}"


def run_checkpoint(run: RunRecord, database: Path) -> Path:
    """The run's checkpoint directory, whole; else one line saying what is wrong and how to rebuild it."""
    rebuild = f"re-run its config to rebuild it: {rerun_command(run, database)}"
    if run.checkpoint is None:
        raise PrunebenchError(f"run {run.run_id} recorded no checkpoint (it was recorded before schema 8); {rebuild}")
    path = Path(run.checkpoint)
    if not path.is_dir():
        if run.checkpoint_kept is False:
            raise PrunebenchError(f"run {run.run_id}'s checkpoint {path} was not kept (its config's output.keep_checkpoints); "
                                  f"re-run its config with output.keep_checkpoints: last to rebuild it: {rerun_command(run, database)}")  # fmt: skip
        raise PrunebenchError(f"run {run.run_id}'s checkpoint {path} is gone (deleted); {rebuild}")
    # a checkpoint a stage computed has a manifest to check it by; a dense run's is its model's own files
    problem = checkpoint_problem(path) if (path / MANIFEST).is_file() else None
    if problem is not None:
        raise PrunebenchError(f"run {run.run_id}'s checkpoint is unusable: {problem}; {rebuild}")
    return path


def export_run(store: ResultStore, run_id: str, dest: Path, *, dense: bool = False) -> Path:
    """Write run `run_id`'s checkpoint to `dest` (new, or an empty directory) with its model card; returns `dest`."""
    run = find_run(store.runs(), run_id)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PrunebenchError(f"{dest} exists and is not an empty directory; export into a new or empty one")
    source = run_checkpoint(run, Path(store.path))
    written = manifest(str(source)) or {}
    model, preprocessor = load_model(source, ModelSpec(source=str(source), dtype=run.model_dtype or "float32"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.export-{uuid.uuid4().hex[:8]}"
    try:
        save_checkpoint(model, preprocessor, tmp, extra={**written, "exported_from": run.run_id}, compress=not dense)
        architecture = (json.loads((tmp / "config.json").read_text()).get("architectures") or [None])[0]
        card = model_card(run, store.results(run.run_id), written, storage=stored_format(tmp), architecture=architecture,
                          run_command=rerun_command(run, Path(store.path)))  # fmt: skip
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp.parent / f".{tmp.name}.lock").unlink(missing_ok=True)  # save_checkpoint's lock file beside it
    return dest
