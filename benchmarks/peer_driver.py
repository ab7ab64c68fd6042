"""The llm-compressor side of benchmarks/peer_llmcompressor.py, run with `.peer-venv/bin/python` (`make peer`).

Imports only what the peer's venv holds (torch, transformers, safetensors, llmcompressor): nothing of
this project. Loads the dense safetensors checkpoint, prunes it with llm-compressor's `oneshot` and
one modifier on the given calibration token ids, and writes the pruned weights of every linear inside
the decoder layers (what was pruned) to a safetensors file. Prints one JSON line: the seconds
`oneshot` took (loading and writing are not counted) and the versions.

Settings, as llm-compressor 0.14.0.1 names them (read in its source: `modifiers/pruning/sparsegpt/
base.py`, `sgpt_base.py`, `sgpt_sparsify.py`, `wanda/wanda_sparsify.py`, `pipelines/sequential/pipeline.py`):
- the `sequential` pipeline with the model's decoder layer class as `sequential_targets`: each layer
  is calibrated on its current inputs, pruned, and run again so its pruned outputs feed the next
  (`propagate_error=True`, the default);
- modifier `targets` = that decoder layer class, so its linears (7 in a Llama layer) are pruned and
  lm_head is not; `mask_structure="0:0"` (unstructured) at `sparsity`;
- SparseGPT: `block_size`, `dampening_frac` as given;
- the calibration batches exactly as given (a DataLoader of `batch_size` rows, in order, no shuffle).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="dense safetensors checkpoint directory")
    parser.add_argument("--calibration", required=True, help="safetensors file holding `input_ids` [n, seq_len]")
    parser.add_argument("--method", required=True, choices=["wanda", "sparsegpt"])
    parser.add_argument("--out", required=True, help="safetensors file for the pruned linears' weights")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--dampening-frac", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import compressed_tensors
    import llmcompressor
    import transformers
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    model = transformers.AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    model.eval()
    layer_class = type(model.model.layers[0]).__name__
    ids = load_file(args.calibration)["input_ids"]
    rows = [{"input_ids": row} for row in ids]  # default collation stacks `batch_size` rows
    loader = DataLoader(rows, batch_size=args.batch_size, shuffle=False)
    common = dict(sparsity=args.sparsity, mask_structure="0:0", targets=[layer_class])
    if args.method == "sparsegpt":
        modifier = SparseGPTModifier(**common, block_size=args.block_size, dampening_frac=args.dampening_frac)
    else:
        modifier = WandaPruningModifier(**common)
    started = time.perf_counter()
    oneshot(
        model=model, recipe=[modifier], dataset=loader, num_calibration_samples=len(rows), batch_size=args.batch_size,
        shuffle_calibration_samples=False, pipeline="sequential", sequential_targets=[layer_class],
    )  # fmt: skip
    seconds = time.perf_counter() - started
    pruned = {
        name: module.weight.detach().contiguous()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name
    }
    save_file({f"{name}.weight": weight for name, weight in pruned.items()}, args.out)
    versions = {"llmcompressor": llmcompressor.__version__, "compressed_tensors": compressed_tensors.__version__,
                "transformers": transformers.__version__, "torch": torch.__version__}  # fmt: skip
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(), "linears": len(pruned), "versions": versions}))


if __name__ == "__main__":
    main()
