"""Declarative, validated descriptions of what to load and how to prune it.

A spec says *what*; applying it lives elsewhere (`pruning.local`, `pruning.models`). Specs are
frozen pydantic models with `extra="forbid"`, so a typo in a YAML key fails at the door.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_serializer, field_validator, model_validator


def validation_problem(problem: dict) -> str:
    """One pydantic problem as 'field.path: message (got value)'."""
    where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
    got = problem.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{where}: {problem['msg']}{shown}"


class Spec(BaseModel):
    # inf and nan are refused for every number of every spec (an lr, an epsilon, a damping of inf would
    # pass every bound and fail, or silently do nothing, after the compute)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# What torch, numpy and random all take as a seed.
Seed = Annotated[int, Field(ge=0, lt=2**63)]


def method_identity(params: dict[str, Any]) -> str:
    """A method's identity: SHA-256 of its full parameters (canonical JSON, keys sorted), 16 hex digits.

    Two entries with the same parameters are the same method whatever they are called; any parameter
    that differs (a SparseGPT block size, an OWL λ, a finetune lr) makes another method."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def model_identity(digest: str, dtype: str, device: str, adapter: str | None = None) -> str:
    """A model's identity: its files' contents (`checkpoint_digest`), the dtype and the device it runs in
    (each changes the numbers every method gets), hashed like `method_identity`. Where the files are is
    not part of it: a copy of the same checkpoint elsewhere is the same model. A user's adapter
    (`ModelSpec.adapter_digest`) decides what is pruned, so it is part of it when given."""
    return method_identity({"files": digest, "dtype": dtype, "device": device, **({"adapter": adapter} if adapter else {})})


class _Method(Spec):
    """What every method spec shares: an identity made of all its parameters, and a label for people.

    `id` is the user's own label for an entry; it names the method and is not one of its parameters
    (excluded from dumps, so it changes no identity, hash or cache key). The label an experiment shows
    is set once the whole config is read (`flows.config`): the `id` or the method's own label, with the
    parameters that tell it apart from the experiment's other methods of that label."""

    id: str | None = Field(None, min_length=1, exclude=True, description="your label for this entry (default: the method's own)")
    _label: str | None = PrivateAttr(None)

    def canonical_params(self) -> dict[str, Any]:
        """Every parameter, defaults included, as JSON values (what `runs.method_params` records)."""
        return self.model_dump(mode="json")

    @property
    def method_id(self) -> str:
        return method_identity(self.canonical_params())

    @property
    def label(self) -> str:
        return self._label or self.id or self.base_label

    @property
    def base_label(self) -> str:
        raise NotImplementedError

    def labelled(self, label: str) -> None:
        """Set the label the experiment shows (a display name only: no identity or cache key sees it)."""
        self._label = label


DType = Literal["float32", "bfloat16", "float16"]
Modality = Literal["vision", "language"]
BlockReturns = Literal["tensor", "tuple"]
_MODULE_PATH = r"^[A-Za-z_]\w*(\.\w+)*$"  # a dotted submodule path: model.layers, self_attn.q_proj, blocks.0


class BlockGroupSpec(Spec):
    """A stack of blocks as `pruning.models.adapters.BlockGroup` reads it (fields named alike)."""

    modality: Modality
    path: str = Field(pattern=_MODULE_PATH, description="the nn.ModuleList of blocks, from the top model: model.layers")
    prunable: tuple[str, ...] = Field(min_length=1, description="the block's prunable nn.Linear modules, in forward order")
    droppable: bool = Field(False, description="decoder layers that layer-dropping methods may remove")
    undroppable_prefix_from: str | None = Field(None, pattern=_MODULE_PATH)
    returns: BlockReturns = Field("tensor", description="what a block returns: the hidden states, or a tuple of them first (Falcon)")

    @model_validator(mode="after")
    def _linear_paths(self) -> "BlockGroupSpec":
        bad = [name for name in self.prunable if not re.match(_MODULE_PATH, name)]
        if bad:
            raise ValueError(f"prunable names {bad} are not dotted module paths such as self_attn.q_proj")
        if len(set(self.prunable)) != len(self.prunable):
            raise ValueError(f"prunable lists a linear twice: {list(self.prunable)}")
        return self


