"""Checkpoint disk use: for every checkpoint the pipeline computed, its bytes on disk now (pruned ones are stored
compressed in compressed-tensors' sparse format) beside the bytes of the same model saved dense (loaded and
re-saved as plain safetensors into a temporary directory), and the ratio.

The checkpoints are those under WORKDIR/checkpoints (default .prunebench), or, with --database, those of the
runs recorded there (a dense run's checkpoint is its model's own files). Weights are the .safetensors files;
total is the whole directory (config, tokenizer, manifest too).

    .venv/bin/python benchmarks/checkpoint_disk.py                       # every checkpoint under .prunebench
    .venv/bin/python benchmarks/checkpoint_disk.py --database results/prunebench.duckdb
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pruning.models.compressed import sparsity_config_of
from pruning.models.sources import checkpoint_problem, load_model, save_checkpoint
from pruning.specs import ModelSpec
from reports.runs import size
from reports.tables import text_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Bytes on disk of each computed checkpoint now (compressed where pruned) and saved dense, and the ratio.",
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workdir", type=Path, default=Path(".prunebench"), help="every checkpoint under WORKDIR/checkpoints (default: .prunebench)")
    where.add_argument("--database", type=Path, help="the checkpoints of the runs recorded in this results database instead")
    return parser.parse_args(argv)


def checkpoints(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(label, directory) of each whole checkpoint to measure, each directory once."""
    if args.database is not None:
        from reports.store import ResultStore

        if not args.database.is_file():
            sys.exit(f"checkpoint_disk: no results database at {args.database}")
        found = {}
        for run in ResultStore(args.database).runs():
            if run.checkpoint and checkpoint_problem(Path(run.checkpoint)) is None:
                found.setdefault(run.checkpoint, f"{run.run_id[:8]} {run.model} / {run.method_label}")
        return [(label, Path(path)) for path, label in found.items()]
    root = args.workdir / "checkpoints"
    return [(f"{path.parent.name}/{path.name}", path) for path in sorted(root.glob("*/*")) if path.is_dir() and checkpoint_problem(path) is None]


def disk_bytes(path: Path) -> tuple[int, int]:
    """(bytes of the .safetensors files, bytes of every file) of a checkpoint directory."""
    files = [file for file in path.rglob("*") if file.is_file()]
    return sum(file.stat().st_size for file in files if file.suffix == ".safetensors"), sum(file.stat().st_size for file in files)


def measure(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    sparsity = sparsity_config_of(config)
    dtype = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype") or "float32"
    model, preprocessor = load_model(path, ModelSpec(source=str(path), dtype=dtype))
    with tempfile.TemporaryDirectory(prefix="checkpoint-disk-") as scratch:
        dense = save_checkpoint(model, preprocessor, Path(scratch) / "dense")
        dense_weights, dense_total = disk_bytes(dense)
    weights, total = disk_bytes(path)
    return {"form": sparsity["format"] if sparsity else "plain", "sparsity": sparsity["global_sparsity"] if sparsity else None,
            "dtype": dtype, "weights": weights, "dense_weights": dense_weights, "total": total, "dense_total": dense_total}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = checkpoints(args)
    if not found:
        print(f"no whole checkpoints {'recorded in ' + str(args.database) if args.database else 'under ' + str(args.workdir / 'checkpoints')}")
        return 0
    rows, sums = [], [0, 0, 0, 0]
    for label, path in found:
        m = measure(path)
        rows.append([label, m["form"], "-" if m["sparsity"] is None else f"{m['sparsity']:.1%}", m["dtype"], size(m["weights"]),
                     size(m["dense_weights"]), f"{m['weights'] / m['dense_weights']:.3f}", size(m["total"]), size(m["dense_total"]),
                     f"{m['total'] / m['dense_total']:.3f}"])  # fmt: skip
        for index, key in enumerate(("weights", "dense_weights", "total", "dense_total")):
            sums[index] += m[key]
    rows.append(["all", "", "", "", size(sums[0]), size(sums[1]), f"{sums[0] / sums[1]:.3f}", size(sums[2]), size(sums[3]), f"{sums[2] / sums[3]:.3f}"])
    header = ["checkpoint", "stored as", "zeros", "dtype", "weights now", "weights dense", "ratio", "total now", "total dense", "ratio"]
    print("\n".join(text_table(header, rows, [False] * 4 + [True] * 6)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
