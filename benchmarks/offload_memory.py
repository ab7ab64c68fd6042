"""Sequential onloading: what sits on the execution device while a model is pruned, against the whole model.

Prunes one model (the packaged SmolLM2-135M, or a random-init Llama of --shape) with a local method
three ways: whole on the device (offload none), offloaded to CPU memory, offloaded to memory-mapped
files; checks that the three give the same bits, and prints per way the peak bytes onloaded (every
`pruning.models.offload._onload` counted until its `_offload`: the non-block modules plus the block(s)
there at once), the wall time and, on CUDA, torch's peak allocation (weights + activations + statistics).

    .venv/bin/python benchmarks/offload_memory.py                              # SmolLM2-135M, CPU
    .venv/bin/python benchmarks/offload_memory.py --device cuda --dtype bfloat16 --shape llama-7b
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from pruning.local.walk import prune_model
from pruning.models import offload
from pruning.models.adapters import adapter_for
from pruning.models.offload import offload_model

SHAPES = {  # random-init Llama shapes: (hidden, layers, heads, kv heads, intermediate, vocab)
    "smollm2-135m": (576, 30, 9, 3, 1536, 49152),
    "llama-7b": (4096, 32, 32, 32, 11008, 32000),
}
MIB = 1024**2


def build(shape: str | None, dtype: torch.dtype):
    if shape is None:
        from pruning.models.sources import load_model, materialize_packaged
        from pruning.specs import ModelSpec

        path = materialize_packaged("smollm2-135m", Path(".prunebench/cache/models"))
        return load_model(path, ModelSpec(source=str(path)))[0].to(dtype)
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv_heads, intermediate, vocab = SHAPES[shape]
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         intermediate_size=intermediate, vocab_size=vocab)  # fmt: skip
    return LlamaForCausalLM(config).to(dtype).eval()


def onloaded_peak() -> tuple[dict, callable]:
    """Count bytes onloaded from here on: returns the record and a function that stops counting."""
    record = {"now": 0, "peak": 0}
    onload, offload_ = offload._onload, offload._offload
    sizes: dict[int, int] = {}

    def counted_onload(modules, device):
        resident = onload(modules, device)
        sizes[id(resident)] = resident.n_bytes
        record["now"] += sizes[id(resident)]
        record["peak"] = max(record["peak"], record["now"])
        return resident

    def counted_offload(resident, write_back):
        record["now"] -= sizes.pop(id(resident))
        return offload_(resident, write_back)

    offload._onload, offload._offload = counted_onload, counted_offload

    def stop():
        offload._onload, offload._offload = onload, offload_

    return record, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a random-init Llama of this shape (default: the packaged SmolLM2)")
    parser.add_argument("--method", default="wanda", choices=("wanda", "sparsegpt", "magnitude"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    base = build(args.shape, dtype)
    ids = torch.randint(0, base.config.vocab_size, (args.n_samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    model_bytes = sum(t.nbytes for t in {id(t): t for t in [*base.parameters(), *base.buffers()]}.values())
    print(f"{args.shape or 'smollm2-135m'} {args.dtype}, {args.method} 50% on {args.device}: whole model {model_bytes / MIB:.1f} MiB")
    results = {}
    for way in ("none", "cpu", "disk"):
        model = copy.deepcopy(base)
        adapter = adapter_for(model)
        if way == "none":
            model.to(args.device)
        else:
            offload_model(model, adapter, way)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        record, stop = onloaded_peak()
        start = time.perf_counter()
        try:
            prune_model(model, adapter, args.method, ids, target=0.5, batch_size=2, progress=False,
                        execution_device=args.device)  # fmt: skip
        finally:
            stop()
        wall_s = time.perf_counter() - start
        gpu = f", CUDA peak {torch.cuda.max_memory_allocated() / MIB:.1f} MiB" if args.device.startswith("cuda") else ""
        onloaded = record["peak"] if way != "none" else model_bytes
        print(f"  offload {way:4}: on the device at most {onloaded / MIB:7.1f} MiB ({onloaded / model_bytes:6.1%} of the model), "
              f"{wall_s:.1f} s{gpu}")  # fmt: skip
        results[way] = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        del model
    same = all(torch.equal(results["none"][name], results[way][name]) for way in ("cpu", "disk") for name in results["none"])
    print(f"  bit-identical weights with and without offloading: {same}")


if __name__ == "__main__":
    main()
