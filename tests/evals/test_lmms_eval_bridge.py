"""lmms-eval bridge: a tiny random-init toy VLM through lmms-eval's evaluator on a toy image-QA task
folder (tests/evals/lmms_toyqa), its requests checked against hand computations from the model itself,
and the errors a user can meet (text-only model, unknown or shadowing names, data not cached)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from evals.lmms_eval_bridge import InMemoryVLM, LoglikelihoodPair, evaluate_multimodal
from evals.vlm_prompt import vlm_prompt
from pruning.errors import SuiteError

FIXTURE = Path(__file__).parent / "lmms_toyqa"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SQUARES = [("red", "left"), ("green", "right"), ("blue", "left"), ("red", "right")]
METRICS = {
    "toyqa_mc": {"acc", "acc_norm"},
    "toyqa_short": {"exact_match", "colour_exact_match", "position_exact_match"},
}


def _square(colour: str, position: str):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (48, 48), "white")
    left = 4 if position == "left" else 28
    ImageDraw.Draw(image).rectangle([left, 16, left + 15, 31], fill=COLOURS[colour])
    return image


@pytest.fixture(scope="module")
def toyqa_dir(tmp_path_factory) -> Path:
    """The fixture tasks with their data: 4 PNGs, 8 questions (colour and position), YAMLs pointing at them."""
    root = tmp_path_factory.mktemp("toyqa")
    docs = []
    for index, (colour, position) in enumerate(SQUARES):
        image_file = root / f"square_{index}.png"
        _square(colour, position).save(image_file)
        docs.append(dict(image=str(image_file), question="what colour is the square ?", choices=list(COLOURS), answer=colour, question_type="colour"))
        docs.append(dict(image=str(image_file), question="where is the square ?", choices=["left", "right"], answer=position, question_type="position"))
    (root / "toyqa.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (root / "utils.py").write_text((FIXTURE / "utils.py").read_text())
    for config in FIXTURE.glob("*.yaml"):
        (root / config.name).write_text(config.read_text().replace("@DATA_DIR@", str(root)))
    return root


@pytest.fixture(scope="module")
def docs(toyqa_dir) -> list[dict]:
    return [json.loads(line) for line in (toyqa_dir / "toyqa.jsonl").read_text().splitlines()]


def _tiny_toy_vlm(words):
    """(model, processor): the embedded VLM's architecture at a tiny size, random weights."""
    from pruning.models.toy_vlm import ToyVLMSpec, build_model, build_processor, build_tokenizer

    spec = ToyVLMSpec(text_layers=2, vision_layers=1, vision_hidden=32, text_hidden=32, heads=2)
    tokenizer = build_tokenizer(words)
    return build_model(tokenizer, spec).eval(), build_processor(tokenizer, spec)


@pytest.fixture(scope="module")
def toy_vlm():
    return _tiny_toy_vlm("what colour is the square where ? .".split() + list(COLOURS) + ["left", "right", "a", "small"])


def _request(request_type: str, context: str, second, image, doc_id: int = 0):
    """An Instance as lmms-eval builds it; `doc_to_visual` ignores the doc and gives `image`."""
    from lmms_eval.api.instance import Instance

    arguments = (context, second, lambda doc: [image], doc_id, "toy", "test")
    return Instance(request_type=request_type, arguments=arguments, idx=0, metadata={"task": "toy", "doc_id": doc_id, "repeats": 1})


def _lm(model, processor, n_docs: int, batch_size: int = 4) -> InMemoryVLM:
    lm = InMemoryVLM(model, processor, batch_size=batch_size)
    lm.task_dict = {"toy": {"test": [{}] * n_docs}}  # simple_evaluate fills this with the task datasets
    return lm


def test_loglikelihood_is_the_sum_of_continuation_log_probs(toy_vlm):
    model, processor = toy_vlm
    image = _square("red", "left")
    prompt = vlm_prompt(processor, "what colour is the square ?")
    inputs = processor(text=[prompt + " red ."], images=[image], return_tensors="pt")
    with torch.no_grad():
        log_probs = torch.log_softmax(model(**inputs).logits[0].float(), dim=-1)
    ids = inputs["input_ids"][0]
    # the last two tokens ("red", ".") are predicted from the positions just before them
    expected = log_probs[-3, ids[-2]] + log_probs[-2, ids[-1]]
    greedy = processor.tokenizer.decode([int(log_probs[-3].argmax())])

    lm = _lm(model, processor, n_docs=1)
    [(logprob, is_greedy)] = lm.loglikelihood([_request("loglikelihood", "what colour is the square ?", " red .", image)])
    assert logprob == pytest.approx(float(expected), abs=1e-5)
    assert is_greedy is False or greedy == "red"
    [(greedy_logprob, greedy_is_greedy)] = lm.loglikelihood([_request("loglikelihood", "what colour is the square ?", f" {greedy}", image)])
    assert greedy_is_greedy is True and greedy_logprob == pytest.approx(float(log_probs[-3].max()), abs=1e-5)


