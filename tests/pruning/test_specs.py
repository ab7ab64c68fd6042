import hashlib
import json

from pydantic import TypeAdapter

from pruning.specs import MethodSpec, method_identity

parse = TypeAdapter(MethodSpec).validate_python


def test_identity_is_the_hash_of_every_parameter_defaults_included():
    spec = parse({"name": "sparsegpt", "sparsity": 0.5})
    params = {"name": "sparsegpt", "sparsity": 0.5, "n_m": None, "finetune": None, "blocksize": 128, "damp": 0.01}
    assert spec.canonical_params() == params
    expected = hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert spec.method_id == method_identity(params) == expected


def test_identity_sees_nested_parameters_and_ignores_how_they_were_spelled():
    a = parse({"name": "wanda", "n_m": "2:4"})
    assert a.method_id == parse({"name": "wanda", "n_m": "2:4", "sparsity": 0.5}).method_id  # implied sparsity
    healed = parse({"name": "shortgpt", "drop_ratio": 0.25, "finetune": {"lr": 1e-5}})
    assert healed.method_id == parse({"name": "shortgpt", "drop_ratio": 0.25, "finetune": {}}).method_id  # lr's default
    assert healed.method_id != parse({"name": "shortgpt", "drop_ratio": 0.25, "finetune": {"lr": 1e-4}}).method_id


def test_the_recorded_parameters_give_back_the_identity():
    """runs.method_params holds model_dump_json(): the identity must be recomputable from it (the schema
    migration does exactly this for runs recorded before identities existed)."""
    for entry in ({"name": "owl", "sparsity": 0.6, "lam": 0.04}, {"name": "interlace", "drop_ratio": 0.25}, {"name": "dense"}):
        spec = parse({**entry, "id": "shown only"})
        assert "id" not in json.loads(spec.model_dump_json())
        assert method_identity(json.loads(spec.model_dump_json())) == spec.method_id


def test_labels_fall_back_from_the_experiments_to_the_id_to_the_methods_own():
    spec = parse({"name": "wanda", "sparsity": 0.5})
    assert spec.label == spec.base_label == "wanda 50%"
    assert parse({"name": "wanda", "sparsity": 0.5, "id": "mine"}).label == "mine"
    spec.labelled("wanda 50% (x=1)")
    assert spec.label == "wanda 50% (x=1)" and spec.base_label == "wanda 50%"


def test_ecoflap_estimator_is_a_parameter_and_per_block_says_so_in_its_label():
    published = parse({"name": "ecoflap", "sparsity": 0.5})
    per_block = parse({"name": "ecoflap", "sparsity": 0.5, "estimator": "per_block"})
    assert published.estimator == "per_tensor" and published.scores.estimator == "per_tensor"
    assert per_block.scores.estimator == "per_block" and per_block.method_id != published.method_id
    assert published.base_label == "ecoflap(zeroth)+wanda 50%"
    assert per_block.base_label == "ecoflap(zeroth, per block)+wanda 50%"
