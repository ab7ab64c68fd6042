"""`prunebench prune`: the config a one-liner runs, and the copy of its checkpoint."""

from __future__ import annotations

import pytest
import yaml

from flows.config import ExperimentConfig
from flows.oneline import copy_checkpoint, oneline_config
from pruning.errors import ConfigError, PrunebenchError
from pruning.models.sources import MANIFEST, checkpoint_problem, save_checkpoint


def test_the_config_is_the_method_beside_a_dense_baseline_and_validates(tmp_path):
    config = oneline_config("/models/base/Llama-7b/", "sparsegpt", sparsity=0.5, fields=["blocksize=64", "n_m=2:4"],
                            calibration="jargon", n_samples=8, seq_len=64, suites="jargon_ppl, jargon_mc", limit=3,
                            dtype="bfloat16", database=tmp_path / "db.duckdb", workdir=tmp_path / "work", offload="disk")  # fmt: skip
    assert config["name"] == "prune-Llama-7b-sparsegpt-50"
    (study,) = config["studies"]
    assert study["model"] == {"source": "/models/base/Llama-7b/", "dtype": "bfloat16", "offload": "disk"}
    assert study["methods"] == [{"name": "dense"}, {"name": "sparsegpt", "sparsity": 0.5, "blocksize": 64, "n_m": "2:4"}]
    assert study["calibration"] == {"corpus": "jargon", "n_samples": 8, "seq_len": 64}
    assert study["eval"] == {"suites": ["jargon_ppl", "jargon_mc"], "limit": 3}
    assert config["output"] == {"database": str(tmp_path / "db.duckdb"), "workdir": str(tmp_path / "work")}
    validated = ExperimentConfig.model_validate(yaml.safe_load(yaml.safe_dump(config)))  # what `prune` writes and runs
    assert validated.studies[0].methods[1].blocksize == 64
    assert validated.studies[0].model.offload == "disk"


def test_layer_dropping_takes_a_drop_ratio_and_defaults_stay_the_configs(tmp_path):
    config = oneline_config("packaged:smollm2-135m", "shortgpt", drop_ratio=0.25, database=tmp_path / "db.duckdb")
    assert config["name"] == "prune-smollm2-135m-shortgpt-25"
    assert "calibration" not in config["studies"][0] and config["studies"][0]["eval"] == {"suites": ["jargon_ppl"]}
    assert ExperimentConfig.model_validate(config).studies[0].methods[1].drop_ratio == 0.25


@pytest.mark.parametrize("field", ["blocksize", "=3", "blocksize=[unclosed"])
def test_a_malformed_field_is_named(tmp_path, field):
    with pytest.raises(ConfigError, match="--set"):
        oneline_config("m", "wanda", sparsity=0.5, fields=[field], database=tmp_path / "db")


def test_the_checkpoint_is_copied_whole_to_a_new_directory(tmp_path):
    from tests.pruning.conftest import build_tiny

    source = save_checkpoint(build_tiny("llama"), None, tmp_path / "pruned")
    dest = copy_checkpoint(source, tmp_path / "out" / "wanda50")
    assert checkpoint_problem(dest) is None and (dest / MANIFEST).is_file()
    assert not [path for path in (tmp_path / "out").iterdir() if path.name.startswith(".")]  # no temporary left
    with pytest.raises(PrunebenchError, match="exists; name a new directory"):
        copy_checkpoint(source, dest)
    (source / "model.safetensors").write_bytes(b"x")
    with pytest.raises(PrunebenchError, match="cannot copy the checkpoint: .*model.safetensors is 1 bytes"):
        copy_checkpoint(source, tmp_path / "elsewhere")
