from __future__ import annotations

import json
import random
from pathlib import Path

from prefect import task

from evals.corpora import corpus_documents
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
    """Text: N seeded windows of L tokens. Image QA: N seeded image-question-answer pairs (L unused)."""
    with measure_resources() as usage:
        name = f"{model.label}-{calibration.corpus}-{calibration.n_samples}x{calibration.seq_len}-s{calibration.seed}"
        if calibration.corpus in IMAGE_CORPORA:
            root = build_imageqa(Path(cache_dir))
            records = load_records(split_path(root, "calibration"))
            if calibration.n_samples > len(records):
                raise ConfigError(f"calibration.n_samples={calibration.n_samples}: the image-QA calibration split has {len(records)} pairs")
            chosen = random.Random(calibration.seed).sample(records, calibration.n_samples)
            path = Path(workdir) / "calibration" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"imageqa": str(root), "ids": [record.id for record in chosen]}))
            n_samples, seq_len = len(chosen), 0
        else:
            tokenizer = load_tokenizer(Path(base.path), model)
            texts = corpus_documents(calibration.corpus, "calibration", Path(cache_dir))
            ids = calibration_ids(texts, tokenizer, calibration.n_samples, calibration.seq_len, calibration.seed)
            path = save_calibration(ids, Path(workdir) / "calibration" / f"{name}.safetensors")
            n_samples, seq_len = ids.shape
    return CalibrationSet(path=str(path), digest=file_digest(path), n_samples=n_samples, seq_len=seq_len, usage=stamp(usage))


def calibration_inputs(path: Path, preprocessor, batch_size: int):
    """What the block walk is fed: token ids (text) or processor-made image-text batches (image QA)."""
    path = Path(path)
    multimodal = is_multimodal(preprocessor)
    if path.suffix != ".json":
        if multimodal:
            raise ConfigError(
                "this model takes images: calibrate it on an image corpus "
                f"(calibration.corpus: {', '.join(sorted(IMAGE_CORPORA))}), not on text"
            )
        return load_calibration(path)
    if not multimodal:
        raise ConfigError("image-QA calibration needs a vision-language model; this one is text-only")
    chosen = json.loads(path.read_text())
    by_id = {record.id: record for record in load_records(split_path(Path(chosen["imageqa"]), "calibration"))}
    records = [by_id[record_id] for record_id in chosen["ids"]]
    prompts = [vlm_prompt(preprocessor, question_text(r)) for r in records]
    answers = [answer_text(r.answer) for r in records]
    return multimodal_batches(preprocessor, [load_image(r) for r in records], prompts, answers, batch_size)
