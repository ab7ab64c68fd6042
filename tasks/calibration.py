from __future__ import annotations

import json
import random
import re
from pathlib import Path

from prefect import task

from evals.corpora.user import calibration_documents, corpus_fingerprint, image_questions, is_builtin, load_question_image, takes_images
from evals.imageqa.generator import build_imageqa, split_path
from evals.imageqa.prompts import answer_text, question_text
from evals.imageqa.records import load_image, load_records
from evals.measure import measure_resources
from evals.suites import IMAGE_CORPORA
from evals.vlm_prompt import vlm_prompt
from pruning.calibration import calibration_ids, load_calibration, multimodal_batches, save_calibration
from pruning.errors import ConfigError
from pruning.files import file_digest, write_text_atomic
from pruning.models.sources import is_multimodal, load_tokenizer
from pruning.specs import CalibrationSpec, ModelSpec
from tasks.artifacts import CalibrationSet, CheckpointRef
from tasks.common import STAGE, stamp


@task(
    **STAGE,
    task_run_name="calibration[{calibration.corpus}, {calibration.n_samples}x{calibration.seq_len}]",
)
def calibration_set(
    base: CheckpointRef, model: ModelSpec, calibration: CalibrationSpec, workdir: str, cache_dir: str
) -> CalibrationSet:
    """Text: N seeded windows of L tokens. Image QA: N seeded image-question-answer pairs (L unused).

    The user's own corpus is keyed by its contents (`calibration.fingerprint`, set by `fingerprinted`),
    which also name the file: a set drawn from an edited corpus never overwrites the last one."""
    with measure_resources() as usage:
        name = f"{model.label}-{_corpus_slug(calibration)}-{calibration.n_samples}x{calibration.seq_len}-s{calibration.seed}"
        path = Path(workdir) / "calibration" / f"{name}.json"
        if calibration.corpus in IMAGE_CORPORA:
            root = build_imageqa(Path(cache_dir))
            records = load_records(split_path(root, "calibration"))
            chosen = _sample(len(records), calibration, "the image-QA calibration split")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"imageqa": str(root), "ids": [records[index].id for index in chosen]}))
            n_samples, seq_len = len(chosen), 0
        elif calibration.kind == "image_qa":
            records_path = Path(calibration.corpus).expanduser().resolve()
            chosen = _sample(len(image_questions(records_path)), calibration, str(records_path))
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"records": str(records_path), "indices": chosen}))
            n_samples, seq_len = len(chosen), 0
        else:
            tokenizer = load_tokenizer(Path(base.path), model)
            texts = calibration_documents(calibration, Path(cache_dir))
            ids = calibration_ids(texts, tokenizer, calibration.n_samples, calibration.seq_len, calibration.seed)
            path = save_calibration(ids, path.with_suffix(".safetensors"))
            n_samples, seq_len = ids.shape
    return CalibrationSet(path=str(path), digest=file_digest(path), n_samples=n_samples, seq_len=seq_len, usage=stamp(usage))


def fingerprinted(calibration: CalibrationSpec) -> CalibrationSpec:
    """The spec with its corpus's contents in it (`corpus_fingerprint`): the run calls this once per study,
    before any stage, so every stage keyed on the spec is keyed on the data. A built-in corpus: unchanged."""
    fingerprint = corpus_fingerprint(calibration)
    return calibration if fingerprint is None else calibration.model_copy(update={"fingerprint": fingerprint})


def check_calibration(calibration: CalibrationSpec, source: str, multimodal: bool, cache_dir: Path) -> None:
    """The preflight's look at a study's calibration data, read as this stage will read it: there, of the
    model's modality, and long enough for a window."""
    image_corpus = takes_images(calibration)
    if image_corpus and not multimodal:
        raise ConfigError(f"calibration.corpus {calibration.corpus!r}: image-QA calibration needs a vision-language model; {source} is text-only")
    if multimodal and not image_corpus:
        raise ConfigError(
            f"calibration.corpus {calibration.corpus!r}: {source} takes images; calibrate it on an image corpus "
            f"({', '.join(sorted(IMAGE_CORPORA))}, or your JSONL of image-question-answer records with kind: image_qa)"
        )
    if calibration.kind == "image_qa":
        _sample(len(image_questions(Path(calibration.corpus))), calibration, calibration.corpus)
    elif not image_corpus:  # a token covers at least one character: a shorter text has too few tokens
        characters = sum(len(text) for text in calibration_documents(calibration, Path(cache_dir))) + 2
        if characters <= calibration.seq_len:
            raise ConfigError(f"calibration.seq_len={calibration.seq_len}: the {calibration.corpus!r} calibration "
                              f"text has {characters} characters, fewer than a window's tokens")  # fmt: skip


def _sample(n_records: int, calibration: CalibrationSpec, where: str) -> list[int]:
    """`n_samples` seeded record indices, in draw order."""
    if calibration.n_samples > n_records:
        raise ConfigError(f"calibration.n_samples={calibration.n_samples}: {where} has {n_records} image-question pairs")
    return random.Random(calibration.seed).sample(range(n_records), calibration.n_samples)


def _corpus_slug(calibration: CalibrationSpec) -> str:
    """The corpus in a file name: a built-in name as it is; a path's or dataset's last part, and its fingerprint."""
    if is_builtin(calibration):
        return calibration.corpus
    if calibration.fingerprint is None:  # its key would not see the data: a set of stale data could be reused
        raise ValueError(f"calibration on {calibration.corpus!r} needs the corpus's fingerprint in its spec (`fingerprinted`) before the stage")
    tail = re.sub(r"[^\w.+-]+", "-", calibration.corpus.rstrip("/").split("/")[-1]).strip("-.") or "corpus"
    return f"{tail}-{calibration.fingerprint[:8]}"


def calibration_inputs(path: Path, preprocessor, batch_size: int):
    """What the block walk is fed: token ids (text) or processor-made image-text batches (image QA)."""
    path = Path(path)
    multimodal = is_multimodal(preprocessor)
    if path.suffix != ".json":
        if multimodal:
            raise ConfigError(
                "this model takes images: calibrate it on an image corpus "
                f"(calibration.corpus: {', '.join(sorted(IMAGE_CORPORA))}, or your JSONL with kind: image_qa), not on text"
            )
        return load_calibration(path)
    if not multimodal:
        raise ConfigError("image-QA calibration needs a vision-language model; this one is text-only")
    chosen = json.loads(path.read_text())
    if "records" in chosen:  # the user's own image-question-answer records
        pairs = image_questions(Path(chosen["records"]))
        pairs = [pairs[index] for index in chosen["indices"]]
        prompts = [vlm_prompt(preprocessor, question_text({"question": pair.question})) for pair in pairs]
        answers = [answer_text(pair.answer) for pair in pairs]
        return multimodal_batches(preprocessor, [load_question_image(pair) for pair in pairs], prompts, answers, batch_size)
    by_id = {record.id: record for record in load_records(split_path(Path(chosen["imageqa"]), "calibration"))}
    records = [by_id[record_id] for record_id in chosen["ids"]]
    prompts = [vlm_prompt(preprocessor, question_text(r)) for r in records]
    answers = [answer_text(r.answer) for r in records]
    return multimodal_batches(preprocessor, [load_image(r) for r in records], prompts, answers, batch_size)
