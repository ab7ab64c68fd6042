"""Score an in-memory vision-language model on local image-QA suites and standard lmms-eval tasks,
through lmms-eval's own evaluator.

`InMemoryVLM` is an lmms-eval model (registered as `prunebench_hf_vlm`) around any transformers
`...ForConditionalGeneration` VLM and its processor. Prompts come from `evals.vlm_prompt`, the same
function the embedded toy VLM is trained with. `loglikelihood` answers the sum of the log-probs of the
continuation tokens (higher = more likely) and whether greedy decoding would produce them; a local
task with its own `process_results` receives those values as they are.

Local suites are the tasks, groups and tags of the lmms-eval YAMLs in `include_path`; any other name
is a standard lmms-eval task whose dataset must already be in the local Hugging Face cache. The Hub
is never contacted unless the user sets HF_HUB_OFFLINE=0 explicitly.

Two things of lmms-eval 0.7.3 are adapted here, without touching its code:
- its evaluator (evaluator.py:1231-1233) sends every response through `unwrap_generation_output`
  (api/instance.py:44-71), which knows strings, `GenerationResult`s and (str, dict) pairs and turns
  anything else into its `str()`: a (logprob, is_greedy) pair would reach the task as the text
  "(-3.2, False)". `LoglikelihoodPair` is that plain pair and also a `GenerationResult` whose text is
  the pair, so it passes through unchanged;
- its built-in multiple-choice scoring (api/task.py:1624-1625) picks the choice with the *smallest*
  value, because its own models answer a loss; tasks scored that way get negated log-probs.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model
from tqdm import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from evals.harness import (
    BOOTSTRAP_ITERS, SEEDS, HarnessScores, did_you_mean, harness_scores, load_suite, offline_hub, quiet_harness, write_samples,
)
from evals.vlm_prompt import vlm_prompt
from pruning.errors import SuiteError

MODEL_NAME = "prunebench_hf_vlm"
# Generation length when a task names none (lmms-eval's own HF models default to 1024, far more
# than a short answer needs).
DEFAULT_MAX_NEW_TOKENS = 64


class LoglikelihoodPair(tuple, GenerationResult):
    """`(logprob, is_greedy)`: a plain tuple to every reader, and a `GenerationResult` whose `text` is
    that tuple, so lmms-eval's `unwrap_generation_output` hands it to the task unchanged (see above)."""

    token_counts = None

    def __new__(cls, logprob: float, is_greedy: bool):
        return super().__new__(cls, (float(logprob), bool(is_greedy)))

    def __init__(self, logprob: float, is_greedy: bool) -> None:  # the dataclass __init__ would set `text`
        pass

    def __getnewargs__(self):
        return tuple(self)

    @property
    def text(self) -> tuple[float, bool]:
        return (self[0], self[1])


