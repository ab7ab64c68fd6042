"""Seeded image-QA records in disjoint train / calibration / test splits, built once per cache directory.

Layout of a build (`<cache_dir>/imageqa/<name>/`, the name spelling out every parameter):

    manifest.json                 parameters, counts per split and question type, content hash
    train.jsonl calibration.jsonl test.jsonl      one record per line (see records.ImageQARecord)
    images/<split>/<id>.png       one RGB PNG per record
    tasks/imageqa_mc.yaml imageqa_short.yaml utils.py      lmms-eval task files (tasks.py)

How records are drawn: each split is spread evenly over the question types; within a type the
answers cycle through its choices (so they are balanced to within one) in a seeded order, and the
type draws an image with each answer. A split is written in rounds of one record of each type (the
types in a seeded order within each round), so every prefix of it is balanced over the types to
within one: lmms-eval's `limit` takes the first N, and the first 600 of the test split are 100 of
each type. Splits are drawn test first, then calibration, then train,
each from its own seeded streams, so the test split depends only on the seed, its size and the
image size. No image is in two splits: a scene (its set of shapes) is drawn again if any split has
it already, and the digits set is partitioned by sample index, the evaluation splits taking what
they need and train the rest (train may show a digit sample twice once its share is used up).

The build is written to a temporary directory and renamed into place, manifest last, so a folder
with a manifest is complete; the same parameters reuse it. The same seed gives byte-identical
records, images and manifest on every machine (the task YAMLs hold absolute paths, so they differ
by location).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from PIL import Image

from evals.imageqa.digits import indices_by_digit
from evals.imageqa.questions import QUESTION_TYPES, DrawContext, ImageSpec, QuestionType, chance_levels
from evals.imageqa.records import ImageQARecord
from evals.imageqa.tasks import EVAL_SPLIT, IMAGEQA_TASKS, TASKS_DIRNAME, task_files, write_task_files
from pruning.errors import SuiteError

FORMAT_VERSION = 2  # bump when records or images change for the same parameters (2: records in balanced rounds)
DEFAULT_SEED = 1234
DEFAULT_IMAGE_SIZE = 48
MIN_IMAGE_SIZE = 24  # the layouts need room for four shapes apart
# ~1,000 training records per question type; test 500 per type (binomial stderr <= 0.009 overall,
# <= 0.022 per type); calibration as many as a calibration run of 256 image-question pairs uses.
DEFAULT_TRAIN = 6000
DEFAULT_CALIBRATION = 256
DEFAULT_TEST = 3000
SPLITS: tuple[str, ...] = ("train", "calibration", "test")
DRAW_ORDER: tuple[str, ...] = ("test", "calibration", "train")  # the last one takes what is left of the digits
MANIFEST_NAME = "manifest.json"
MAX_REDRAWS = 10_000  # draws of a scene that some split already has, before giving up


@dataclass(frozen=True)
class PlannedRecord:
    """A record before it is written: its question, answer and the image that answers it."""

    qtype: str
    question: str
    answer: str
    image: ImageSpec


# --------------------------------------------------------------------------- planning (pure)


def type_counts(total: int, qtypes: Sequence[str]) -> dict[str, int]:
    """`total` spread evenly over the types; the first `total % len(qtypes)` get one more."""
    base, extra = divmod(total, len(qtypes))
    return {name: base + (index < extra) for index, name in enumerate(qtypes)}


def balanced_answers(choices: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """`n` answers, each choice `n // k` or `n // k + 1` times (which ones get the extra is seeded), shuffled."""
    order = list(choices)
    rng.shuffle(order)
    answers = [order[index % len(order)] for index in range(n)]
    rng.shuffle(answers)
    return answers


def balanced_order(records: Sequence[PlannedRecord], qtypes: Sequence[str], rng: random.Random) -> list[PlannedRecord]:
    """`records` in rounds of one per question type (each type's records in their own order, the
    types shuffled within every round): any prefix holds every type to within one of the others."""
    queues = {name: [record for record in records if record.qtype == name] for name in qtypes}
    ordered: list[PlannedRecord] = []
    for round_index in range(max((len(queue) for queue in queues.values()), default=0)):
        present = [name for name in qtypes if round_index < len(queues[name])]
        ordered += [queues[name][round_index] for name in rng.sample(present, len(present))]
    return ordered


def partition_digits(
    needed: Mapping[str, Counter], seed: int, pools: Mapping[str, Sequence[int]] | None = None
) -> dict[str, dict[str, list[int]]]:
    """Split -> digit -> sample indices, disjoint across splits. Each split of `DRAW_ORDER` but the
    last takes exactly the samples it needs (`needed[split][digit]`), in a seeded order; the last
    takes every sample left."""
    pools = indices_by_digit() if pools is None else pools
    partition: dict[str, dict[str, list[int]]] = {split: {} for split in DRAW_ORDER}
    for digit, indices in pools.items():
        order = list(indices)
        random.Random(f"{seed}:digits:{digit}").shuffle(order)
        start = 0
        for split in DRAW_ORDER[:-1]:
            count = needed[split][digit]
            partition[split][digit] = order[start : start + count]
            start += count
        partition[DRAW_ORDER[-1]][digit] = order[start:]
        if start > len(order) or (needed[DRAW_ORDER[-1]][digit] and start == len(order)):
            raise SuiteError(
                f"the digits set has {len(order)} samples of {digit}, fewer than the splits ask for "
                f"({', '.join(f'{split} {needed[split][digit]}' for split in DRAW_ORDER)}); make the splits smaller"
            )
    return partition


def _cycle_through(pools: Mapping[str, Sequence[int]]) -> Callable[[str], int]:
    """A `next_digit_index`: each pool in order, from its start again once used up."""
    taken: Counter = Counter()

    def next_digit_index(digit: str) -> int:
        index = pools[digit][taken[digit] % len(pools[digit])]
        taken[digit] += 1
        return index

    return next_digit_index


def _draw_new(
    qtype: QuestionType, answer: str, rng: random.Random, context: DrawContext, owner: dict[tuple, str], split: str
) -> tuple[str, ImageSpec]:
    """A question and image for `answer` whose image no other split has, nor this one unless the
    type's images may repeat inside a split; `owner` (image key -> split) records it."""
    for _ in range(MAX_REDRAWS):
        question, image = qtype.draw(answer, rng, context)
        holder = owner.get(image.key)
        if holder is None or (holder == split and qtype.repeats_in_split):
            owner[image.key] = split
            return question, image
    raise SuiteError(f"could not draw a {qtype.name} image with answer {answer!r} unseen in every split; make the splits smaller")


