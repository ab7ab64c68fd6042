"""End to end: layer dropping (INTERLACE and the baselines), with and without the finetune stage, on a
tiny Llama and a tiny LLaVA given by local path, recorded in DuckDB."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from tests.flows.test_benchmark import prunebench, query

pytestmark = pytest.mark.e2e

FINETUNE = {"examples": 8, "seq_len": 32, "effective_batch": 4, "micro_batch": 2, "lr": 1e-3}


def _run(tmp, name: str, study: dict, cache_dir, output: list | None = None, keep: str | None = None) -> object:
    config = {
        "name": name,
        "studies": [study],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir),
                   **({"keep_checkpoints": keep} if keep else {})},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = prunebench("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    if output is not None:
        output.append(result.stdout + result.stderr)
    return tmp / "results.duckdb"


@pytest.fixture(scope="module")
def text_run(module_tmp, cache_dir, smollm2_checkpoint):
    """An 8-layer random-init Llama with SmolLM2's tokenizer: K = 2 layers at 25%."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruning.models.sources import save_checkpoint

    tmp = module_tmp("layerdrop")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    checkpoint = save_checkpoint(LlamaForCausalLM(config), tokenizer, tmp / "tiny-llama")
    study = {
        "model": {"source": str(checkpoint)},
        "calibration": {"n_samples": 4, "seq_len": 32, "batch_size": 4},
        "methods": [
            {"name": "dense"},
            {"name": "interlace", "drop_ratio": 0.25, "finetune": FINETUNE},
            {"name": "interlace", "drop_ratio": 0.25, "selection": "random", "train": "all", "finetune": FINETUNE},
            {"name": "shortgpt", "drop_ratio": 0.25},
            {"name": "shortgpt", "drop_ratio": 0.25, "finetune": FINETUNE},
            {"name": "angular", "drop_ratio": 0.25},
            {"name": "sleb", "drop_ratio": 0.25, "n_samples": 2},
            {"name": "wanda", "sparsity": 0.5, "finetune": FINETUNE},
        ],
        "eval": {"suites": ["jargon_ppl"], "limit": 4},
    }
    return _run(tmp, "layerdrop-smoke", study, cache_dir)


def test_a_bf16_model_finetunes_through_fp32_master_copies_and_stays_bf16(text_run, tmp_path, cache_dir):
    """`dtype: bfloat16`: the stage steps the trained layers through fp32 copies (its log says so) and
    saves a bf16 checkpoint in which they, and only they, moved. It trains on the user's own text
    (`finetune.data`), which a study calibrated on the user's data needs."""
    from safetensors.torch import load_file

    checkpoint = text_run.parent / "tiny-llama"
    (tmp_path / "domain.txt").write_text("".join(f"Record {n}: the valve on line {n % 7} was opened at dawn.\n" for n in range(100)))
    study = {
        "model": {"source": str(checkpoint), "dtype": "bfloat16"},
        "calibration": {"corpus": str(tmp_path / "domain.txt"), "n_samples": 4, "seq_len": 32, "batch_size": 4},
        "methods": [{"name": "shortgpt", "drop_ratio": 0.25, "finetune": {**FINETUNE, "data": str(tmp_path / "domain.txt")}}],
        "eval": {"suites": ["jargon_ppl"], "limit": 4},
    }
    output: list[str] = []
    _run(tmp_path, "layerdrop-bf16", study, cache_dir, output, keep="all")  # `all` keeps the checkpoint before finetuning
    assert "(stored in bfloat16, stepped through fp32 master copies)" in output[0]
    unwrapped = re.sub(r"\s+", "", output[0])  # Prefect's console wraps long lines
    assert re.search(rf"examplesof{re.escape(str(tmp_path / 'domain.txt'))},loss", unwrapped), output[0][-3000:]
    root = tmp_path / "work" / "checkpoints"
    (dropped,) = [p for p in root.glob("*/shortgpt-*") if "-ft-" not in p.name]
    (finetuned,) = root.glob("*/shortgpt-*-ft-*")
    before, after = load_file(str(dropped / "model.safetensors")), load_file(str(finetuned / "model.safetensors"))
    assert all(tensor.dtype == torch.bfloat16 for tensor in after.values())
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.startswith("model.layers.") for name in moved)