class AdapterSpec(Spec):
    """An architecture family as data: what `pruning.models.adapters.Adapter` holds, from a user's YAML."""

    family: str = Field(min_length=1)
    model_types: tuple[str, ...] = Field(min_length=1, description="config.json model_type values it covers")
    text_model_types: tuple[str, ...] = Field((), description="text_config.model_type values covered; empty: any")
    groups: tuple[BlockGroupSpec, ...] = Field(min_length=1, description="block stacks in forward order")
    projectors: tuple[str, ...] = Field((), description="modules between towers, never pruned")

    @model_validator(mode="after")
    def _groups_fit_the_walk(self) -> "AdapterSpec":
        modalities = [group.modality for group in self.groups]
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"groups: one group per modality, got {modalities}")
        if any(group.droppable and group.modality != "language" for group in self.groups):
            raise ValueError("groups: only the language group can be droppable (decoder layers)")
        bad = [path for path in self.projectors if not re.match(_MODULE_PATH, path)]
        if bad:
            raise ValueError(f"projectors {bad} are not dotted module paths")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> "AdapterSpec":
        """Read and validate an adapter YAML; a ConfigError naming the file, then each problem's key, message and value."""
        import yaml

        from pruning.errors import ConfigError

        try:
            raw = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"adapter file {path}: not valid YAML text: {' '.join(str(err).split())}") from None
        except (OSError, ValueError) as err:  # ValueError: a path with a NUL byte
            raise ConfigError(f"adapter file {path}: cannot be read: {getattr(err, 'strerror', None) or err}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            problems = [validation_problem(problem) for problem in err.errors(include_url=False)]
            raise ConfigError(f"adapter file {path}: " + "; ".join(problems)) from None  # the CLI prints one line: problems end to end

    def to_adapter(self):
        """As the `pruning.models.adapters.Adapter` the algorithms read."""
        from pruning.models.adapters import Adapter, BlockGroup

        groups = tuple(BlockGroup(**group.model_dump()) for group in self.groups)
        return Adapter(self.family, self.model_types, groups, self.projectors, self.text_model_types)

    @property
    def digest(self) -> str:
        """16 hex digits of its contents (canonical JSON): what identifies it in a model's identity."""
        return method_identity(self.model_dump(mode="json"))


class ModelSpec(Spec):
    """Where a model comes from.

    `source` is `packaged:<name>` (shipped in an installed package), a local checkpoint directory,
    or a hub id that must already be in the local Hugging Face cache (nothing is downloaded).
    """

    source: str = Field(min_length=1)
    dtype: DType = "float32"
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|mps|xpu|xpu:\d+)$", description="cpu, cuda, cuda:N, mps, xpu or xpu:N")
    trust_remote_code: bool = False
    # An adapter YAML (a path) or the same keys inline; held as its contents, so that every dump, hash and
    # cache key sees what it says, not where it was. Left out of dumps when absent (keys stay as they were).
    adapter: AdapterSpec | None = Field(
        None, exclude_if=lambda adapter: adapter is None, description="an adapter YAML for a family not built in (README: Architectures)"
    )
    # A display name, like a method's `id`: left out of dumps, so no identity, hash or cache key sees it.
    name: str | None = Field(None, min_length=1, exclude=True, description="your label for this model (default: the source's last part)")
    # Where the weights wait while one block at a time runs on `device` (`pruning.models.offload`). It
    # changes no number (masks and weights are bit-identical with and without it, tested), only what
    # memory a stage needs, so like `name` it is left out of dumps: no model identity, hash or cache key
    # sees it, and a stage computed without offloading is reused with it, and the other way round.
    offload: Literal["none", "cpu", "disk"] = Field(
        "none",
        exclude=True,
        description="none: the whole model on `device`; cpu: weights in CPU memory, one block at a time on `device` "
        "(for a model larger than the GPU); disk: the blocks' weights memory-mapped from files (TMPDIR) as well",
    )
    _label: str | None = PrivateAttr(None)

    @property
    def label(self) -> str:
        """The label results are recorded and reported under: set by the experiment so that no two
        different models of it share one (`flows.config`), else `name` or the source's last part."""
        return self._label or self.name or self.base_label

    @property
    def base_label(self) -> str:
        return self.source.removeprefix("packaged:").rstrip("/").split("/")[-1]

    @field_validator("adapter", mode="before")
    @classmethod
    def _read_adapter_file(cls, adapter: Any) -> Any:
        return AdapterSpec.from_file(adapter) if isinstance(adapter, (str, Path)) else adapter

    def identity(self) -> tuple[str, str, str, str | None]:
        """What makes two studies' models the same model: where its files are (a local path resolved),
        its dtype, its device (each changes the numbers a method gets) and its adapter's digest, if any
        (it decides what is pruned)."""
        source = self.source
        if not source.startswith("packaged:") and (source.startswith((".", "/", "~")) or Path(source).expanduser().exists()):
            source = str(Path(source).expanduser().resolve())
        return source, self.dtype, self.device, self.adapter_digest

    @property
    def adapter_digest(self) -> str | None:
        return self.adapter.digest if self.adapter is not None else None

    def declared_adapter(self):
        """The user's `pruning.models.adapters.Adapter`, or None: pass it to `adapter_for`."""
        return self.adapter.to_adapter() if self.adapter is not None else None

    def labelled(self, label: str) -> None:
        """Set the label the experiment shows (a display name only: no identity or cache key sees it)."""
        self._label = label


