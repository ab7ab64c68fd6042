"""Offline image question answering: rendered scenes and real handwritten digits, in disjoint
train / calibration / test splits, with lmms-eval task files for the test split.

    root = build_imageqa(cache_dir)                          # <cache_dir>/imageqa/<name>/, built once
    records = load_records(split_path(root, "train"))        # validated ImageQARecords
    prompt, target = question_text(record), answer_text(record.answer)
    include_path = tasks_dir(root)                           # imageqa_mc, imageqa_short, tag prunebench_imageqa

Question types (`QUESTION_TYPES`): colour, shape, count, position, relation (rendered scenes) and
digit (scikit-learn's digits). `vocabulary()` lists every token a prompt or answer can hold;
`chance_levels()` the accuracy of a uniform guess per type.
"""

from evals.imageqa.generator import (
    DEFAULT_CALIBRATION,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SEED,
    DEFAULT_TEST,
    DEFAULT_TRAIN,
    SPLITS,
    build_imageqa,
    read_manifest,
    split_path,
    tasks_dir,
)
from evals.imageqa.prompts import answer_text, question_text
from evals.imageqa.questions import QUESTION_TYPES, chance_levels, vocabulary
from evals.imageqa.records import ImageQARecord, load_image, load_records
from evals.imageqa.tasks import IMAGEQA_TAG, IMAGEQA_TASKS, MC_TASK, SHORT_TASK, metric_keys

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_SEED",
    "DEFAULT_TEST",
    "DEFAULT_TRAIN",
    "IMAGEQA_TAG",
    "IMAGEQA_TASKS",
    "MC_TASK",
    "QUESTION_TYPES",
    "SHORT_TASK",
    "SPLITS",
    "ImageQARecord",
    "answer_text",
    "build_imageqa",
    "chance_levels",
    "load_image",
    "load_records",
    "metric_keys",
    "question_text",
    "read_manifest",
    "split_path",
    "tasks_dir",
    "vocabulary",
]
