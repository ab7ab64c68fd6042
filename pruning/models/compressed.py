"""Sparse checkpoints stored compressed with compressed-tensors' sparse formats, and read back dense.

The format is the one llm-compressor writes for a sparse model. In the safetensors, each compressed
linear's `X.weight` is replaced by `X.shape` (the dense shape), `X.compressed` (its nonzero values),
`X.bitmask` (packed bits, 1 = nonzero) and, for `sparse-bitmask`, `X.row_offsets`; `sparse-24-bitmask`
keeps exactly two values of every four. config.json gets the `quantization_config` that
`ModelCompressor.update_config` writes: `{quant_method: compressed-tensors, version, sparsity_config:
{format, global_sparsity, targets, ignore, sparsity_structure}, transform_config: {}}`.

Which weights: a linear's weight is compressed when its bitmask form is smaller than its dense form
(a pruned layer; a dense one, an embedding or lm_head is stored as it is). `sparse-24-bitmask` only
when every compressed weight really has at most 2 nonzeros in each group of 4 along its rows (a 2:4
prune); else `sparse-bitmask`. Both are lossless: every nonzero value is stored bit for bit (a -0.0
reads back as +0.0, the same number). A model with nothing worth compressing is written plain.

compressed-tensors is pinned at 0.14.0, the last release with the sparse compressors (0.15 removed
them). transformers 5's own compressed-tensors loader requires >= 0.15, so `from_pretrained` cannot
read these checkpoints: `dense_state_dict` decompresses with the package's own compressors, and
`pruning.models.sources.load_model` builds the model from that state dict. `prunebench export --dense`
writes a plain safetensors checkpoint for tools that only have transformers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterator
from pathlib import Path

import torch
from torch import Tensor

from pruning.errors import CheckpointError

SPARSE_FORMATS = ("sparse-bitmask", "sparse-24-bitmask")
_INDEX = "model.safetensors.index.json"


def sparsity_config_of(config_json: dict) -> dict | None:
    """The `sparsity_config` of a checkpoint stored in a sparse compressed-tensors format, or None for a plain one