def test_loglikelihood_in_a_padded_batch_equals_one_at_a_time(toy_vlm):
    model, processor = toy_vlm
    requests = [
        _request("loglikelihood", question, continuation, _square(colour, position))
        for question, continuation, colour, position in [
            ("what colour is the square ?", " red", "red", "left"),
            ("where is the small square ?", " left .", "blue", "right"),
            ("what ?", " a small green square", "green", "left"),
        ]
    ]
    batched = _lm(model, processor, n_docs=1, batch_size=3).loglikelihood(requests)
    alone = [_lm(model, processor, n_docs=1).loglikelihood([request])[0] for request in requests]
    assert [b[0] for b in batched] == pytest.approx([a[0] for a in alone], abs=1e-4)
    assert [b[1] for b in batched] == [a[1] for a in alone]


def test_loglikelihood_pair_survives_lmms_eval_unwrapping():
    """lmms-eval 0.7.3 stringifies a plain (float, bool) response (api/instance.py unwrap_generation_output)."""
    from lmms_eval.api.instance import unwrap_generation_output

    pair = LoglikelihoodPair(-2.5, True)
    assert pair == (-2.5, True) and unwrap_generation_output(pair) == ((-2.5, True), None)
    assert unwrap_generation_output((-2.5, True))[0] == "(-2.5, True)"  # the problem, should lmms-eval change
    assert copy.deepcopy(pair) == pair


def test_generate_until_is_greedy_generate(toy_vlm):
    model, processor = toy_vlm
    cases = [("what colour is the square ?", "red", "left"), ("where ?", "green", "right"), ("what is the small square ?", "blue", "left")]
    generation_kwargs = {"until": ["."], "max_new_tokens": 5, "temperature": 0.7}  # greedy whatever the task asks
    requests = [_request("generate_until", q, dict(generation_kwargs), _square(c, p), doc_id=i) for i, (q, c, p) in enumerate(cases)]
    answers = _lm(model, processor, n_docs=len(cases), batch_size=3).generate_until(requests)

    expected = []
    for question, colour, position in cases:
        inputs = processor(text=[vlm_prompt(processor, question)], images=[_square(colour, position)], return_tensors="pt")
        output = model.generate(**inputs, do_sample=False, max_new_tokens=5)
        text = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        expected.append(text.split(".", 1)[0])
    assert answers == expected


def test_evaluator_returns_every_metric(toy_vlm, toyqa_dir, docs):
    model, processor = toy_vlm
    evaluation = evaluate_multimodal(model, processor, ["toyqa"], toyqa_dir, batch_size=4)
    got = {(s.suite, s.metric): s for s in evaluation.scores}
    assert set(got) == {(suite, metric) for suite, metrics in METRICS.items() for metric in metrics}
    for score in evaluation.scores:
        assert 0.0 <= score.value <= 1.0 and score.higher_is_better and score.n_samples == len(docs)
    assert got[("toyqa_mc", "acc")].stderr is not None

    # every score is the mean of its items (`colour_exact_match` over the colour questions only)
    items: dict[tuple[str, str], list] = {}
    for item in evaluation.items:
        items.setdefault((item.suite, item.metric), []).append(item)
    assert set(items) == set(got)
    for key, rows in items.items():
        assert all(row.value in (0.0, 1.0) and row.weight is None for row in rows)
        assert sum(row.value for row in rows) / len(rows) == pytest.approx(got[key].value), key
    assert [row.item for row in items[("toyqa_mc", "acc")]] == [str(index) for index in range(len(docs))]
    colour_questions = [str(index) for index, doc in enumerate(docs) if doc["question_type"] == "colour"]
    assert [row.item for row in items[("toyqa_short", "colour_exact_match")]] == colour_questions

    # multiple choice picks the most likely choice (lmms-eval's own rule would pick the least likely)
    from PIL import Image

    lm = _lm(model, processor, n_docs=1)
    hits = 0
    for doc in docs:
        image = Image.open(doc["image"]).convert("RGB")
        pairs = lm.loglikelihood([_request("loglikelihood", doc["question"], f" {choice}", image) for choice in doc["choices"]])
        hits += doc["choices"][max(range(len(pairs)), key=lambda i: pairs[i][0])] == doc["answer"]
    assert got[("toyqa_mc", "acc")].value == pytest.approx(hits / len(docs))


def test_evaluation_is_deterministic(toy_vlm, toyqa_dir):
    model, processor = toy_vlm
    first, second = (evaluate_multimodal(model, processor, ["toyqa_short"], toyqa_dir, limit=2) for _ in range(2))
    assert first == second and {s.n_samples for s in first.scores} == {2} and len(first.items) == 2 * 2


def test_the_per_sample_log_is_one_jsonl_per_suite(toy_vlm, toyqa_dir, tmp_path):
    evaluate_multimodal(*toy_vlm, ["toyqa_mc"], toyqa_dir, limit=2, num_fewshot=0, samples_dir=tmp_path)
    samples = [json.loads(line) for line in (tmp_path / "toyqa_mc.jsonl").read_text().splitlines()]
    assert {sample["doc_id"] for sample in samples} == {0, 1} and all("arguments" in sample for sample in samples)


