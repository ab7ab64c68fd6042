"""The finetune stage: heal a dropped or pruned checkpoint on a slice of a local training split."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from evals.corpora import CORPORA, corpus_documents
from evals.corpora.user import calibration_documents, is_builtin, takes_images
from evals.imageqa.generator import build_imageqa, split_path
from evals.imageqa.prompts import training_conversations
from evals.imageqa.records import load_records
from evals.measure import measure_resources
from evals.suites import IMAGE_CORPORA
from evals.vlm_prompt import vlm_prompt
from flows.config import spec_hash
from pruning.calibration import calibration_ids, conversation_batch
from pruning.errors import ConfigError
from pruning.finetune import finetune, layer_prefixes
from pruning.models.adapters import adapter_for
from pruning.models.sources import checkpoint_fingerprint, is_multimodal, load_model, save_checkpoint, text_tokenizer
from pruning.specs import CalibrationSpec, FinetuneSpec, ModelSpec
from tasks.artifacts import CheckpointRef, FinetunedCheckpoint
from tasks.cache import code_digest
from tasks.calibration import fingerprinted
from tasks.common import STAGE, checkpoint_slug, stamp

LOG_EVERY_STEPS = 5


def finetune_examples(preprocessor, corpus: str | CalibrationSpec, spec: FinetuneSpec, cache_dir: Path) -> list[dict]:
    """One row per example, from the training split of the study's corpus (never its evaluation split),
    or from the user's training text (`finetune.data`, given here as `corpus`): seeded windows of `seq_len`
    tokens for text, image-question-answer conversations for image QA."""
    if isinstance(corpus, CalibrationSpec):
        if is_multimodal(preprocessor):
            raise ConfigError(f"finetune.data {corpus.corpus!r} is text; this model takes images: leave finetune.data out")
        texts = training_documents(corpus, spec, cache_dir)
    elif corpus in IMAGE_CORPORA:
        if not is_multimodal(preprocessor):
            raise ConfigError(f"finetuning on {corpus!r} needs a vision-language model; this one is text-only")
        records = load_records(split_path(build_imageqa(cache_dir), "train"))
        if spec.examples > len(records):
            raise ConfigError(f"finetune.examples={spec.examples}: the image-QA training split has {len(records)} pairs")
        pairs = training_conversations(records, spec.examples, 1, spec.seed)
        prompt = lambda text: vlm_prompt(preprocessor, text)  # noqa: E731
        return [conversation_batch(preprocessor, [image], [turns], prompt) for image, turns in pairs]
    elif is_multimodal(preprocessor):
        raise ConfigError(f"this model takes images: finetune it on an image corpus ({', '.join(sorted(IMAGE_CORPORA))}), not {corpus!r}")
    else:
        texts = corpus_documents(corpus, "train", cache_dir)
    ids = calibration_ids(texts, text_tokenizer(preprocessor), spec.examples, spec.seq_len, spec.seed)
    return [{"input_ids": ids[row : row + 1]} for row in range(ids.shape[0])]


def training_documents(data: CalibrationSpec, spec: FinetuneSpec, cache_dir: Path) -> list[str]:
    """The texts of `finetune.data`: a built-in corpus's train split, or the user's text read as a
    calibration of `examples` windows of `seq_len` tokens reads it (`calibration_documents`)."""
    if takes_images(data):
        raise ConfigError(f"finetune.data {data.corpus!r} is image-question-answer data; finetune.data reads text")
    if is_builtin(data):
        return corpus_documents(data.corpus, "train", Path(cache_dir))
    try:
        return calibration_documents(data.model_copy(update={"n_samples": spec.examples, "seq_len": spec.seq_len}), Path(cache_dir))
    except ConfigError as error:  # its messages name the field calibration data comes from
        raise ConfigError(str(error).replace("calibration.corpus", "finetune.data", 1)) from None


def finetune_corpus(finetune: FinetuneSpec, study_corpus: str) -> str | CalibrationSpec:
    """What the finetune stage trains on: the user's `finetune.data`, keyed on its contents
    (`fingerprinted`), else the name of the study's corpus, whose train split it reads."""
    return study_corpus if finetune.data is None else fingerprinted(finetune.data)