def test_every_layer_drop_method_is_recorded_with_its_plan(text_run):
    runs = dict(query(text_run, "SELECT method_label, params_pruned FROM runs"))
    removed = {label: rest for label, *rest in query(text_run, "SELECT method_label, target_weight_sparsity, target_drop_ratio, "
                                                                "layers_dropped, layers_total FROM runs")}  # fmt: skip
    assert removed["shortgpt 25%"] == [None, 0.25, 2, 8] and removed["wanda 50% +ft"] == [0.5, None, None, None]
    assert sorted(runs) == sorted([
        "dense", "interlace 25%", "interlace[random, train-all] 25%", "shortgpt 25%", "shortgpt 25% +ft",
        "angular 25%", "sleb 25%", "wanda 50% +ft",
    ])
    layer_params = query(text_run, "SELECT DISTINCT a.n_params FROM allocations a JOIN runs r USING (run_id) WHERE r.method = 'interlace'")
    (per_layer,) = layer_params[0]
    for label in ("interlace 25%", "shortgpt 25%", "angular 25%", "sleb 25%"):
        assert runs[label] == 2 * per_layer  # K = floor(0.25 * 8) whole layers removed
        dropped = query(
            text_run,
            "SELECT a.block FROM allocations a JOIN runs r USING (run_id) "
            f"WHERE r.method_label = '{label}' AND a.achieved_sparsity = 1",
        )
        assert len(dropped) == 2
    # angular distance drops a contiguous block
    (first, second) = sorted(b for (b,) in query(text_run, "SELECT a.block FROM allocations a JOIN runs r USING (run_id) "
                                                 "WHERE r.method_label = 'angular 25%' AND a.achieved_sparsity = 1"))
    assert second == first + 1


def test_finetune_stage_runs_only_where_asked_and_scores_are_recorded(text_run):
    stages = query(text_run, "SELECT r.method_label, list(s.stage) FROM runs r JOIN stages s USING (run_id) GROUP BY 1")
    stages = {label: set(names) for label, names in stages}
    for label in ("interlace 25%", "shortgpt 25% +ft", "wanda 50% +ft", "interlace[random, train-all] 25%"):
        assert "finetune" in stages[label], label
    for label in ("shortgpt 25%", "angular 25%", "sleb 25%"):
        assert "finetune" not in stages[label] and "drop" in stages[label], label
    assert "sleb" in stages["sleb 25%"] and "redundancy" in stages["interlace 25%"]
    assert "redundancy" not in stages["interlace[random, train-all] 25%"]  # random selection reads no calibration
    values = query(text_run, "SELECT r.method_label, v.value FROM runs r JOIN results v USING (run_id) WHERE v.metric = 'word_perplexity'")
    assert len(values) == 8 and all(value > 0 for _, value in values)


def test_by_default_each_run_keeps_the_checkpoint_it_evaluated_and_no_other(text_run):
    """`keep_checkpoints: last`: a finetuned method's checkpoint before finetuning is removed."""
    recorded = dict(query(text_run, "SELECT checkpoint, checkpoint_kept FROM runs WHERE method != 'dense'"))
    root = text_run.parent / "work" / "checkpoints" / "tiny-llama"
    assert sorted(str(path) for path in root.iterdir() if not path.name.startswith(".")) == sorted(recorded)
    assert set(recorded.values()) == {True} and len(recorded) == 7