def distinct_tail(source: str, sources: Sequence[str]) -> str:
    """The fewest last path parts of `source` that no other of `sources` ends with."""
    def parts(text: str) -> list[str]:
        return [part for part in text.removeprefix("packaged:").split("/") if part]

    own = parts(source)
    others = [parts(other) for other in set(sources) if other != source]
    for n in range(1, len(own) + 1):
        if all(other[-n:] != own[-n:] for other in others):
            return "/".join(own[-n:])
    return source


CalibrationKind = Literal["text", "image_qa"]


def _option(legacy: Any, default: Any = None, **field: Any) -> Any:
    """An option added after runs were recorded without it: left out of the parameters (so out of
    `method_id` and every cache key) while it equals `legacy`, the behaviour every earlier run had, and
    part of them otherwise.

    `legacy` is fixed, not the default: if measurement moves the default, specs at the new default get a
    new identity, and a missing key in recorded `method_params` always means `legacy`."""
    return Field(legacy if default is None else default, exclude_if=lambda value: value == legacy, **field)


class CalibrationSpec(Spec):
    """N sequences of L tokens drawn (seeded) from one corpus: a built-in one's calibration split, or
    the user's own data (`evals.corpora.user`): a text file, a folder of text files, JSONL or Parquet
    records (`text_field`), a dataset in the local Hugging Face cache (`config`, `split`, `data_files`),
    or, with `kind: image_qa`, a JSONL of {image, question, answer} records for a VLM.

    The user's data is keyed by its contents: the run sets `fingerprint` (file digests, the cached
    dataset's revision) before any stage, so an edited file recomputes the calibration set and every
    stage computed from it. The fields added for the user's data are left out of dumps at their
    defaults, so a built-in corpus keeps the cache keys it had.

    Paper defaults are 128 x 2048 (Wanda, SparseGPT, ECoFLaP); the embedded default is sized for
    two CPU cores.
    """

    corpus: str = Field("jargon", min_length=1, description="a built-in corpus, a local file or folder, or a dataset in the local Hugging Face cache")
    n_samples: int = Field(32, gt=0)
    seq_len: int = Field(256, gt=1)
    seed: Seed = 0
    batch_size: int = Field(8, gt=0)
    text_field: str = _option("text", min_length=1,
                             description="the records' field holding the text (JSONL, Parquet, Hugging Face datasets)")
    config: str | None = _option(None, min_length=1, description="the Hugging Face dataset's configuration, e.g. 'en'")
    split: str = _option("train", min_length=1, description="the Hugging Face dataset's split")
    data_files: str | list[str] | None = _option(None,
                                                description="the Hugging Face dataset's files to read, e.g. 'en/c4-train.00000-of-01024.json.gz'")
    kind: CalibrationKind = _option("text",
                                   description="image_qa: the JSONL's records are {image, question, answer} for a vision-language model")
    # The contents of the user's corpus (`tasks.calibration.fingerprinted`), set by the run, never written
    # in a config: part of the dump, so of every key computed from the calibration.
    fingerprint: str | None = _option(None, description="set by the run from the corpus's contents")
    # Several calibration draws: each method that reads calibration data runs once per seed, and reports
    # show the mean and sd across them. Not a parameter of any run (each run has its `seed`), so it is
    # left out of dumps, hashes and cache keys.
    seeds: list[Seed] | None = Field(None, min_length=1, exclude=True,
                                    description="run each calibrated method once per seed (e.g. [0, 1, 2])")

    @model_validator(mode="before")
    @classmethod
    def _fingerprint_is_computed(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("fingerprint") is not None:
            raise ValueError("fingerprint is computed from the corpus's contents by the run; leave it out")
        return raw

    @model_validator(mode="after")
    def _options_of_the_source(self) -> "CalibrationSpec":
        """Each option belongs to some kinds of corpus: one given for another is refused, not ignored."""
        path = self.local_path
        if self.kind == "image_qa" and (path is None or path.suffix != ".jsonl"):
            raise ValueError(f"kind image_qa reads a local JSONL of {{image, question, answer}} records; corpus {self.corpus!r} is no .jsonl path")
        if self.kind == "image_qa":
            allowed, what = set(), "a JSONL of image-question-answer records"
        elif path is None:
            allowed, what = set(_OPTION_OF), "a name"
        elif path.suffix in RECORD_SUFFIXES:
            allowed, what = {"text_field"}, "a local file of records"
        else:
            allowed, what = set(), "a local folder or text file"
        for name in _OPTION_OF:
            if name in self.model_fields_set and name not in allowed:
                raise ValueError(f"{name} is an option of {_OPTION_OF[name]}; corpus {self.corpus!r} is {what}")
        return self

    @model_validator(mode="after")
    def _seed_or_seeds(self) -> "CalibrationSpec":
        if self.seeds is None:
            return self
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ, got {self.seeds}")
        if "seed" in self.model_fields_set and self.seed != self.seeds[0]:
            raise ValueError(f"give seed or seeds, not both (seed {self.seed}, seeds {self.seeds})")
        if self.seed != self.seeds[0]:
            object.__setattr__(self, "seed", self.seeds[0])  # the first draw is the one a single run would use
        return self

    def per_seed(self) -> list["CalibrationSpec"]:
        """This calibration once per seed (one entry without `seeds`), each a single draw."""
        return [self.model_copy(update={"seed": seed, "seeds": None}) for seed in self.seeds or [self.seed]]

    @property
    def local_path(self) -> Path | None:
        """The corpus as a local file or folder: a path that exists, or one written as a path (./, /, ~, a
        .txt, .jsonl or .parquet name); None for a name (a built-in corpus, a Hugging Face dataset)."""
        path = Path(os.path.expanduser(self.corpus))  # an unknown ~user stays as written, as the shell leaves it
        if self.corpus.startswith((".", "/", "~")) or path.suffix in (".txt", *RECORD_SUFFIXES):
            return path
        try:
            return path if path.exists() else None
        except (OSError, ValueError):  # a name too long, or with a NUL byte, for a path: no file of this machine
            return None


# Record files whose `text_field` holds the text (a JSONL object per line; a Parquet column).
RECORD_SUFFIXES = (".jsonl", ".parquet")
_OPTION_OF = {
    "text_field": "JSONL or Parquet records and Hugging Face datasets",
    "config": "Hugging Face datasets",
    "split": "Hugging Face datasets",
    "data_files": "Hugging Face datasets",
}


class FinetuneSpec(Spec):
    """How to finetune after dropping layers or pruning weights (INTERLACE's recipe as defaults).

    Which layers train is the method's business (INTERLACE's interleaved marks, or every remaining
    decoder layer for the baselines' "healing"); this says on what and how. The data is a slice of
    a local training split disjoint from evaluation: the text corpus's `train` split for language
    models, the image-QA training split for VLMs; or, with `data`, the user's own training text.
    """

    examples: int = Field(256, gt=0, description="size of the training slice (sequences or image-question pairs)")
    seq_len: int = Field(256, gt=1, description="tokens per text sequence")
    lr: float = Field(1e-5, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    epochs: int = Field(1, ge=1)
    effective_batch: int = Field(32, gt=0, description="examples per optimizer step (gradient accumulation)")
    micro_batch: int = Field(4, gt=0, description="examples per forward/backward pass")
    weight_decay: float = Field(0.0, ge=0)
    master_weights: bool = Field(
        True, description="weights stored in bf16/fp16 step through fp32 copies (8 bytes more per trained element)"
    )
    seed: Seed = 0
    # Left out of the dump when absent, so finetunes on a built-in corpus keep their method ids and keys;
    # the data's contents key the finetune stage (the run fingerprints it: `tasks.calibration.fingerprinted`).
    data: CalibrationSpec | None = Field(
        None, exclude_if=lambda data: data is None,
        description="your own training text, as calibration.corpus names a corpus (a local file or folder, JSONL or Parquet "
        "records with text_field, a dataset in the local Hugging Face cache with config/split/data_files); a path alone "
        "will do. Default: the train split of the study's built-in corpus",
    )  # fmt: skip

    @field_validator("data", mode="before")
    @classmethod
    def _a_corpus_alone(cls, data: Any) -> Any:
        return {"corpus": data} if isinstance(data, (str, Path)) else data

    @field_validator("data")
    @classmethod
    def _names_text_only(cls, data: CalibrationSpec | None) -> CalibrationSpec | None:
        if data is None:
            return data
        sizing = sorted({"n_samples", "seq_len", "seed", "batch_size", "seeds"} & data.model_fields_set)
        if sizing:
            raise ValueError(f"{', '.join(sizing)} size calibration; the finetune's slice is sized by finetune.examples and seq_len")
        if data.kind == "image_qa":
            raise ValueError("a VLM finetunes on the built-in image-QA training split; finetune.data reads text")
        return data

    @field_serializer("data")
    def _where_the_text_is(self, data: CalibrationSpec | None) -> dict | None:
        """Only what names the text (corpus and its options): calibration's sizes do not apply here, so they
        stay out of the method's parameters, its id and its label. (Its contents' fingerprint goes to the
        finetune stage beside the spec: `tasks.finetune.finetune_corpus`.)"""
        return None if data is None else data.model_dump(mode="json", exclude={"n_samples", "seq_len", "seed", "batch_size"})

    @model_validator(mode="after")
    def _accumulates_whole_micro_batches(self):
        if self.effective_batch % self.micro_batch:
            raise ValueError(f"effective_batch={self.effective_batch} must be a multiple of micro_batch={self.micro_batch}")
        return self


_NM = re.compile(r"^(\d+):(\d+)$")


def parse_n_m(pattern: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): N weights kept in every M consecutive input columns (NVIDIA convention)."""
    match = _NM.match(pattern)
    if not match:
        raise ValueError(f"N:M pattern must look like '2:4', got {pattern!r}")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M, got {pattern!r}")
    return n, m


class _Sparsity(_Method):
    """Shared by local pruners: a target sparsity in [0, 1), or an N:M pattern (which fixes it)."""

    sparsity: float | None = Field(None, ge=0.0, lt=1.0)
    n_m: str | None = Field(None, description="semi-structured pattern, e.g. '2:4' (N kept of M)")
    finetune: FinetuneSpec | None = Field(None, description="heal after pruning: language-model layers train, pruned weights stay zero")

    @model_validator(mode="after")
    def _check_sparsity(self):
        if self.n_m is None:
            if self.sparsity is None:
                raise ValueError("give `sparsity` (a fraction in [0, 1)) or an `n_m` pattern like '2:4'")
            return self
        n, m = parse_n_m(self.n_m)
        implied = 1.0 - n / m
        if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
            raise ValueError(f"n_m={self.n_m!r} implies sparsity {implied:g}, but sparsity={self.sparsity:g}")
        object.__setattr__(self, "sparsity", implied)
        return self

    @property
    def target(self) -> float:
        assert self.sparsity is not None
        return self.sparsity

    @property
    def base_label(self) -> str:
        pattern = self.n_m if self.n_m else f"{round(self.target * 100, 2):g}%"
        healed = " +ft" if self.finetune is not None else ""
        return f"{self.name} {pattern}{healed}"  # type: ignore[attr-defined]

    @property
    def local(self) -> str:
        """The local pruner inside each layer (`pruning.local.LOCAL_PRUNERS`): the method itself."""
        return self.name  # type: ignore[attr-defined]

    def local_options(self) -> dict:
        """The local pruner's own keyword arguments: none for magnitude and Wanda."""
        return {}

    def modality_options(self) -> dict[str, dict]:
        """The local pruner's keyword arguments for one modality's blocks only (Wanda's vision selection)."""
        return {}

    @property
    def exclude_padding(self) -> bool:
        """Whether the walk leaves padded positions out of the local pruner's statistics (none for magnitude)."""
        return False


class DenseSpec(_Method):
    """The unpruned model: the reference every retention figure divides by."""

    name: Literal["dense"] = "dense"

    @property
    def target(self) -> float:
        return 0.0

    @property
    def base_label(self) -> str:
        return "dense"


class MagnitudeSpec(_Sparsity):
    """|W|, compared over the whole layer (as in the Wanda reference code's magnitude baseline)."""

    name: Literal["magnitude"]


WandaSelection = Literal["per_row", "layer"]
StatisticsPadding = Literal["excluded", "included"]


class _WandaOptions(Spec):
    """Wanda's comparison in vision-tower blocks. Language blocks always compare within each output row,
    as the Wanda paper (Sec. 3) and ECoFLaP's T5 pruner do; ECoFLaP's ViT pruner (`VITLayerWandaPruner._prune`
    in LAVIS/lavis/compression/pruners/wanda_pruner.py, also run on BLIP-2's ViT) thresholds the whole layer."""

    # default chosen on the toy VLM (benchmarks/local_options.py, docs/methods.md): layer-wide lowered the
    # answer NLL of uniform Wanda at 50% and 60% in every seed, and of ECoFLaP+Wanda on average
    vision_selection: WandaSelection = _option(
        "per_row", "layer", description="vision blocks: Wanda scores compared over the whole layer (ECoFLaP's scripts), or within each output row"
    )

    @model_validator(mode="after")
    def _selection_needs_wanda(self):
        if "vision_selection" in self.model_fields_set and self.local != "wanda":  # type: ignore[attr-defined]
            raise ValueError(
                f"vision_selection={self.vision_selection!r} chooses how Wanda compares weights; "
                f"local is {self.local!r}"  # type: ignore[attr-defined]
            )
        return self

    def modality_options(self) -> dict[str, dict]:
        """The local pruner's keyword arguments for one modality's blocks only: Wanda's vision selection."""
        return {"vision": {"selection": self.vision_selection}} if self.local == "wanda" else {}  # type: ignore[attr-defined]


class _PaddingOption(Spec):
    """Whether padded calibration positions (attention_mask == 0) count in the statistics of the language
    blocks' inputs (Wanda's Σx², SparseGPT's H). ECoFLaP's scripts count every position (`add_batch` in
    its wanda_pruner.py and sparsegpt_pruner.py); no real position attends to a padded one, so `excluded`
    keeps only the positions whose outputs the model uses."""

    # default: the published behaviour; excluding padding changed the toy VLM's answer NLL by -0.006 to
    # +0.003, with no consistent sign (benchmarks/local_options.py, docs/methods.md)
    padding: StatisticsPadding = _option(
        "included", description="padded positions in the layer-input statistics: excluded, or included (the published scripts)"
    )

    @property
    def exclude_padding(self) -> bool:
        return self.padding == "excluded"


class WandaSpec(_WandaOptions, _PaddingOption, _Sparsity):
    """Wanda (Sun et al., 2023): |W_ij| * ||X_j||_2, compared within each output row (vision blocks: `vision_selection`)."""

    name: Literal["wanda"]


# How SparseGPT counts a column block's mask: exactly floor(n·s) weights, or, as the reference code
# (IST-DASLab/sparsegpt, `fasterprune`), every weight scoring <= the score at sorted index floor(n·s)
SparseGPTMaskRule = Literal["exact", "reference"]


class _SparseGPTOptions(Spec):
    """SparseGPT's own settings (Frantar & Alistarh, 2023): columns per OBS block, Hessian damping,
    and how a block's mask is counted."""

    blocksize: int = Field(128, gt=0, description="columns pruned and updated together")
    damp: float = Field(0.01, gt=0, description="added to H's diagonal, as a fraction of its mean")
    mask_rule: SparseGPTMaskRule = _option(
        "exact",
        description="'exact': floor(n·s) weights per column block; "
        "'reference': all scoring <= the one at sorted index floor(n·s), as the reference code (one more per block, plus ties)",
    )

    @model_validator(mode="after")
    def _mask_rule_needs_sparsegpt(self):
        if "mask_rule" in self.model_fields_set and self.local != "sparsegpt":  # type: ignore[attr-defined]
            raise ValueError(
                f"mask_rule={self.mask_rule!r} chooses how SparseGPT counts a block's mask; local is {self.local!r}"  # type: ignore[attr-defined]
            )
        return self

    def local_options(self) -> dict:
        """The keyword arguments of the spec's local pruner (SparseGPT's three; none for the others)."""
        if self.local != "sparsegpt":  # type: ignore[attr-defined]
            return {}
        return {"blocksize": self.blocksize, "damp": self.damp, "mask_rule": self.mask_rule}


class SparseGPTSpec(_SparseGPTOptions, _PaddingOption, _Sparsity):
    """SparseGPT: H = 2XXᵀ/n, mask by w²/[H⁻¹]²_jj per column block, OBS update of the rest."""

    name: Literal["sparsegpt"]


LocalName = Literal["magnitude", "wanda", "sparsegpt"]


class ScoreSpec(Spec):
    """What a global-scores stage computes: everything its result depends on and nothing else, so
    one scoring serves every target sparsity and local method that asks for the same scores."""

    kind: Literal["zeroth", "first", "outlier_ratio"]
    n_samples: int | None = None  # calibration samples used (None: all)
    epsilon: float = 1e-3
    weighted: bool = False
    aggregate: Literal["sum", "mean"] = "sum"
    estimator: Literal["per_tensor", "per_block"] = "per_tensor"
    outlier_m: float = 5.0
    seed: Seed = 0

    @property
    def label(self) -> str:
        return {"outlier_ratio": f"owl, M={self.outlier_m:g}"}.get(self.kind, f"ecoflap {self.kind}-order")


class _Allocated(_SparseGPTOptions, _WandaOptions, _PaddingOption, _Method):
    """A non-uniform allocation: per-block sparsities around `sparsity`, then `local` inside each layer.

    The parameter-weighted sparsity over all pruned blocks (vision and language together) is
    `sparsity`; N:M patterns fix every layer's sparsity, so they do not combine with an allocation.
    `blocksize` and `damp` apply when `local` is sparsegpt, `vision_selection` when it is wanda.
    """

    sparsity: float = Field(ge=0.0, lt=1.0)
    local: LocalName = "wanda"
    finetune: FinetuneSpec | None = Field(None, description="heal after pruning: language-model layers train, pruned weights stay zero")
    n_m: str | None = None  # accepted only to refuse it with a clear message

    @model_validator(mode="after")
    def _no_n_m(self):
        if self.n_m is not None:
            raise ValueError(
                f"n_m={self.n_m!r}: an N:M pattern fixes every layer's sparsity, so there is nothing to allocate; "
                f"use it with a uniform method (name: {self.local}, n_m: {self.n_m!r})"
            )
        return self

    @property
    def target(self) -> float:
        return self.sparsity


class OWLSpec(_Allocated):
    """OWL (Yin et al., 2023): blocks with more Wanda-metric outliers (> M x mean) keep more, spread ±λ."""

    name: Literal["owl"]
    outlier_m: float = Field(5.0, gt=0, description="M: an outlier exceeds M times the block's mean metric")
    lam: float = Field(0.08, ge=0, lt=1, description="λ: block sparsities lie within target ± λ")

    @property
    def base_label(self) -> str:
        return f"owl+{self.local} {round(self.sparsity * 100, 2):g}%{' +ft' if self.finetune is not None else ''}"

    @property
    def scores(self) -> ScoreSpec:
        return ScoreSpec(kind="outlier_ratio", outlier_m=self.outlier_m)


class ECoFLaPSpec(_Allocated):
    """ECoFLaP (Sung et al., 2024): block sparsities from global scores (zeroth or first order), then local pruning."""

    name: Literal["ecoflap"]
    score: Literal["zeroth", "first"] = "zeroth"
    epsilon: float = Field(1e-3, gt=0, description="zeroth order: perturbation size")
    weighted: bool = Field(False, description="zeroth order: score |w · ĝ| per weight instead of |ĝ| per block")
    estimator: Literal["per_tensor", "per_block"] = Field(
        "per_tensor",
        description="zeroth order: perturb each weight tensor on its own and sum over the block's tensors "
        "(per_tensor, as the published code; 2 forward passes per tensor and batch), or the whole block at once "
        "(per_block; 2 per block and batch)",
    )
    aggregate: Literal["sum", "mean"] = Field(
        "sum",
        description="a block's score: total over its weights (the published BLIP-2, EVA-CLIP and LLaMA scripts), "
        "or mean per weight (their T5 script); the same allocation when every block has the same size",
    )
    score_samples: int | None = Field(
        None, gt=0, description="calibration samples the scores use (default: 32 zeroth order, 128 first order)"
    )
    max_extra: float = Field(0.1, ge=0, lt=1, description="no block is pruned beyond sparsity + max_extra")
    seed: Seed = 0

    @property
    def n_score_samples(self) -> int:
        return self.score_samples or (32 if self.score == "zeroth" else 128)

    @property
    def base_label(self) -> str:
        score = "zeroth, per block" if self.score == "zeroth" and self.estimator == "per_block" else self.score
        return f"ecoflap({score})+{self.local} {round(self.sparsity * 100, 2):g}%{' +ft' if self.finetune is not None else ''}"

    @property
    def scores(self) -> ScoreSpec:
        if self.score == "first":
            return ScoreSpec(kind="first", n_samples=self.n_score_samples, aggregate=self.aggregate)
        return ScoreSpec(
            kind="zeroth", n_samples=self.n_score_samples, epsilon=self.epsilon, weighted=self.weighted,
            aggregate=self.aggregate, seed=self.seed, estimator=self.estimator,
        )




# --------------------------------------------------------------------------- finetuning and layer dropping


class RedundancySpec(Spec):
    """How the layer-redundancy stage measures h_0..h_L (`pruning.layerdrop.redundancy`): one measurement
    serves every method and ratio that asks for the same."""

    states: Literal["block_io", "output_hidden_states"] = "block_io"
    padding: Literal["masked", "counted"] = "masked"


class _LayerDrop(_Method):
    """Shared by layer-dropping methods: drop K = floor(drop_ratio * L) decoder layers of the language model."""

    drop_ratio: float = Field(gt=0.0, lt=1.0, description="share of decoder layers to drop")
    finetune: FinetuneSpec | None = Field(None, description="heal after dropping: every remaining decoder layer trains")

    @property
    def target(self) -> float:
        return self.drop_ratio

    @property
    def selector(self) -> str:
        """The `pruning.layerdrop.selection` selector that picks the layers."""
        return self.name  # type: ignore[attr-defined]

    @property
    def redundancy(self) -> RedundancySpec:
        """What the redundancy stage measures for this method (the default measurement unless it says)."""
        return RedundancySpec()

    def selector_options(self) -> dict[str, Any]:
        """The selector's own keyword options (`LayerSelector.options`)."""
        return {}

    @property
    def protected_edges(self) -> tuple[int, int]:
        """How many of the first and of the last decoder layers may not be dropped."""
        return (0, 0)

    @property
    def train_layers(self) -> str:
        """Which layers the finetune stage trains (`pruning.layerdrop.selection` modes): every remaining
        decoder layer when healing, none otherwise."""
        return "all" if self.finetune is not None else "none"

    def _variants(self) -> list[str]:
        """Options away from their legacy value, as `name=value` (what the label adds)."""
        dumped = self.model_dump(mode="json")
        return [f"{name}={dumped[name]}" for name, info in type(self).model_fields.items()
                if info.exclude_if is not None and name in dumped]

    @property
    def base_label(self) -> str:
        healed = " +ft" if self.finetune is not None else ""
        variants = f"[{', '.join(self._variants())}]" if self._variants() else ""
        return f"{self.name}{variants} {round(self.drop_ratio * 100, 2):g}%{healed}"  # type: ignore[attr-defined]


class _EligibleLayers(Spec):
    """Which layers may be dropped: all but the first `protect_first` and last `protect_last`."""

    protect_first: int = _option(0, description="the first N decoder layers are never dropped")
    protect_last: int = _option(0, description="the last N decoder layers are never dropped")

    @property
    def protected_edges(self) -> tuple[int, int]:
        return (self.protect_first, self.protect_last)


_STATES = "block_io: each layer's input and the last layer's output, from the blocks; output_hidden_states: the model's own tuple (its last entry after the final norm)"


class ShortGPTSpec(_LayerDrop):
    """ShortGPT (Men et al., 2024): drop the K layers of lowest Block Influence 1 - cos(input, output).

    sramshetty/ShortGPT (`short_hf.py`, `metrics.py`) reads `output_hidden_states` and counts padding:
    `states: output_hidden_states, padding: counted` is that convention (docs/methods.md)."""

    name: Literal["shortgpt"]
    states: Literal["block_io", "output_hidden_states"] = _option("block_io", description=_STATES)
    padding: Literal["masked", "counted"] = _option("masked", description="masked: padding positions left out; counted: every position counts")

    @property
    def redundancy(self) -> RedundancySpec:
        return RedundancySpec(states=self.states, padding=self.padding)


class AngularSpec(_LayerDrop):
    """Angular distance (Gromov et al., 2024): drop the contiguous K layers whose ends are closest,
    arccos(cos(h_i, h_{i+K})) / pi on the last token."""

    name: Literal["angular"]
    average: Literal["cosine", "distance"] = _option(
        "cosine", description="cosine: arccos of the mean cosine over sequences; distance: the mean of each sequence's distance (the paper's Eq. 7 per sequence)"
    )

    def selector_options(self) -> dict[str, Any]:
        return {"average": self.average}


class SLEBSpec(_EligibleLayers, _LayerDrop):
    """SLEB (Song et al., 2024): remove, one at a time, the layer whose removal raises calibration NLL least.

    The reference (jiwonsong-dev/SLEB `sleb.py`) never removes the first or last block:
    `protect_first: 1, protect_last: 1`."""

    name: Literal["sleb"]
    # SLEB evaluates the calibration NLL ~K*L times (every candidate after every removal); the
    # embedded runs use a part of the calibration set to keep that affordable on a CPU.
    n_samples: int | None = Field(None, gt=0, description="calibration samples SLEB scores on; default all")


class InterlaceSpec(_EligibleLayers, _LayerDrop):
    """INTERLACE: greedy non-overlapping triplets by s_3; drop the more redundant of the first two (s_1),
    finetune the other, freeze the third as anchor; pairs when triplets run out.

    Ablations: `selection` consecutive (one contiguous run) or random (seeded), and `train: all`
    (every remaining layer trains, no anchors). The choices the paper leaves open, and what its
    code (pmadinei/Interlace) does, are options: docs/methods.md, "INTERLACE".
    """

    name: Literal["interlace"]
    selection: Literal["triplets", "consecutive", "random"] = "triplets"
    train: Literal["interleaved", "all"] = "interleaved"
    seed: Seed = Field(0, description="for random selection")
    finetune: FinetuneSpec | None = FinetuneSpec()
    tokens: Literal["mean", "last"] = _option("mean", description="s_p from the token-mean cosine or the last token's")
    windows: Literal["to_output", "to_last_input"] = _option(
        "to_output", description="to_output: windows may end at the last layer's output; to_last_input: not (the reference's range(L - p))"
    )
    states: Literal["block_io", "output_hidden_states"] = _option("block_io", description=_STATES)
    consecutive_start: Literal["block", "layer"] = _option(
        "block", description="selection consecutive: the run of highest s_K, or the run starting at the highest s_1 (the reference)"
    )

    @model_validator(mode="after")
    def _options_of_its_selection(self):
        if self.selection != "consecutive" and self.consecutive_start != "block":
            raise ValueError(f"consecutive_start={self.consecutive_start!r} applies to selection: consecutive, not {self.selection!r}")
        if self.selection == "random" and (self.tokens, self.windows, self.states) != ("mean", "to_output", "block_io"):
            raise ValueError("selection: random reads no redundancy, so tokens, windows and states do not apply")
        if self.selection == "consecutive" and self.windows != "to_output":
            raise ValueError("windows applies to selection: triplets (a consecutive run is scored by its own span)")
        return self

    @property
    def selector(self) -> str:
        return "interlace" if self.selection == "triplets" else self.selection

    @property
    def redundancy(self) -> RedundancySpec:
        return RedundancySpec(states=self.states)

    def selector_options(self) -> dict[str, Any]:
        if self.selection == "triplets":
            return {"tokens": self.tokens, "windows": self.windows}
        if self.selection == "consecutive":
            return {"tokens": self.tokens, "start": self.consecutive_start}
        return {}

    @property
    def train_layers(self) -> str:
        return self.train if self.finetune is not None else "none"

    @property
    def base_label(self) -> str:
        variant = [part for part in (self.selection != "triplets" and self.selection, self.train != "interleaved" and f"train-{self.train}") if part]
        variant += self._variants()
        suffix = f"[{', '.join(variant)}]" if variant else ""
        unhealed = " no-ft" if self.finetune is None else ""
        return f"interlace{suffix} {round(self.drop_ratio * 100, 2):g}%{unhealed}"


LAYER_DROP_METHODS = ("shortgpt", "angular", "sleb", "interlace")

MethodSpec = Annotated[
    Union[
        DenseSpec, MagnitudeSpec, WandaSpec, SparseGPTSpec, OWLSpec, ECoFLaPSpec,
        ShortGPTSpec, AngularSpec, SLEBSpec, InterlaceSpec,
    ],
    Field(discriminator="name"),
]