def check_finetune_corpus(finetune: FinetuneSpec, study_corpus: str, multimodal: bool, cache_dir: Path) -> None:
    """The preflight's look at what a finetune trains on. Without `finetune.data` it is the train split of
    the study's corpus, kept apart from its calibration and test splits: only a built-in corpus has one
    (the user's own calibration data is calibration data whole). With it: text, enough for a window."""
    if finetune.data is None:
        if study_corpus not in CORPORA and study_corpus not in IMAGE_CORPORA:
            raise ConfigError(f"finetune trains on the train split of a built-in corpus ({', '.join(sorted([*CORPORA, *IMAGE_CORPORA]))}); "
                              f"calibration.corpus {study_corpus!r} is your own data, which has none: name your training "
                              "text in the method's finetune.data")  # fmt: skip
        return
    if multimodal:
        raise ConfigError(f"finetune.data {finetune.data.corpus!r} is text; a vision-language model finetunes on the image-QA "
                          "training split: leave finetune.data out")  # fmt: skip
    characters = sum(len(text) for text in training_documents(finetune.data, finetune, cache_dir)) + 2
    if characters <= finetune.seq_len:
        raise ConfigError(f"finetune.seq_len={finetune.seq_len}: finetune.data {finetune.data.corpus!r} has {characters} "
                          "characters, fewer than a window's tokens")  # fmt: skip


def _finetune_run_name(parameters: dict) -> str:
    return f"finetune[{parameters['label']}, {len(parameters['train_layers'])} layers]"


@task(**STAGE, task_run_name=_finetune_run_name)
def finetuned_checkpoint(
    checkpoint: CheckpointRef,
    model: ModelSpec,
    train_layers: list[int],
    finetune_spec: FinetuneSpec,
    corpus: str | CalibrationSpec,
    label: str,
    workdir: str,
    cache_dir: str,
    compress: bool = True,
) -> FinetunedCheckpoint:
    """Train only the language-model decoder layers `train_layers` (indices in `checkpoint`), every
    other parameter frozen by `requires_grad`; weights pruned to zero stay zero (`finetune`'s keep_masks),
    so with `compress` a pruned model's finetune is stored compressed as exactly as its prune (a dropped
    model's has nothing sparse and is written plain). Saved atomically."""
    logger = get_run_logger()
    with measure_resources() as usage:
        # training holds every layer's activations for the backward: the whole model goes on the device
        network, preprocessor = load_model(Path(checkpoint.path), model.model_copy(update={"offload": "none"}))
        examples = finetune_examples(preprocessor, corpus, finetune_spec, Path(cache_dir))

        def log_step(step: int, loss: float, lr: float) -> None:
            if step == 1 or step % LOG_EVERY_STEPS == 0:
                logger.info("finetune %s: step %d, loss %.4f, lr %.2e", label, step, loss, lr)

        report = finetune(
            network,
            examples,
            layer_prefixes(adapter_for(network, model.declared_adapter()), train_layers),
            lr=finetune_spec.lr,
            weight_decay=finetune_spec.weight_decay,
            warmup_ratio=finetune_spec.warmup_ratio,
            epochs=finetune_spec.epochs,
            micro_batch_size=finetune_spec.micro_batch,
            effective_batch=finetune_spec.effective_batch,
            master_weights=finetune_spec.master_weights,
            seed=finetune_spec.seed,
            on_step=log_step,
        )
        logger.info(
            "finetuned %s: %d steps on %d examples of %s, loss %.4f -> %.4f, %d trainable parameters%s",
            label, report.steps, report.examples, corpus.corpus if isinstance(corpus, CalibrationSpec) else f"{corpus} (train split)",
            report.first_loss, report.last_loss, report.trainable_params,
            f" (stored in {model.dtype}, stepped through fp32 master copies)" if report.master_params else "",
        )
        slug = checkpoint_slug(label)
        dest = Path(workdir) / "checkpoints" / model.label / f"{slug}-ft-{spec_hash(finetune_spec, checkpoint.model_dump(), {'layers': train_layers, 'compress': compress}, code_digest(__name__))}"
        save_checkpoint(network, preprocessor, dest, extra={"finetune": finetune_spec.model_dump(mode="json"), "train_layers": train_layers},
                        compress=compress)  # fmt: skip
    return FinetunedCheckpoint(
        ref=CheckpointRef(path=str(dest), fingerprint=checkpoint_fingerprint(dest)),
        train_layers=list(train_layers),
        steps=report.steps,
        examples=report.examples,
        first_loss=report.first_loss,
        last_loss=report.last_loss,
        trainable_params=report.trainable_params,
        usage=stamp(usage),
    )