def plan_splits(seed: int, image_size: int, sizes: Mapping[str, int]) -> dict[str, list[PlannedRecord]]:
    """Split -> its records in their final (seeded, shuffled) order. Pure: writes nothing."""
    names = list(QUESTION_TYPES)
    answers = {
        split: {
            name: balanced_answers(QUESTION_TYPES[name].choices, count, random.Random(f"{seed}:{split}:{name}:answers"))
            for name, count in type_counts(sizes[split], names).items()
        }
        for split in DRAW_ORDER
    }
    digit_pools = partition_digits({split: Counter(answers[split]["digit"]) for split in DRAW_ORDER}, seed)
    owner: dict[tuple, str] = {}  # image key -> the split that has it
    planned: dict[str, list[PlannedRecord]] = {}
    for split in DRAW_ORDER:
        context = DrawContext(image_size, _cycle_through(digit_pools[split]))
        records = []
        for name in names:
            rng = random.Random(f"{seed}:{split}:{name}:images")
            for answer in answers[split][name]:
                question, image = _draw_new(QUESTION_TYPES[name], answer, rng, context, owner, split)
                records.append(PlannedRecord(name, question, answer, image))
        planned[split] = balanced_order(records, names, random.Random(f"{seed}:{split}:order"))
    return {split: planned[split] for split in SPLITS}