def test_pruned_weights_stay_zero_through_the_finetune_stage(text_run):
    (sparsity,) = query(text_run, "SELECT achieved_weight_sparsity FROM runs WHERE method_label = 'wanda 50% +ft'")[0]
    assert sparsity == pytest.approx(0.5, abs=1e-3)
    import glob
    import json

    from pruning.models.sources import load_model
    from pruning.specs import ModelSpec

    root = text_run.parent / "work" / "checkpoints"
    (finetuned,) = [p for p in glob.glob(str(root / "*" / "wanda-50pct-+ft-ft-*"))]
    model, _ = load_model(finetuned, ModelSpec(source=finetuned))
    up = model.model.layers[3].mlp.up_proj.weight
    assert (up == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    # its zeros kept, the finetune is stored compressed as its prune is
    assert json.loads(open(f"{finetuned}/config.json").read())["quantization_config"]["sparsity_config"]["format"] == "sparse-bitmask"


KEEP_METHODS = [{"name": "shortgpt", "drop_ratio": 0.25, "finetune": FINETUNE}, {"name": "magnitude", "sparsity": 0.5}]


@pytest.fixture(scope="module")
def keep_none(module_tmp, cache_dir, smollm2_checkpoint):
    """`keep_checkpoints: none` run twice, then `last` once."""
    from tests.flows.test_sweep import tiny_llama

    tmp = module_tmp("keep-none")
    study = {
        "model": {"source": str(tiny_llama(tmp / "tiny-llama", smollm2_checkpoint))},
        "calibration": {"n_samples": 4, "seq_len": 32, "batch_size": 4},
        "methods": KEEP_METHODS,
        "eval": {"suites": ["jargon_ppl"], "limit": 4},
    }
    outputs: list[str] = []
    on_disk = []
    for keep in ("none", "none", "last"):
        database = _run(tmp, "keep-none", study, cache_dir, outputs, keep=keep)
        root = tmp / "work" / "checkpoints" / "tiny-llama"
        on_disk.append(sorted(path.name for path in root.iterdir() if not path.name.startswith(".")))
    flow_runs = [flow_run for (flow_run,) in query(database, "SELECT flow_run_id FROM runs GROUP BY 1 ORDER BY min(finished_at)")]
    return database, outputs, on_disk, flow_runs, root


def _stages(database, flow_run: str) -> dict[tuple[str, str], bool]:
    rows = query(database, f"SELECT r.method_label, s.stage, s.cached FROM runs r JOIN stages s USING (run_id) WHERE r.flow_run_id = '{flow_run}'")
    return {(label, stage): cached for label, stage, cached in rows}


def test_keep_none_leaves_no_checkpoint_and_records_the_scores(keep_none):
    database, outputs, on_disk, flow_runs, root = keep_none
    assert on_disk[0] == []  # but the empty lock files beside each checkpoint (pruning/models/removal.py)
    first = query(database, f"SELECT r.method_label, r.checkpoint, r.checkpoint_kept, count(v.value) FROM runs r JOIN results v "
                            f"USING (run_id) WHERE r.flow_run_id = '{flow_runs[0]}' GROUP BY ALL ORDER BY 1")  # fmt: skip
    assert [(label, kept) for label, _, kept, n in first if n > 0] == [("magnitude 50%", False), ("shortgpt 25% +ft", False)]
    assert all(checkpoint.startswith(str(root)) for _, checkpoint, _, _ in first)
    assert "removed checkpoint" in outputs[0] and " freed (output.keep_checkpoints: none" in outputs[0]
    assert "removed after its scores were recorded" in outputs[0] and "its checkpoint before finetuning was removed" in outputs[0]


def test_keep_none_rerun_serves_the_scores_from_the_cache_and_rebuilds_nothing(keep_none):
    database, outputs, on_disk, flow_runs, _ = keep_none
    assert on_disk[1] == [] and "rebuilding it" not in outputs[1]
    stages = _stages(database, flow_runs[1])
    checkpoint_stages = {key: cached for key, cached in stages.items() if key[1] in ("drop", "finetune", "prune", "evaluate")}
    assert len(checkpoint_stages) == 5 and all(checkpoint_stages.values())
    values = query(database, "SELECT r.flow_run_id, r.method_label, v.value FROM runs r JOIN results v USING (run_id) ORDER BY 2, 3")
    assert {(label, value) for flow_run, label, value in values if flow_run == flow_runs[0]} == {
        (label, value) for flow_run, label, value in values if flow_run == flow_runs[1]}  # fmt: skip


def test_keep_last_after_none_rebuilds_the_evaluated_checkpoints_with_a_warning(keep_none):
    database, outputs, on_disk, flow_runs, root = keep_none
    recorded = dict(query(database, f"SELECT checkpoint, checkpoint_kept FROM runs WHERE flow_run_id = '{flow_runs[2]}'"))
    assert sorted(str(root / name) for name in on_disk[2]) == sorted(recorded) and set(recorded.values()) == {True}
    assert "does not exist; rebuilding it" in outputs[2]
    assert not any(_stages(database, flow_runs[2])[(label, "evaluate")] for label in ("magnitude 50%", "shortgpt 25% +ft"))


@pytest.fixture(scope="module")
def vlm_run(module_tmp, cache_dir, tiny_vlm_checkpoint):
    tmp = module_tmp("vlm-layerdrop")
    checkpoint = tiny_vlm_checkpoint(tmp / "tiny-vlm", text_layers=4)
    study = {
        "model": {"source": str(checkpoint)},
        "calibration": {"corpus": "imageqa", "n_samples": 4, "batch_size": 4},
        "methods": [
            {"name": "dense"},
            {"name": "interlace", "drop_ratio": 0.25, "finetune": {"examples": 8, "effective_batch": 4, "micro_batch": 2}},
            {"name": "shortgpt", "drop_ratio": 0.25},
        ],
        "eval": {"suites": ["imageqa_mc"], "limit": 6},
    }
    return _run(tmp, "vlm-layerdrop-smoke", study, cache_dir)


def test_vlm_language_layers_are_dropped_and_finetuned_on_image_qa(vlm_run):
    labels = sorted(label for (label,) in query(vlm_run, "SELECT method_label FROM runs"))
    assert labels == ["dense", "interlace 25%", "shortgpt 25%"]
    dropped = query(vlm_run, "SELECT a.modality, a.block FROM allocations a JOIN runs r USING (run_id) "
                             "WHERE r.method_label = 'interlace 25%' AND a.achieved_sparsity = 1")
    assert len(dropped) == 1 and dropped[0][0] == "language"
    accuracy = query(vlm_run, "SELECT r.method_label FROM runs r JOIN results v USING (run_id) WHERE v.metric = 'acc'")
    assert len(accuracy) == 3