def test_text_only_model_cannot_take_an_image_suite(toy_vlm, toyqa_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = toy_vlm[1].tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(SuiteError, match="suite 'toyqa_mc' shows images, and LlamaForCausalLM is a text-only model"):
        evaluate_multimodal(LlamaForCausalLM(config), tokenizer, ["toyqa_mc"], toyqa_dir)


def test_unknown_suite_lists_the_local_ones(toy_vlm, toyqa_dir):
    with pytest.raises(SuiteError) as raised:
        evaluate_multimodal(*toy_vlm, ["toyqa_mc", "no_such_suite_xyz"], toyqa_dir)
    assert str(raised.value) == (
        "unknown suite 'no_such_suite_xyz': not a local suite (toyqa, toyqa_mc, toyqa_short) and not an lmms-eval task"
    )
    with pytest.raises(SuiteError, match=r"not a local suite \(none: no include_path"):
        evaluate_multimodal(*toy_vlm, ["toyqa_mc"], None)
    with pytest.raises(SuiteError, match=r"unknown suite 'toyqa_mcc': .*; did you mean 'toyqa_mc'\?$"):
        evaluate_multimodal(*toy_vlm, ["toyqa_mcc"], [toyqa_dir])  # one include directory or several


def test_a_local_suite_may_not_shadow_a_standard_task(toy_vlm, toyqa_dir, tmp_path):
    (tmp_path / "mme.yaml").write_text((toyqa_dir / "toyqa_mc.yaml").read_text().replace("task: toyqa_mc", "task: mme"))
    with pytest.raises(SuiteError, match="local suite 'mme' .* has the name of an lmms-eval task"):
        evaluate_multimodal(*toy_vlm, ["mme"], tmp_path)


def test_standard_task_without_its_dataset_names_the_cache(toy_vlm, toyqa_dir):
    from huggingface_hub import constants

    if (Path(constants.HF_HUB_CACHE) / "datasets--lmms-lab--MME").exists():
        pytest.skip("MME is in this machine's Hugging Face cache")
    with pytest.raises(SuiteError, match="'mme' is an lmms-eval task whose dataset is not in the local Hugging Face cache"):
        evaluate_multimodal(*toy_vlm, ["mme"], toyqa_dir, limit=1)


def test_the_image_qa_suites_report_every_question_type(tmp_path_factory):
    """The real task files of evals.imageqa (its smallest build: one question of each type)."""
    from evals.imageqa import IMAGEQA_TAG, MC_TASK, QUESTION_TYPES, SHORT_TASK, build_imageqa, metric_keys, tasks_dir, vocabulary

    n = len(QUESTION_TYPES)
    root = build_imageqa(tmp_path_factory.mktemp("imageqa_cache"), train=n, calibration=n, test=n)
    evaluation = evaluate_multimodal(*_tiny_toy_vlm(vocabulary()), [IMAGEQA_TAG], tasks_dir(root), limit=n)
    scores = evaluation.scores
    assert {(s.suite, s.metric) for s in scores} == {(suite, key) for suite in (MC_TASK, SHORT_TASK) for key in metric_keys()}
    assert {f"acc_{name}" for name in QUESTION_TYPES} < set(metric_keys())
    assert all(0.0 <= s.value <= 1.0 and s.n_samples == n for s in scores)
    # each item has `acc` and the `acc_<qtype>` of its own question type: one item per type here
    for suite in (MC_TASK, SHORT_TASK):
        per_item = {}
        for item in evaluation.items:
            if item.suite == suite:
                per_item.setdefault(item.item, []).append(item.metric)
        assert sorted(per_item) == [str(index) for index in range(n)] and all(metrics[0] == "acc" and len(metrics) == 2 for metrics in per_item.values())
        assert sorted(metric for metrics in per_item.values() for metric in metrics[1:]) == sorted(f"acc_{name}" for name in QUESTION_TYPES)


def test_an_offloaded_vlm_scores_the_same_one_block_at_a_time(toy_vlm, toyqa_dir, monkeypatch):
    """What the evaluation stage does with `offload`: lmms-eval's generation and log-likelihoods inside `onloaded`."""
    import copy

    from pruning.models.adapters import adapter_for
    from pruning.models.offload import offload_model, onloaded
    from tests.pruning.local.test_offload import DeviceLedger

    model, processor = toy_vlm
    expected = evaluate_multimodal(model, processor, ["toyqa_short", "toyqa_mc"], toyqa_dir, limit=2)
    offloaded = copy.deepcopy(model)
    adapter = adapter_for(offloaded)
    offload_model(offloaded, adapter, "cpu")
    ledger = DeviceLedger(monkeypatch, offloaded)
    with onloaded(offloaded, adapter, "cpu"):
        assert evaluate_multimodal(offloaded, processor, ["toyqa_short", "toyqa_mc"], toyqa_dir, limit=2) == expected
    assert ledger.peak_blocks == 1 and ledger.on_device == {}
