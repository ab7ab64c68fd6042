"""Try a toy-vlm training recipe: train from scratch with `ToyVLMSpec` overrides, print the wall
time and the multiple-choice accuracy per question type on the test split and on (the first 600
of) the training split, so under- and over-fitting can be told apart. Nothing is cached or saved.

    .venv/bin/python benchmarks/toy_vlm_recipe.py                                # the shipped recipe (~9 min, 2 cores)
    .venv/bin/python benchmarks/toy_vlm_recipe.py '{"epochs": 8, "lr": 0.0015}'  # JSON of ToyVLMSpec fields
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from evals.imageqa.generator import build_imageqa, split_path
from evals.imageqa.prompts import answer_text, question_text
from evals.imageqa.records import load_image, load_records
from evals.vlm_prompt import vlm_prompt
from pruning.models.toy_vlm import ToyVLMSpec
from tasks.toy_vlm import train_from_records

REPO = Path(__file__).resolve().parent.parent


def accuracy(model, processor, records, batch_size: int = 32) -> dict[str, float]:
    """Multiple-choice accuracy per question type and overall: the choice whose first answer token
    is most likely after the prompt (the toy tokenizer makes every answer one token)."""
    tokenizer, hits = processor.tokenizer, defaultdict(list)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            batch = processor(
                text=[vlm_prompt(processor, question_text(r)) for r in chunk],
                images=[load_image(r) for r in chunk], return_tensors="pt", padding=True,
            )
            logits = model(**batch).logits[:, -1]
            for row, record in enumerate(chunk):
                ids = [tokenizer(answer_text(c), add_special_tokens=False)["input_ids"][0] for c in record.choices]
                hits[record.qtype].append(record.choices[int(logits[row, ids].argmax())] == record.answer)
    result = {qtype: sum(h) / len(h) for qtype, h in sorted(hits.items())}
    result["overall"] = sum(sum(h) for h in hits.values()) / sum(len(h) for h in hits.values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object of ToyVLMSpec fields")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".prunebench" / "cache")
    args = parser.parse_args()
    spec = ToyVLMSpec(**json.loads(args.overrides))
    print(spec)
    root = build_imageqa(args.cache_dir)
    records = load_records(split_path(root, "train"))
    started = time.perf_counter()
    trained = train_from_records(records, spec)  # exactly what the cached training task does
    print(f"training: {time.perf_counter() - started:.0f} s")
    model, processor = trained.model, trained.processor
    for split, split_records in (("test", load_records(split_path(root, "test"))), ("train", records[:600])):
        print(split, {name: round(value, 3) for name, value in accuracy(model, processor, split_records).items()})


if __name__ == "__main__":
    main()
