"""A seconds-long rehearsal of each evaluation backend a benchmark needs, before any model loads.

A broken harness used to show itself only at the first evaluation, after the model was converted,
calibrated, pruned, finetuned (or the embedded VLM trained: 18 minutes). Here each backend runs
the way a run calls it: the same bridge (`evals.lm_eval_bridge.evaluate`, `evals.lmms_eval_bridge.
evaluate_multimodal`, hence lm-eval's and lmms-eval's own `simple_evaluate` and our lmms-eval model
class), on task files written by the same writers from the same sources (the text corpus, the
image-QA generator), over two items per suite, with a tiny random-initialised model. What fails
here would have failed there.

Requested suites that are not ours (standard lm-eval / lmms-eval tasks from the local cache) are not
rehearsed: the backend is then only imported, with our model class registered.
"""

from __future__ import annotations

import importlib
import io
import math
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch

from pruning.errors import PrunebenchError

if TYPE_CHECKING:
    from evals.harness import HarnessScores

ITEMS = 2  # per suite: enough to run every code path of the harness once, batched
REHEARSAL_IMAGEQA = {"train": 6, "calibration": 6, "test": 6}  # one image per question type


class BackendError(PrunebenchError):
    """An evaluation backend cannot run in this environment: `backend` and the `error` its rehearsal raised
    (`flows.environment.describe_failure` turns them into one line naming the package at fault)."""

    def __init__(self, backend: str, error: BaseException, message: str | None = None, output: str = "") -> None:
        super().__init__(message or f"{backend} cannot evaluate in this environment ({type(error).__name__}: {error})")
        self.backend, self.error, self.output = backend, error, output  # output: what the harness printed


def rehearse(text_suites: Sequence[str], image_suites: Sequence[str], cache_dir: Path) -> list[str]:
    """Rehearse lm-eval on the local `text_suites` and lmms-eval on the local `image_suites`; return what ran.

    `cache_dir` is the run's cache (the text corpus is read, or fetched once, from there: the same
    data the run's suites are built from). What the harnesses print (progress bars, logs) is kept out of
    the run's output; a `BackendError` carries it. Raises `BackendError` on the first backend that fails."""
    from evals.suites import IMAGE_SUITES, SUITES, expand_suites

    done = []
    text = [name for name in expand_suites(text_suites) if name in SUITES]
    images = [name for name in image_suites if name in IMAGE_SUITES]
    printed = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="prunebench-rehearsal-") as scratch, _global_rngs_kept():
        try:
            with redirect_stdout(printed), redirect_stderr(printed):
                if text_suites:
                    _guarded("lm-eval", lambda: _rehearse_text(text, Path(cache_dir), Path(scratch)))
                    done.append(f"lm-eval ({', '.join(text) or 'import only'})")
                if image_suites:
                    _guarded("lmms-eval", lambda: _rehearse_images(images, Path(scratch)))
                    done.append(f"lmms-eval ({', '.join(images) or 'import only'})")
        except BackendError as failed:
            failed.output = printed.getvalue()
            raise
    return done


@contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """The harnesses seed Python's, NumPy's and torch's global generators; the run after us finds them as they were."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _rehearse_text(names: list[str], cache_dir: Path, scratch: Path) -> None:
    from evals.lm_eval_bridge import evaluate  # imports lm-eval the way a run does
    from evals.suites import build_suites

    if not names:
        importlib.import_module("lm_eval.models.huggingface")
        return
    suites_dir = build_suites(names, scratch / "suites", cache_dir)
    model, tokenizer = _tiny_text_model()
    _require_scores(evaluate(model, tokenizer, names, suites_dir, batch_size=ITEMS, limit=ITEMS), names)


def _rehearse_images(names: list[str], scratch: Path) -> None:
    from evals import lmms_eval_bridge  # registers our model class with lmms-eval
    from lmms_eval.api.registry import MODEL_REGISTRY

    if MODEL_REGISTRY.get(lmms_eval_bridge.MODEL_NAME) is not lmms_eval_bridge.InMemoryVLM:
        raise RuntimeError(f"lmms-eval did not register the model class {lmms_eval_bridge.MODEL_NAME}")
    if not names:
        return
    from evals.imageqa.generator import build_imageqa, tasks_dir

    root = build_imageqa(scratch / "cache", **REHEARSAL_IMAGEQA)
    model, processor = _tiny_vlm()
    scores = lmms_eval_bridge.evaluate_multimodal(model, processor, names, tasks_dir(root), batch_size=ITEMS, limit=ITEMS)
    _require_scores(scores, names)


def _tiny_text_model():
    """A one-layer random Llama over the toy word-level tokenizer (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from evals.imageqa.questions import vocabulary
    from pruning.models.toy_vlm import build_tokenizer

    tokenizer = build_tokenizer(vocabulary())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


def _tiny_vlm():
    """The embedded VLM's architecture at its smallest, random (seeded), with its real processor."""
    from evals.imageqa.questions import vocabulary
    from pruning.models.toy_vlm import ToyVLMSpec, build_model, build_processor, build_tokenizer

    spec = ToyVLMSpec(vision_hidden=16, vision_layers=1, text_hidden=16, text_layers=1, heads=2)
    tokenizer = build_tokenizer(vocabulary())
    return build_model(tokenizer, spec).eval(), build_processor(tokenizer, spec)


def _require_scores(evaluation: HarnessScores, names: list[str]) -> None:
    """Every suite scored, every value a number, every suite's items logged: a harness that returns
    nothing (or logs its samples in a shape `evals.harness.sample_scores` no longer reads) has failed too."""
    scored = {score.suite for score in evaluation.scores}
    missing = [name for name in names if name not in scored]
    if missing or any(not math.isfinite(score.value) for score in evaluation.scores):
        raise RuntimeError(f"the harness returned no usable score for {', '.join(missing) or 'a metric'}")
    itemised = {item.suite for item in evaluation.items}
    unlogged = [name for name in names if name not in itemised]
    if unlogged:
        raise RuntimeError(f"the harness logged no per-item score for {', '.join(unlogged)}")


def _guarded(backend: str, rehearsal: Callable[[], None]) -> None:
    try:
        rehearsal()
    except PrunebenchError as error:  # ours, already clear (a corpus that cannot be found, ...)
        raise BackendError(backend, error, f"{backend} rehearsal before the run: {error}") from error
    except Exception as error:  # noqa: BLE001 - whatever the harness raises is reported, once, clearly
        raise BackendError(backend, error) from error


if __name__ == "__main__":  # python -m evals.rehearsal: rehearse every local suite
    from evals.suites import IMAGE_SUITES, SUITES

    print(rehearse(sorted(SUITES), sorted(IMAGE_SUITES - {"prunebench_imageqa"}), Path(sys.argv[1] if len(sys.argv) > 1 else ".prunebench/cache")))
