"""The lmms-eval task files: indexed and loaded by lmms-eval's own TaskManager, one document per test
record, and scored overall and per question type by lmms-eval's evaluator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evals.imageqa import IMAGEQA_TAG, MC_TASK, SHORT_TASK, answer_text, metric_keys, question_text, read_manifest, tasks_dir
from evals.imageqa.questions import QUESTION_TYPES

pytest.importorskip("lmms_eval")


@pytest.fixture(scope="module")
def task_manager(small_build):
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir(small_build)), include_defaults=False)


def test_names_do_not_shadow_lmms_eval_tasks():
    import lmms_eval

    ours = {MC_TASK, SHORT_TASK, IMAGEQA_TAG}
    tasks_root = Path(lmms_eval.__file__).parent / "tasks"
    for path in tasks_root.rglob("*"):
        if path.suffix in (".yaml", ".py") or "yaml" in path.name:
            assert not ours & set(re.findall(r"[\w-]+", path.read_text(errors="ignore"))), path


def test_the_folder_is_indexed_with_both_suites_and_their_tag(task_manager):
    assert set(task_manager.all_subtasks) == {MC_TASK, SHORT_TASK}
    assert task_manager.all_tags == [IMAGEQA_TAG]


def test_tasks_load_with_one_document_per_test_record_and_build_requests(task_manager, small_build):
    n_test = read_manifest(small_build)["sizes"]["test"]
    tasks = task_manager.load_task_or_group([IMAGEQA_TAG])
    assert set(tasks) == {MC_TASK, SHORT_TASK}
    for name, task in tasks.items():
        docs = task.test_docs()
        assert len(docs) == n_test
        assert sorted(task.aggregation()) == sorted(metric_keys()) == sorted(["acc", *(f"acc_{t}" for t in QUESTION_TYPES)])
        assert all(task.higher_is_better().values())
        task.build_all_requests(limit=None, rank=0, world_size=1)
        (image,) = task.doc_to_visual(docs[0])
        assert image.mode == "RGB" and image.size == (48, 48)
        first = task.instances[0].args
        assert first[0] == question_text(docs[task.instances[0].doc_id])
        if name == MC_TASK:
            assert len(task.instances) == sum(len(doc["choices"]) for doc in docs)
            continuations = [i.args[1] for i in task.instances if i.doc_id == task.instances[0].doc_id]
            assert continuations == [answer_text(choice) for choice in docs[task.instances[0].doc_id]["choices"]]
        else:
            assert len(task.instances) == n_test
            assert first[1]["max_new_tokens"] == 8 and "\n" in first[1]["until"]


def _oracle_blind_to_digits():
    """An lmms-eval model that answers every question right except the digit ones."""
    from lmms_eval.api.model import lmms

    class OracleBlindToDigits(lmms):
        def __init__(self) -> None:
            super().__init__()
            self.accelerator = None

        def _doc(self, request):
            *_, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert doc_to_visual(doc)[0].size == (48, 48)
            return doc

        def loglikelihood(self, requests):
            results = []
            for request in requests:
                doc = self._doc(request)
                right = request.args[1] == answer_text(doc["answer"])
                sees = doc["qtype"] != "digit"
                results.append((0.0 if right == sees else -5.0, right))
            return results

        def generate_until(self, requests):
            return [f"The {doc['answer'].upper()}." if doc["qtype"] != "digit" else "ten" for doc in map(self._doc, requests)]

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    return OracleBlindToDigits()


def test_evaluation_reports_accuracy_overall_and_per_question_type(task_manager, small_build):
    from lmms_eval.evaluator import simple_evaluate

    counts = read_manifest(small_build)["counts"]["test"]
    results = simple_evaluate(
        model=_oracle_blind_to_digits(), tasks=[IMAGEQA_TAG], task_manager=task_manager, bootstrap_iters=0, log_samples=False
    )["results"]
    for name in (MC_TASK, SHORT_TASK):
        scores = results[name]
        assert scores["acc,none"] == pytest.approx(1 - counts["digit"] / sum(counts.values()))
        assert scores["acc_digit,none"] == 0.0
        assert all(scores[f"acc_{qtype},none"] == 1.0 for qtype in QUESTION_TYPES if qtype != "digit")
