"""`prunebench prune`: the config a one-liner runs (its --out is `prunebench export --dense`: tests/flows/test_cli_export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.config import ExperimentConfig
from flows.oneline import oneline_config
from pruning.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


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


def test_an_adapter_remote_code_and_user_tasks_go_into_the_model_and_eval_as_absolute_paths(tmp_path, user_mc_task, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    tasks = user_mc_task(tmp_path)
    config = oneline_config("packaged:smollm2-135m", "wanda", sparsity=0.5, suites="my_mc", database=tmp_path / "db.duckdb",
                            adapter=Path("../../repo/configs/adapters/starcoder.yaml"), trust_remote_code=True,
                            include_path=[Path("tasks")])  # fmt: skip
    (study,) = config["studies"]
    assert study["model"] == {"source": "packaged:smollm2-135m", "trust_remote_code": True,
                              "adapter": str((tmp_path / "../../repo/configs/adapters/starcoder.yaml").resolve())}  # fmt: skip
    assert study["eval"] == {"suites": ["my_mc"], "include_path": [str(tasks)]}
    study["model"]["adapter"] = str(REPO / "configs" / "adapters" / "starcoder.yaml")
    validated = ExperimentConfig.model_validate(config).studies[0]
    assert validated.model.adapter.family == "starcoder" and validated.model.trust_remote_code
    assert validated.eval.include_path == [tasks]
    assert "trust_remote_code" not in oneline_config("m", "wanda", sparsity=0.5, database=tmp_path / "db")["studies"][0]["model"]