# --------------------------------------------------------------------------- writing


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding without metadata: the same pixels give the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_split(split: str, planned: Sequence[PlannedRecord], image_size: int, root: Path, content_hash: hashlib._Hash) -> list[ImageQARecord]:
    """`<root>/images/<split>/*.png` and `<root>/<split>.jsonl`; feeds every written byte to `content_hash`."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    records = []
    for index, item in enumerate(planned):
        record_id = f"{split}-{index:05d}"
        relative = f"images/{split}/{record_id}.png"
        png = png_bytes(item.image.render(image_size))
        (root / relative).write_bytes(png)
        content_hash.update(png)
        records.append(
            ImageQARecord(
                id=record_id,
                qtype=item.qtype,
                question=item.question,
                answer=item.answer,
                choices=QUESTION_TYPES[item.qtype].choices,
                image=relative,
                image_path=root / relative,
                objects=item.image.objects,
                digit_index=item.image.digit_index,
            )
        )
    text = "".join(json.dumps(record.to_json(), sort_keys=True) + "\n" for record in records)
    (root / f"{split}.jsonl").write_text(text, encoding="utf-8")
    content_hash.update(text.encode("utf-8"))
    return records


def build_name(seed: int, image_size: int, sizes: Mapping[str, int]) -> str:
    counts = "-".join(str(sizes[split]) for split in SPLITS)
    return f"v{FORMAT_VERSION}-seed{seed}-{image_size}px-{counts}"


def _parameters(seed: int, image_size: int, sizes: Mapping[str, int]) -> dict:
    return {"format_version": FORMAT_VERSION, "seed": seed, "image_size": image_size, "sizes": {split: sizes[split] for split in SPLITS}}


def _manifest(parameters: dict, records: Mapping[str, Sequence[ImageQARecord]], content_sha256: str) -> dict:
    chances = chance_levels()
    return {
        **parameters,
        "counts": {split: dict(Counter(record.qtype for record in records[split])) for split in SPLITS},
        "answer_counts": {
            split: {name: dict(sorted(Counter(r.answer for r in records[split] if r.qtype == name).items())) for name in QUESTION_TYPES}
            for split in SPLITS
        },
        "question_types": {name: {"choices": list(qtype.choices), "chance": chances[name]} for name, qtype in QUESTION_TYPES.items()},
        "splits": {split: f"{split}.jsonl" for split in SPLITS},
        "tasks": {"dir": TASKS_DIRNAME, "names": list(IMAGEQA_TASKS)},
        "content_sha256": content_sha256,
    }


def read_manifest(root: Path) -> dict | None:
    """The build's manifest, or None where the folder holds no complete build."""
    try:
        return json.loads((Path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _datasets_cache(cache_dir: Path) -> Path:
    return Path(cache_dir) / "datasets"  # shared with the text suites' lm-eval tasks


def _write_build(staging: Path, final_root: Path, cache_dir: Path, seed: int, image_size: int, sizes: Mapping[str, int]) -> None:
    planned = plan_splits(seed, image_size, sizes)
    content_hash = hashlib.sha256()
    records = {split: write_split(split, planned[split], image_size, staging, content_hash) for split in SPLITS}
    # the YAMLs name the data file where it will be once renamed into place
    write_task_files(staging / TASKS_DIRNAME, final_root / f"{EVAL_SPLIT}.jsonl", _datasets_cache(cache_dir))
    manifest = _manifest(_parameters(seed, image_size, sizes), records, content_hash.hexdigest())
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_parameters(image_size: int, sizes: Mapping[str, int]) -> None:
    if image_size < MIN_IMAGE_SIZE:
        raise SuiteError(f"image-QA image_size {image_size} is too small: the scenes need at least {MIN_IMAGE_SIZE} pixels")
    for split in SPLITS:
        if sizes[split] < len(QUESTION_TYPES):
            raise SuiteError(
                f"image-QA {split} size {sizes[split]} is smaller than the {len(QUESTION_TYPES)} question types; every split shows every type"
            )


def build_imageqa(
    cache_dir: Path,
    seed: int = DEFAULT_SEED,
    image_size: int = DEFAULT_IMAGE_SIZE,
    train: int = DEFAULT_TRAIN,
    calibration: int = DEFAULT_CALIBRATION,
    test: int = DEFAULT_TEST,
) -> Path:
    """The build folder of these parameters under `<cache_dir>/imageqa/`, built on first use.

    A complete build (one with a manifest of the same parameters) is reused; its task files are
    rewritten only if the cache directory moved since. Concurrent builders each write their own
    temporary folder; the first rename wins and the others use its result."""
    sizes = {"train": train, "calibration": calibration, "test": test}
    _check_parameters(image_size, sizes)
    parameters = _parameters(seed, image_size, sizes)
    root = (Path(cache_dir) / "imageqa" / build_name(seed, image_size, sizes)).resolve()
    if not _is_build_of(root, parameters):
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _write_build(staging, root, cache_dir, seed, image_size, sizes)
            if root.exists() and not _is_build_of(root, parameters):
                _remove_aside(root)  # a stale or foreign folder under our name
            try:
                os.rename(staging, root)
            except OSError:
                if not _is_build_of(root, parameters):  # not another builder's finished result
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _refresh_task_files(root, cache_dir)
    return root


def _is_build_of(root: Path, parameters: dict) -> bool:
    manifest = read_manifest(root)
    return manifest is not None and all(manifest.get(key) == value for key, value in parameters.items())


def _remove_aside(path: Path) -> None:
    aside = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _refresh_task_files(root: Path, cache_dir: Path) -> None:
    """Rewrite the task files when they name another location (the cache directory was moved)."""
    data_file, datasets_cache = root / f"{EVAL_SPLIT}.jsonl", _datasets_cache(cache_dir)
    expected = task_files(data_file, datasets_cache)
    tasks_dir = root / TASKS_DIRNAME
    if any(not (tasks_dir / name).is_file() or (tasks_dir / name).read_text(encoding="utf-8") != text for name, text in expected.items()):
        write_task_files(tasks_dir, data_file, datasets_cache)


def split_path(root: Path, split: str) -> Path:
    """`<build>/<split>.jsonl` (read it with `evals.imageqa.records.load_records`)."""
    if split not in SPLITS:
        raise SuiteError(f"unknown image-QA split {split!r}; known: {', '.join(SPLITS)}")
    return Path(root) / f"{split}.jsonl"


def tasks_dir(root: Path) -> Path:
    """`<build>/tasks`: the `include_path` that gives lmms-eval the image-QA suites."""
    return Path(root) / TASKS_DIRNAME
