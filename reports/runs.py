"""`prunebench runs`: every recorded run with what it scored and where its checkpoint is; one run in
full; and removing a run's checkpoint (and, if asked, its rows).

Only checkpoints a stage computed (pruned, dropped, finetuned: their manifest names the method or the
finetune) are ever deleted; a dense run's checkpoint is its model's own files, never touched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from pruning.errors import PrunebenchError
from pruning.files import MANIFEST
from reports.records import ResultRow, RunRecord
from reports.regressions import find_run
from reports.store import ResultStore
from reports.tables import number, percent, text_table

# manifest keys a stage writes; a checkpoint without any is a model's own (packaged, trained, the user's)
_COMPUTED = ("method", "drop_plan", "finetune")


def size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


def _primary(results: Sequence[ResultRow]) -> str:
    shown = [f"{row.suite} {row.metric} {number(row.value)}" for row in results if row.is_primary]
    return "; ".join(shown) or "-"


def runs_table(store: ResultStore, *, model: str | None = None, method: str | None = None, limit: int | None = None) -> list[str]:
    """Lines of a table of runs, newest first: id, when, model, method, primary results, checkpoint, size."""
    runs = [run for run in reversed(store.runs(model=model))
            if method is None or method in (run.method, run.method_label)]  # fmt: skip
    if limit is not None:
        runs = runs[:limit]
    if not runs:
        return ["no runs recorded" + (" for these filters" if model or method else "")]
    results: dict[str, list[ResultRow]] = {}
    for row in store.results():
        results.setdefault(row.run_id, []).append(row)
    body = [[run.run_id[:8], run.finished_at.strftime("%Y-%m-%d %H:%M"), run.model, run.method_label,
             _primary(results.get(run.run_id, [])), _shown_checkpoint(run), size(run.checkpoint_bytes)] for run in runs]  # fmt: skip
    header = ["run", "finished (UTC)", "model", "method", "primary results", "checkpoint", "size"]
    return text_table(header, body, [False] * 6 + [True])


NOT_KEPT = "not kept; a rerun of its config with output.keep_checkpoints: last rebuilds it"


def _shown_checkpoint(run: RunRecord) -> str:
    if run.checkpoint is None:
        return "(not recorded: before schema 8)"
    if Path(run.checkpoint).is_dir():
        return run.checkpoint
    return f"{run.checkpoint} ({NOT_KEPT if run.checkpoint_kept is False else 'deleted'})"


def manifest(path: str | None) -> dict | None:
    """What a checkpoint's manifest says besides its file list, or None where there is none."""
    if path is None or not (Path(path) / MANIFEST).is_file():
        return None
    try:
        written = json.loads((Path(path) / MANIFEST).read_text())
    except ValueError:
        return None
    return {key: value for key, value in written.items() if key != "files"} if isinstance(written, dict) else None


def run_details(store: ResultStore, run_id: str) -> list[str]:
    """One run in full: its record, results, stages and its checkpoint's manifest."""
    run = find_run(store.runs(), run_id)
    bundle = store.bundle(run.run_id)
    removed = (f"{percent(run.achieved_weight_sparsity)} of prunable weights (target {percent(run.target_weight_sparsity)})"
               if run.achieved_weight_sparsity is not None and run.target_weight_sparsity is not None
               else f"{run.layers_dropped} of {run.layers_total} decoder layers (target {percent(run.target_drop_ratio or 0)})"
               if run.layers_dropped is not None else "-")  # fmt: skip
    fields = [
        ("run", run.run_id), ("flow run", run.flow_run_id), ("experiment", run.experiment),
        ("finished", f"{run.finished_at:%Y-%m-%d %H:%M:%S} UTC ({(run.finished_at - run.started_at).total_seconds():.0f} s)"),
        ("model", f"{run.model}  ({run.model_source}, {run.model_dtype or '?'} on {run.model_device or '?'}; id {run.model_id or '-'})"),
        ("method", f"{run.method_label}  (id {run.method_id})"), ("parameters", run.method_params),
        ("removed", removed),
        ("parameters pruned", f"{run.params_pruned:,} of {run.params_total:,}"
                              + (f" ({percent(run.params_pruned_share)})" if run.params_pruned_share is not None else "")),
        ("calibration seed", str(run.seed)), ("git commit", run.git_commit), ("host", f"{run.host}, {run.device}"),
        ("checkpoint", _shown_checkpoint(run)), ("size", size(run.checkpoint_bytes)),
    ]  # fmt: skip
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {value}" for name, value in fields]
    if bundle.results:
        lines += ["", "results"]
        lines += text_table(["suite", "metric", "value", "stderr", "items", "primary"],
                            [[row.suite, row.metric, number(row.value), "-" if row.stderr is None else number(row.stderr),
                              "-" if row.n_samples is None else str(row.n_samples), "yes" if row.is_primary else ""]
                             for row in bundle.results], [False, False, True, True, True, False])  # fmt: skip
    if bundle.stages:
        lines += ["", "stages"]
        lines += text_table(["stage", "wall s", "peak RSS GB", "cached"],
                            [[row.stage, f"{row.wall_s:.1f}", f"{row.peak_rss_gb:.2f}", "yes" if row.cached else ""]
                             for row in bundle.stages], [False, True, True, False])  # fmt: skip
    written = manifest(run.checkpoint)
    if written is not None:
        lines += ["", f"checkpoint manifest ({MANIFEST})", json.dumps(written, indent=2)]
    return lines


def remove_run(store: ResultStore, run_id: str, *, records: bool = False) -> list[str]:
    """Delete the checkpoint a run computed (never a model's own files) and, with `records`, its rows.
    Returns what was done, a line each."""
    runs = store.runs()
    run = find_run(runs, run_id)
    done = []
    path = Path(run.checkpoint) if run.checkpoint else None
    if path is not None and path.is_dir():
        written = manifest(str(path))
        if written is None or not any(key in written for key in _COMPUTED):
            raise PrunebenchError(f"run {run.run_id}'s checkpoint {path} is the model's own files, not one a stage computed; "
                                  "nothing deleted")  # fmt: skip
        others = [other.run_id[:8] for other in runs if other.checkpoint == str(path) and other.run_id != run.run_id]
        shutil.rmtree(path)
        done.append(f"deleted {path} ({size(run.checkpoint_bytes)})"
                    + (f"; runs {', '.join(others)} evaluated it too" if others else "")
                    + "; a rerun of its config recomputes it")  # fmt: skip
    else:
        done.append(f"run {run.run_id} has no checkpoint on disk" + ("" if path is None else f" ({path} is gone)"))
    if records:
        store.delete_run(run.run_id)
        done.append(f"deleted run {run.run_id} ({run.model}, {run.method_label}) from {store.path}")
    return done