(compressed-tensors' `dense` format included).

    A compressed-tensors checkpoint this module cannot read (quantized, another sparse format) is an error."""
    compression = config_json.get("quantization_config")
    if not isinstance(compression, dict) or compression.get("quant_method") != "compressed-tensors":
        return None
    sparsity = compression.get("sparsity_config") or {}
    extra = {key for key, value in compression.items() if value and key not in ("quant_method", "version", "sparsity_config", "transform_config")}
    if sparsity.get("format") == "dense" and not extra and not compression.get("transform_config"):
        return None  # a sparse model llm-compressor saved uncompressed: plain safetensors
    if sparsity.get("format") not in SPARSE_FORMATS or extra or compression.get("transform_config"):
        raise CheckpointError(
            f"config.json's quantization_config is compressed-tensors {sparsity.get('format') or 'quantization'}"
            f"{' with ' + ', '.join(sorted(extra)) if extra else ''}: only the sparse formats {', '.join(SPARSE_FORMATS)} are read"
        )
    return sparsity


def stored_format(directory: Path) -> str | None:
    """The sparse format a checkpoint directory's weights are stored in, or None for plain safetensors (reads config.json)."""
    try:
        config_json = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {Path(directory) / 'config.json'}: {err}") from None
    return (sparsity_config_of(config_json) or {}).get("format")


def bitmask_bytes(weight: Tensor) -> int:
    """Bytes of `weight` in sparse-bitmask form: its nonzero values, one bit per element, an int64 offset per row."""
    rows = weight.shape[0] if weight.dim() > 1 else 1
    cols = weight.shape[-1]
    return int(torch.count_nonzero(weight)) * weight.element_size() + rows * math.ceil(cols / 8) + rows * 8 + 8 * weight.dim()


def is_two_four(weight: Tensor) -> bool:
    """Whether a 2-D weight has at most 2 nonzeros in every group of 4 consecutive inputs (2:4 semi-structured)."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return int((weight.reshape(-1, 4) != 0).sum(dim=1).max()) <= 2


def sparsity_config(weights: Iterator[tuple[str, Tensor]], linear_names: Collection[str]):
    """The compressed-tensors sparsity config for a model whose stored tensors are `weights` (name, tensor),
    or None when no linear weight is worth compressing. `linear_names` are the model's nn.Linear modules.

    Targets and ignore follow llm-compressor (`infer_sparse_targets_and_ignores`): the type `Linear`
    with the linears left dense as `ignore` when most are compressed, else the compressed ones by name."""
    from compressed_tensors.config import SparsityCompressionConfig

    zeros = total = 0
    compressed, two_four = [], True
    for name, tensor in weights:
        if not tensor.is_floating_point():
            continue
        zeros += tensor.numel() - int(torch.count_nonzero(tensor))
        total += tensor.numel()
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module in linear_names and bitmask_bytes(tensor) < tensor.numel() * tensor.element_size():
            compressed.append(module)
            two_four = two_four and is_two_four(tensor)
    if not compressed:
        return None
    dense = sorted(set(linear_names) - set(compressed))
    targets = ["Linear"] if len(compressed) >= len(dense) else sorted(compressed)
    return SparsityCompressionConfig.load_from_registry(
        "sparse-24-bitmask" if two_four else "sparse-bitmask",
        global_sparsity=zeros / total,
        sparsity_structure="2:4" if two_four else "unstructured",
        targets=targets,
        ignore=dense,
    )


def compressed_modules(config, linear_names: Collection[str]) -> set[str]:
    """The linear modules a sparsity config's targets and ignore name (`Linear` = every linear)."""
    targets = set(linear_names) if "Linear" in config.targets else set(config.targets)
    return targets - set(config.ignore or ())


def compress_checkpoint(directory: Path, linear_names: Collection[str]) -> str | None:
    """Rewrite the plain safetensors `save_pretrained` left in `directory` in compressed form, in place, and
    record the sparsity config in its config.json. Returns the format, or None when it was left plain.

    Reads one tensor at a time to choose the format, then rewrites one shard at a time."""
    from compressed_tensors.compressors import BaseCompressor, ModelCompressor
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    directory = Path(directory)
    shards = sorted(directory.glob("*.safetensors"))

    def stored() -> Iterator[tuple[str, Tensor]]:
        for shard in shards:
            with safe_open(shard, framework="pt") as tensors:
                for name in tensors.keys():
                    yield name, tensors.get_tensor(name)

    config = sparsity_config(stored(), linear_names)
    if config is None:
        return None
    targets = compressed_modules(config, linear_names)
    compressor = BaseCompressor.load_from_registry(config.format, config=config)
    weight_map, total_size = {}, 0
    for shard in shards:
        written = {name: tensor.contiguous() for name, tensor in compressor.compress(load_file(shard), compression_targets=targets).items()}
        mode = shard.stat().st_mode
        save_file(written, shard, metadata={"format": "pt"})
        os.chmod(shard, mode)  # as save_pretrained left it (safetensors writes a new file private)
        weight_map.update(dict.fromkeys(written, shard.name))
        total_size += sum(tensor.numel() * tensor.element_size() for tensor in written.values())
    if (directory / _INDEX).is_file():  # a sharded save: the index names the new tensors' shards
        index = json.loads((directory / _INDEX).read_text())
        index["weight_map"] = dict(sorted(weight_map.items()))
        index.setdefault("metadata", {})["total_size"] = total_size
        (directory / _INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    ModelCompressor(sparsity_config=config).update_config(str(directory))
    return config.format


def dense_state_dict(directory: Path, sparsity: dict) -> dict[str, Tensor]:
    """Every tensor of a compressed checkpoint, dense, decompressed by compressed-tensors' own compressor for
    its format (`sparsity` is config.json's sparsity_config); a file that does not decompress is a CheckpointError."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.config import SparsityCompressionConfig

    try:
        config = SparsityCompressionConfig.load_from_registry(sparsity["format"], **sparsity)
        compressor = BaseCompressor.load_from_registry(config.format, config=config)
        return dict(compressor.decompress(str(directory)))
    except Exception as err:
        line = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot decompress {directory} ({sparsity.get('format')}): {type(err).__name__}: {line}") from err


def stored_shapes(tensors) -> Iterator[tuple[str, list[int]]]:
    """(name, dense shape) of each tensor in an open safetensors file (`safe_open`), a compressed weight
    counted once as `X.weight` with the shape its `X.shape` records (its parts are not parameters)."""
    names = set(tensors.keys())
    grouped = {name.removesuffix(".shape") for name in names if name.endswith(".shape") and f"{name.removesuffix('.shape')}.compressed" in names}
    for name in sorted(names):
        prefix, _, part = name.rpartition(".")
        if prefix in grouped:
            if part == "shape":
                yield f"{prefix}.weight", [int(size) for size in tensors.get_tensor(name).flatten().tolist()]
            continue
        yield name, list(tensors.get_slice(name).get_shape())
