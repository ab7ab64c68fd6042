from __future__ import annotations

from pathlib import Path

from prefect import task

from evals.measure import measure_resources
from pruning.models.sources import checkpoint_digest, checkpoint_fingerprint, count_parameters, resolve_checkpoint
from pruning.specs import ModelSpec
from tasks.artifacts import CheckpointRef, ModelCheckpoint
from tasks.common import stamp


# Not cached by Prefect: resolving is cheap, packaged conversion caches itself on disk, and a
# local directory must be looked at every time (its contents may have changed under the same path).
@task(persist_result=False, task_run_name="model[{model.source}]", retries=1, retry_delay_seconds=2)
def model_checkpoint(model: ModelSpec, cache_dir: str) -> ModelCheckpoint:
    with measure_resources() as usage:
        path = resolve_checkpoint(model, Path(cache_dir) / "models")
        params_total = count_parameters(path)
        ref = CheckpointRef(path=str(path), fingerprint=checkpoint_fingerprint(path))
        digest = checkpoint_digest(path, Path(cache_dir) / "models" / ".digests")
    return ModelCheckpoint(ref=ref, digest=digest, params_total=params_total, usage=stamp(usage))