@register_model(MODEL_NAME)
class InMemoryVLM(lmms):
    """An HF vision-language model already in memory, with its processor, as an lmms-eval model.

    Requests are batched (`batch_size`) on the model's device, longest first; images come from the
    task's `doc_to_visual`, one prompt placeholder each. Generation is greedy whatever the task asks.
    """

    def __init__(self, model, processor, batch_size: int = 8, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.accelerator = None  # one process: keeps lmms-eval from building an Accelerator
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def loglikelihood(self, requests: list[Instance]) -> list[LoglikelihoodPair]:
        """Per request `(sum of log p(continuation token | image, context, earlier tokens), is_greedy)`."""
        prompts, continuations, images = [], [], []
        for request in requests:
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            visuals = _images(doc_to_visual(doc))
            if not isinstance(continuation, str):  # `loglikelihood` tasks pass their doc_to_target
                continuation = str(continuation(doc))
            prompt = vlm_prompt(self.processor, context, n_images=len(visuals))
            # trailing spaces belong to the continuation, as lm-eval splits them (BPE merges " red"); a
            # chat template's closing newline stays in the prompt, where generation sees it too
            spaces = len(prompt) - len(prompt.rstrip(" "))
            prompts.append(prompt[: len(prompt) - spaces])
            continuations.append(prompt[len(prompt) - spaces :] + continuation)
            images.append(visuals)
        results: list[LoglikelihoodPair | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(prompts[i] + continuations[i]))
        with _inference(self.model), tqdm(total=len(requests), desc="loglikelihood", disable=len(requests) < 2) as bar:
            for first in range(0, len(order), self.batch_size):
                batch = order[first : first + self.batch_size]
                scored = self._score([prompts[i] for i in batch], [continuations[i] for i in batch], [images[i] for i in batch])
                for i, pair in zip(batch, scored):
                    results[i] = pair
                bar.update(len(batch))
        return results

    def _score(self, prompts: list[str], continuations: list[str], images: list[list]) -> list[LoglikelihoodPair]:
        # Encode whole, split at the context length (what training saw for prompt + answer): the
        # continuation is the tokens of prompt+continuation past those of the prompt alone. The image
        # placeholders sit inside the prompt, so with left padding every continuation ends its row.
        continuation_ids = []
        for prompt, continuation in zip(prompts, continuations):
            whole = self.tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
            context = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            continuation_ids.append(whole[len(context) :])
        inputs = self._encode([p + c for p, c in zip(prompts, continuations)], images)
        input_ids = inputs["input_ids"]
        longest = max(len(ids) for ids in continuation_ids)
        extra = {"logits_to_keep": longest + 1} if self._keeps_logits else {}
        logits = self.model(**inputs, **extra).logits[:, -(longest + 1) : -1].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        pairs = []
        for row, ids in enumerate(continuation_ids):
            target = input_ids[row, input_ids.shape[1] - len(ids) :]
            if target.tolist() != ids:
                raise ValueError(f"the continuation {ids} is not where the processor put it ({target.tolist()}): a tokenizer that appends tokens?")
            row_log_probs = log_probs[row, log_probs.shape[1] - len(ids) :]
            token_log_probs = row_log_probs.gather(-1, target[:, None]).squeeze(-1)
            is_greedy = bool((row_log_probs.argmax(dim=-1) == target).all())
            pairs.append(LoglikelihoodPair(token_log_probs.sum().item(), is_greedy))
        return pairs

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy continuation per request, cut before the first of the task's `until` strings."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, str, list]]] = {}
        for index, request in enumerate(requests):
            context, generation_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            visuals = _images(doc_to_visual(doc))
            until, max_new_tokens = self._stopping(generation_kwargs or {})
            prompt = vlm_prompt(self.processor, context, n_images=len(visuals))
            groups.setdefault((until, max_new_tokens), []).append((index, prompt, visuals))
        with _inference(self.model), tqdm(total=len(requests), desc="generate_until", disable=len(requests) < 2) as bar:
            for (until, max_new_tokens), members in groups.items():
                members.sort(key=lambda member: -len(member[1]))
                for first in range(0, len(members), self.batch_size):
                    batch = members[first : first + self.batch_size]
                    texts = self._generate([m[1] for m in batch], [m[2] for m in batch], until, max_new_tokens)
                    for (index, _, _), text in zip(batch, texts):
                        results[index] = text
                    bar.update(len(batch))
        return results

    def _stopping(self, generation_kwargs: dict) -> tuple[tuple[str, ...], int]:
        until = generation_kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(until)
        max_new_tokens = generation_kwargs.get("max_new_tokens") or generation_kwargs.get("max_gen_toks") or self.max_new_tokens
        return until, int(max_new_tokens)

    def _generate(self, prompts: list[str], images: list[list], until: tuple[str, ...], max_new_tokens: int) -> list[str]:
        inputs = self._encode(prompts, images)
        prompt_length = inputs["input_ids"].shape[1]
        stopping = StoppingCriteriaList([_StopStrings(self.tokenizer, until, prompt_length)]) if until else None
        pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        output = self.model.generate(
            **inputs,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            stopping_criteria=stopping,
            pad_token_id=pad_token_id,
        )
        texts = self.tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
        return [_cut(text, until) for text in texts]

    def _encode(self, texts: list[str], images: list[list]):
        flat_images = [image for visuals in images for image in visuals]
        kwargs = {"images": flat_images} if flat_images else {}
        # left padding: generation appends on the right, and every continuation ends its row
        inputs = self.processor(text=texts, return_tensors="pt", padding=True, padding_side="left", **kwargs)
        inputs = inputs.to(self.device)
        return inputs.to(self.model.dtype) if flat_images else inputs  # a BatchFeature casts its pixels only

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{MODEL_NAME} answers single-round tasks only")

    def clean(self) -> None:
        """Nothing to free: the model belongs to the caller (lmms-eval's default drops our reference to it)."""


class _StopStrings(StoppingCriteria):
    """Stops a row once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer, stop: tuple[str, ...], prompt_length: int) -> None:
        self.tokenizer, self.stop, self.prompt_length = tokenizer, stop, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([any(s in text for s in self.stop) for text in texts], device=input_ids.device)


def _cut(text: str, until: tuple[str, ...]) -> str:
    for stop in until:
        text = text.split(stop, 1)[0]
    return text


def _images(visuals) -> list:
    """The PIL images `doc_to_visual` gave (video paths and audio are not supported)."""
    visuals = list(visuals or [])
    for visual in visuals:
        if not hasattr(visual, "convert"):
            raise SuiteError(f"{MODEL_NAME} reads images only, and this task gives a {type(visual).__name__}")
    return visuals


@contextmanager
def _inference(model) -> Iterator[None]:
    """Eval mode and no autograd for the block; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def evaluate_multimodal(
    model,
    processor,
    suites: list[str],
    include_path: Path | Sequence[Path] | None,
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
    samples_dir: Path | None = None,
) -> HarnessScores:
    """Every metric of every suite for `model` (an HF VLM in memory) and its processor, via lmms-eval,
    and every item's values behind them. `include_path`: directories of local task YAMLs (the image-QA
    tasks, the user's own); `num_fewshot`: lmms-eval's own; `samples_dir`: where the per-sample log
    goes (`evals.harness.write_samples`)."""
    names = list(dict.fromkeys(suites))
    local_manager = _local_task_manager(include_path)
    local_names = set(local_manager.all_tasks) if local_manager else set()
    if not names:
        raise SuiteError(f"no suite to evaluate; local suites: {_listing(local_names)}")
    _check_names(names, local_names, include_path)

    from lmms_eval.api.registry import is_higher_better
    from lmms_eval.evaluator import simple_evaluate

    with quiet_harness(), offline_hub():
        task_dict: dict = {}
        for name in names:
            is_local = name in local_names
            manager = local_manager if is_local else _standard_task_manager()
            loaded = load_suite(lambda: manager.load_task_or_group([name]), name, is_local, "lmms-eval")
            _require_vision(model, processor, name, loaded)
            task_dict.update(loaded)
        for task in _leaf_tasks(task_dict):
            if task.OUTPUT_TYPE == "multiple_choice" and not callable(task.config.process_results):
                task.process_results = _scored_as_losses(task.process_results)
        results = simple_evaluate(
            model=InMemoryVLM(model, processor, batch_size=batch_size),
            tasks=names,
            task_manager=_LoadedTasks(task_dict),
            limit=limit,
            num_fewshot=num_fewshot,
            bootstrap_iters=BOOTSTRAP_ITERS,
            log_samples=True,  # the per-item values (`evals.harness.sample_scores`)
            **SEEDS,
        )
    if results is None:  # only non-zero ranks of a distributed run get None
        return HarnessScores(scores=[], items=[])
    if samples_dir is not None:
        write_samples(results, samples_dir)
    return harness_scores(results, is_higher_better)


def check_multimodal_suites(names: Sequence[str], include_path: Path | Sequence[Path] | None) -> None:
    """Fail early on a name that is neither a local suite nor an lmms-eval task, or that is both (no data is read)."""
    local_manager = _local_task_manager(include_path)
    _check_names(names, set(local_manager.all_tasks) if local_manager else set(), include_path)


def _check_names(names: Sequence[str], local_names: set[str], include_path: Path | Sequence[Path] | None) -> None:
    standard_names = set(_standard_task_manager().all_tasks)
    shadowing = [name for name in names if name in local_names and name in standard_names]
    if shadowing:
        raise SuiteError(
            f"local suite {', '.join(map(repr, shadowing))} in {', '.join(map(str, _directories(include_path)))} has the name of an lmms-eval task; "
            f"rename it (a local suite never replaces a standard one)"
        )
    unknown = [name for name in names if name not in local_names and name not in standard_names]
    if unknown:
        raise SuiteError(
            f"unknown suite {', '.join(map(repr, unknown))}: not a local suite ({_listing(local_names)}) and not an lmms-eval task"
            f"{did_you_mean(unknown, [*local_names, *standard_names])}"
        )


def _listing(local_names: set[str]) -> str:
    return ", ".join(sorted(local_names)) if local_names else "none: no include_path with lmms-eval task files"


@lru_cache(maxsize=1)
def _standard_task_manager():
    """lmms-eval's own tasks, groups and tags; indexing its ~2k YAML files takes a few seconds, so once per process."""
    from lmms_eval.tasks import TaskManager

    with quiet_harness():
        return TaskManager(include_defaults=True)


def _local_task_manager(include_path: Path | Sequence[Path] | None):
    """The tasks of the YAMLs under `include_path` alone (lmms-eval's own are indexed apart, never mixed in)."""
    directories = _directories(include_path)
    if not directories:
        return None
    for directory in directories:
        if not Path(directory).is_dir():
            raise SuiteError(f"include_path {directory} is not a directory of lmms-eval task files")
    from lmms_eval.tasks import TaskManager

    with quiet_harness():
        return TaskManager(include_path=[str(Path(directory).resolve()) for directory in directories], include_defaults=False)


def _directories(include_path: Path | Sequence[Path] | None) -> list[Path]:
    """One directory, several, or none, as a list."""
    if include_path is None:
        return []
    return [Path(include_path)] if isinstance(include_path, (str, Path)) else [Path(directory) for directory in include_path]


def _leaf_tasks(task_dict: dict) -> list:
    """The tasks of a loaded task dict, groups opened."""
    leaves = []
    for value in task_dict.values():
        leaves += _leaf_tasks(value) if isinstance(value, dict) else [value]
    return leaves


def _require_vision(model, processor, name: str, loaded: dict) -> None:
    has_vision = getattr(processor, "image_processor", None) is not None and getattr(model.config, "vision_config", None) is not None
    if not has_vision and any(task.config.doc_to_visual is not None for task in _leaf_tasks(loaded)):
        model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        raise SuiteError(
            f"suite {name!r} shows images, and {model_name} is a text-only model (no image processor or no vision tower); "
            f"evaluate it on text suites through evals.lm_eval_bridge"
        )


def _scored_as_losses(process_results):
    """lmms-eval's built-in multiple-choice scoring takes argmin over choices (api/task.py:1624-1625: its
    models answer a loss); ours are log-probs, so it gets their negatives: acc and acc_norm then pick the
    most likely choice, as in lm-eval. (acc_mutual_info, used by no lmms-eval task, would invert.)"""

    def process(doc, results, **kwargs):
        return process_results(doc, [(-logprob, is_greedy) for logprob, is_greedy in results], **kwargs)

    return process


class _LoadedTasks:
    """The one thing `simple_evaluate` asks of a TaskManager (`load_task_or_group`), answered with the
    tasks loaded, checked and adjusted above: local and standard tasks in one run, datasets read once."""

    def __init__(self, task_dict: dict) -> None:
        self.task_dict = task_dict

    def load_task_or_group(self, task_list: Any = None, task_type: str = "simple") -> dict:
        return self.task_dict
