"""lmms-eval (0.7.3) task files of the image-QA suites, written into `<build>/tasks/`.

- `imageqa_mc`    multiple choice: the log-likelihood of each of the question type's choices after
                  the prompt (continuation `" <choice>"`), the most likely one taken;
- `imageqa_short` short answer: greedy generation of a few tokens, exact match after normalising.
Both read the test split of the build (`dataset_path: json` on its absolute path, the Arrow cache
kept with ours, not in ~/.cache), report `acc` and `acc_<qtype>` per question type, and carry the
tag `prunebench_imageqa`, which requests both. The names are checked against lmms-eval's own tasks
by the tests; `evals.lmms_eval_bridge` refuses a local name that shadows a standard one.

The hooks are `evals.imageqa.hooks`, reached through a small `utils.py` next to the YAMLs (the
`!function utils.<name>` lmms-eval resolves relative to a YAML); it finds the images relative to
its own location, so the build folder can be renamed into place after writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evals.imageqa.prompts import ANSWER_DELIMITER, QUESTION_PREFIX
from evals.imageqa.questions import QUESTION_TYPES
from pruning.files import write_text_atomic

MC_TASK = "imageqa_mc"
SHORT_TASK = "imageqa_short"
IMAGEQA_TAG = "prunebench_imageqa"
IMAGEQA_TASKS: tuple[str, ...] = (MC_TASK, SHORT_TASK)
TASKS_DIRNAME = "tasks"
EVAL_SPLIT = "test"
# Answers are one word: 8 tokens cover it under any subword tokenizer; generation also stops at
# the end of a line or sentence, or when a base model starts the next question.
SHORT_MAX_NEW_TOKENS = 8
SHORT_STOP = ("\n", ".", QUESTION_PREFIX)

UTILS_SOURCE = '''"""lmms-eval hooks of the prunebench image-QA suites (written by evals.imageqa.tasks; do not edit).

Images are found relative to the build folder this file sits in (<build>/tasks/utils.py).
"""

from pathlib import Path

from evals.imageqa import hooks

BUILD_ROOT = Path(__file__).resolve().parent.parent


def doc_to_visual(doc):
    return hooks.doc_to_visual(doc, BUILD_ROOT)


doc_to_text = hooks.doc_to_text
doc_to_target = hooks.doc_to_target
process_results_mc = hooks.process_results_mc
process_results_short = hooks.process_results_short
'''


class FunctionRef(str):
    """A `!function module.name` reference in a task YAML."""


class _TaskDumper(yaml.SafeDumper):
    def choose_scalar_style(self):
        # plain `!function utils.x`, as lmms-eval's own YAMLs write it (PyYAML would quote it)
        return "" if self.event.tag == "!function" else super().choose_scalar_style()


_TaskDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def metric_keys() -> list[str]:
    """`acc`, then `acc_<qtype>` for every question type, in registry order."""
    return ["acc", *(f"acc_{name}" for name in QUESTION_TYPES)]


def _common(task: str, data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    return {
        "tag": [IMAGEQA_TAG],
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {EVAL_SPLIT: str(Path(data_file).resolve())}, "cache_dir": str(Path(datasets_cache).resolve())},
        "test_split": EVAL_SPLIT,
        "doc_to_visual": FunctionRef("utils.doc_to_visual"),
        "doc_to_text": FunctionRef("utils.doc_to_text"),
        "doc_to_target": FunctionRef("utils.doc_to_target"),
    }


def _metric_list() -> list[dict[str, Any]]:
    return [{"metric": key, "aggregation": "mean", "higher_is_better": True} for key in metric_keys()]


def mc_task_config(data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    return {
        **_common(MC_TASK, data_file, datasets_cache),
        "output_type": "multiple_choice",
        "doc_to_choice": "choices",
        "target_delimiter": ANSWER_DELIMITER,
        "process_results": FunctionRef("utils.process_results_mc"),
        "metric_list": _metric_list(),
        "metadata": {"version": 1.0},
    }


def short_task_config(data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    return {
        **_common(SHORT_TASK, data_file, datasets_cache),
        "output_type": "generate_until",
        "generation_kwargs": {
            "until": list(SHORT_STOP),
            "max_new_tokens": SHORT_MAX_NEW_TOKENS,
            "do_sample": False,
            "temperature": 0.0,
        },
        "process_results": FunctionRef("utils.process_results_short"),
        "metric_list": _metric_list(),
        "metadata": {"version": 1.0},
    }


TASK_CONFIGS = {MC_TASK: mc_task_config, SHORT_TASK: short_task_config}


def task_files(data_file: Path, datasets_cache: Path) -> dict[str, str]:
    """File name -> text of every file of the tasks folder (pure: the same inputs give the same bytes)."""
    files = {
        f"{name}.yaml": yaml.dump(config(data_file, datasets_cache), Dumper=_TaskDumper, sort_keys=False, allow_unicode=True, width=1000)
        for name, config in TASK_CONFIGS.items()
    }
    files["utils.py"] = UTILS_SOURCE
    return files


def write_task_files(tasks_dir: Path, data_file: Path, datasets_cache: Path) -> Path:
    """Write (or rewrite) the task files into `tasks_dir`, each whole then renamed; returns `tasks_dir`."""
    tasks_dir = Path(tasks_dir)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for name, text in task_files(data_file, datasets_cache).items():
        write_text_atomic(tasks_dir / name, text)
    return tasks_dir
