"""The finetune stage's corpus: the train split of a built-in one, or the user's own text (`finetune.data`),
checked at the door."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pruning.errors import ConfigError
from pruning.specs import FinetuneSpec, ShortGPTSpec
from tasks.finetune import check_finetune_corpus, finetune_corpus, finetune_examples

TEXT = "".join(f"Line {n}: the quick brown fox number {n} jumps over the lazy dog.\n" for n in range(200))


def test_a_finetune_on_the_users_own_calibration_data_needs_training_data_of_its_own(tmp_path):
    for corpus in ("jargon", "docstrings", "imageqa"):
        check_finetune_corpus(FinetuneSpec(), corpus, multimodal=False, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^finetune trains on the train split of a built-in corpus \(docstrings, imageqa, jargon\); "
                                          r"calibration.corpus './domain.txt' is your own data, which has none: "
                                          r"name your training text in the method's finetune.data$"):  # fmt: skip
        check_finetune_corpus(FinetuneSpec(), "./domain.txt", multimodal=False, cache_dir=tmp_path)
    (tmp_path / "train.txt").write_text(TEXT)
    check_finetune_corpus(FinetuneSpec(data=str(tmp_path / "train.txt")), "./domain.txt", multimodal=False, cache_dir=tmp_path)


def test_finetune_data_that_cannot_be_trained_on_is_named_before_compute(tmp_path):
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(ConfigError, match=r"^finetune.seq_len=256: finetune.data '.*short.txt' has 11 characters, fewer than a window's tokens$"):
        check_finetune_corpus(FinetuneSpec(data=str(tmp_path / "short.txt")), "jargon", multimodal=False, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^finetune.data .* is text; a vision-language model finetunes on the image-QA training split"):
        check_finetune_corpus(FinetuneSpec(data=str(tmp_path / "short.txt")), "imageqa", multimodal=True, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^finetune.data .*gone.txt: no such file or folder$"):  # the reader's message, naming this field
        check_finetune_corpus(FinetuneSpec(data=str(tmp_path / "gone.txt")), "jargon", multimodal=False, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^finetune.data 'imageqa' is image-question-answer data; finetune.data reads text$"):
        check_finetune_corpus(FinetuneSpec(data="imageqa"), "jargon", multimodal=False, cache_dir=tmp_path)


def test_the_data_field_takes_a_path_or_a_corpus_and_refuses_calibration_sizes():
    assert FinetuneSpec(data="/data/train.txt").data.corpus == "/data/train.txt"
    hub = FinetuneSpec(data={"corpus": "allenai/c4", "data_files": "en/c4-train.00000-of-01024.json.gz"}).data
    assert hub.data_files == "en/c4-train.00000-of-01024.json.gz"
    with pytest.raises(ValidationError, match=r"n_samples, seq_len size calibration; the finetune's slice is sized by finetune.examples"):
        FinetuneSpec(data={"corpus": "/data/train.txt", "n_samples": 8, "seq_len": 64})
    with pytest.raises(ValidationError, match="finetune.data reads text"):
        FinetuneSpec(data={"corpus": "/data/vqa.jsonl", "kind": "image_qa"})
    # absent, it is absent from the method's parameters: every earlier finetune keeps its method id
    plain = ShortGPTSpec(name="shortgpt", drop_ratio=0.25, finetune=FinetuneSpec())
    assert "data" not in plain.model_dump()["finetune"]
    assert plain.method_id == ShortGPTSpec.model_validate({"name": "shortgpt", "drop_ratio": 0.25, "finetune": {}}).method_id
    assert ShortGPTSpec(name="shortgpt", drop_ratio=0.25, finetune=FinetuneSpec(data="/data/train.txt")).method_id != plain.method_id


def test_the_stage_trains_on_windows_of_the_users_text_keyed_on_its_contents(tmp_path, smollm2_checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    data = tmp_path / "train.txt"
    data.write_text(TEXT)
    spec = FinetuneSpec(data=str(data), examples=5, seq_len=16)
    corpus = finetune_corpus(spec, "jargon")
    assert corpus.corpus == str(data) and corpus.fingerprint is not None
    examples = finetune_examples(tokenizer, corpus, spec, tmp_path)
    assert len(examples) == 5 and all(example["input_ids"].shape == (1, 16) for example in examples)
    assert all(tokenizer.decode(example["input_ids"][0]) in TEXT for example in examples)
    data.write_text(TEXT.replace("fox", "cat"))
    assert finetune_corpus(spec, "jargon").fingerprint != corpus.fingerprint  # an edited file is other training data
    assert finetune_corpus(FinetuneSpec(), "jargon") == "jargon"


def test_only_where_the_text_is_enters_the_method_and_tells_two_finetunes_apart():
    from flows.config import ExperimentConfig

    healed = ShortGPTSpec(name="shortgpt", drop_ratio=0.25, finetune=FinetuneSpec(data={"corpus": "/data/train.jsonl", "text_field": "body"}))
    assert healed.model_dump()["finetune"]["data"] == {"corpus": "/data/train.jsonl", "text_field": "body"}  # no calibration sizes
    assert ShortGPTSpec.model_validate(healed.model_dump()) == healed
    config = ExperimentConfig.model_validate({"name": "x", "studies": [{
        "model": {"source": "packaged:smollm2-135m"}, "eval": {"suites": ["jargon_ppl"]},
        "methods": [{"name": "shortgpt", "drop_ratio": 0.25, "finetune": {}},
                    {"name": "shortgpt", "drop_ratio": 0.25, "finetune": {"data": "/data/train.txt"}}]}]})  # fmt: skip
    assert [method.label for method in config.studies[0].methods] == [
        "shortgpt 25% +ft (finetune.data.corpus=none)", "shortgpt 25% +ft (finetune.data.corpus=/data/train.txt)"]
