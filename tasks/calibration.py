from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.corpora import corpus_documents
from evals.measure import measure_resources
from pruning.calibration import calibration_ids, save_calibration
from pruning.models.sources import load_tokenizer
from pruning.specs import CalibrationSpec, ModelSpec
from tasks.artifacts import CalibrationSet, CheckpointRef
from tasks.common import CACHED, stamp


@task(
    cache_policy=CACHED,
    task_run_name="calibration[{calibration.corpus}, {calibration.n_samples}x{calibration.seq_len}]",
)
def calibration_set(
    base: CheckpointRef, model: ModelSpec, calibration: CalibrationSpec, workdir: str, cache_dir: str, code: str
) -> CalibrationSet:
    with measure_resources() as usage:
        tokenizer = load_tokenizer(Path(base.path), model)
        texts = corpus_documents(calibration.corpus, "calibration", Path(cache_dir))
        ids = calibration_ids(texts, tokenizer, calibration.n_samples, calibration.seq_len, calibration.seed)
        name = f"{model.label}-{calibration.corpus}-{calibration.n_samples}x{calibration.seq_len}-s{calibration.seed}"
        path = save_calibration(ids, Path(workdir) / "calibration" / f"{name}.safetensors")
    return CalibrationSet(path=str(path), n_samples=ids.shape[0], seq_len=ids.shape[1], usage=stamp(usage))
