"""The calibration stage on the user's own data: every local form gives the windows its text gives, and
the contents name the set; image-question records feed a VLM as the built-in image-QA pairs do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pruning.calibration import calibration_ids
from pruning.errors import ConfigError
from pruning.specs import CalibrationSpec, ModelSpec
from tasks.artifacts import CheckpointRef
from tasks.calibration import calibration_inputs, calibration_set, check_calibration, fingerprinted

DOCUMENTS = [
    "Sparse models keep a fraction of their weights; the rest are zero.",
    "Calibration data decides which weights matter, so it should look like the text the model will see.",
    "A window of tokens is drawn at a seeded offset from the joined documents.",
]


@pytest.fixture(scope="module")
def text_model(smollm2_checkpoint) -> tuple[CheckpointRef, ModelSpec]:
    """Only the tokenizer is read: the packaged model's checkpoint stands for any text model."""
    return CheckpointRef(path=str(smollm2_checkpoint), fingerprint="tokenizer-only"), ModelSpec(source=str(smollm2_checkpoint))


def local_forms(tmp_path: Path) -> dict[str, CalibrationSpec]:
    """The same three documents as a text file (joined as documents are), a folder, JSONL and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "domain.txt").write_text("\n\n".join(DOCUMENTS))
    (tmp_path / "folder").mkdir()
    for index, text in enumerate(DOCUMENTS):
        (tmp_path / "folder" / f"{index:02d}.txt").write_text(text)
    (tmp_path / "records.jsonl").write_text("".join(json.dumps({"body": text}) + "\n" for text in DOCUMENTS))
    pq.write_table(pa.table({"text": DOCUMENTS}), tmp_path / "records.parquet")
    options = dict(n_samples=5, seq_len=12, seed=3)
    return {
        "text file": CalibrationSpec(corpus=str(tmp_path / "domain.txt"), **options),
        "folder": CalibrationSpec(corpus=str(tmp_path / "folder"), **options),
        "jsonl": CalibrationSpec(corpus=str(tmp_path / "records.jsonl"), text_field="body", **options),
        "parquet": CalibrationSpec(corpus=str(tmp_path / "records.parquet"), **options),
    }


def test_every_local_form_gives_the_windows_of_its_text(tmp_path, text_model):
    base, model = text_model
    from pruning.models.sources import load_tokenizer

    expected = calibration_ids(DOCUMENTS, load_tokenizer(Path(base.path), model), 5, 12, seed=3)
    for form, calibration in local_forms(tmp_path).items():
        calibration = fingerprinted(calibration)
        made = calibration_set.fn(base, model, calibration, str(tmp_path / "work"), str(tmp_path / "cache"))
        assert (made.n_samples, made.seq_len) == (5, 12), form
        assert torch.equal(calibration_inputs(Path(made.path), None, 4), expected), form
        assert calibration.fingerprint[:8] in Path(made.path).name, form


def test_an_edited_file_is_another_calibration_set(tmp_path, text_model):
    base, model = text_model
    calibration = local_forms(tmp_path)["text file"]
    before = fingerprinted(calibration)
    first = calibration_set.fn(base, model, before, str(tmp_path / "work"), str(tmp_path / "cache"))
    Path(calibration.corpus).write_text("\n\n".join(reversed(DOCUMENTS)))
    edited = fingerprinted(calibration)
    assert edited.fingerprint != before.fingerprint and edited.model_dump() != before.model_dump()  # so every key downstream differs
    second = calibration_set.fn(base, model, edited, str(tmp_path / "work"), str(tmp_path / "cache"))
    assert second.path != first.path and Path(first.path).is_file()  # the earlier set is not overwritten
    assert not torch.equal(calibration_inputs(Path(first.path), None, 4), calibration_inputs(Path(second.path), None, 4))


def test_the_preflight_reads_the_corpus_as_the_stage_does(tmp_path, cache_dir):
    forms = local_forms(tmp_path)
    for calibration in forms.values():
        check_calibration(calibration, "a text model", False, cache_dir)
    short = forms["text file"].model_copy(update={"seq_len": 1000})
    characters = len("\n\n".join(DOCUMENTS)) + 2  # one document, and the 2 the preflight adds for the joins it cannot see
    expected = f"calibration.seq_len=1000: the {short.corpus!r} calibration text has {characters} characters, fewer than a window's tokens"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        check_calibration(short, "a text model", False, cache_dir)
    image_corpora = "(imageqa, or your JSONL of image-question-answer records with kind: image_qa)"
    with pytest.raises(ConfigError, match=f"takes images; calibrate it on an image corpus {re.escape(image_corpora)}$"):
        check_calibration(forms["folder"], "a VLM", True, cache_dir)


# ---------------------------------------------------------------------------- image-question-answer records


@pytest.fixture(scope="module")
def toy_processor():
    from evals.imageqa.questions import vocabulary
    from pruning.models.toy_vlm import ToyVLMSpec, build_processor, build_tokenizer

    return build_processor(build_tokenizer(vocabulary()), ToyVLMSpec())


def test_image_question_records_feed_a_vlm_as_the_builtin_pairs_do(tmp_path, cache_dir, toy_processor):
    """The built-in image-QA calibration split written out as the user's JSONL: the same seeded pairs, the same batches."""
    from evals.imageqa.generator import build_imageqa, split_path
    from evals.imageqa.records import load_records

    root = build_imageqa(cache_dir)
    records = load_records(split_path(root, "calibration"), check_images=False)
    user = tmp_path / "vqa.jsonl"
    user.write_text("".join(json.dumps({"image": str(r.image_path), "question": r.question, "answer": r.answer}) + "\n" for r in records))
    base, model = CheckpointRef(path=str(tmp_path), fingerprint="unused"), ModelSpec(source=str(tmp_path))
    made = {}
    for corpus, options in (("imageqa", {}), (str(user), {"kind": "image_qa"})):
        calibration = fingerprinted(CalibrationSpec(corpus=corpus, n_samples=6, seed=5, **options))
        check_calibration(calibration, "the toy VLM", True, cache_dir)
        made[corpus] = calibration_set.fn(base, model, calibration, str(tmp_path / "work"), str(cache_dir))
    builtin, own = (calibration_inputs(Path(made[corpus].path), toy_processor, 4) for corpus in made)
    assert len(builtin) == len(own) == 2
    for ours, theirs in zip(own, builtin):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    with pytest.raises(ConfigError, match=rf"calibration.n_samples=999: {user} has {len(records)} image-question pairs$"):
        check_calibration(CalibrationSpec(corpus=str(user), kind="image_qa", n_samples=999), "the toy VLM", True, cache_dir)
    with pytest.raises(ConfigError, match=r"image-QA calibration needs a vision-language model; a text model is text-only$"):
        check_calibration(CalibrationSpec(corpus=str(user), kind="image_qa"), "a text model", False, cache_dir)
