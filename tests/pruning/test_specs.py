import hashlib
import json

import pytest
from pydantic import TypeAdapter, ValidationError

from pruning.specs import MethodSpec, method_identity

parse = TypeAdapter(MethodSpec).validate_python


def test_identity_is_the_hash_of_every_parameter_defaults_included():
    spec = parse({"name": "sparsegpt", "sparsity": 0.5})
    params = {"name": "sparsegpt", "sparsity": 0.5, "n_m": None, "finetune": None, "blocksize": 128, "damp": 0.01, "padding": "included"}
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


def test_vision_selection_is_wandas_and_reaches_only_the_vision_blocks():
    assert parse({"name": "wanda", "sparsity": 0.5}).modality_options() == {"vision": {"selection": "layer"}}
    per_row = parse({"name": "ecoflap", "sparsity": 0.5, "vision_selection": "per_row"})  # local: wanda by default
    assert per_row.modality_options() == {"vision": {"selection": "per_row"}}
    assert parse({"name": "ecoflap", "sparsity": 0.5, "local": "sparsegpt"}).modality_options() == {}
    assert parse({"name": "magnitude", "sparsity": 0.5}).modality_options() == {}
    with pytest.raises(ValidationError, match="vision_selection='layer' chooses how Wanda compares weights; local is 'sparsegpt'"):
        parse({"name": "owl", "sparsity": 0.5, "local": "sparsegpt", "vision_selection": "layer"})
    with pytest.raises(ValidationError, match="local is 'magnitude'"):
        parse({"name": "ecoflap", "sparsity": 0.5, "local": "magnitude", "vision_selection": "per_row"})
    with pytest.raises(ValidationError, match="vision_selection"):
        parse({"name": "sparsegpt", "sparsity": 0.5, "vision_selection": "layer"})  # not a SparseGPT field at all


def test_padding_option_on_every_method_that_gathers_statistics():
    for entry in ({"name": "wanda"}, {"name": "sparsegpt"}, {"name": "owl"}, {"name": "ecoflap", "local": "sparsegpt"}):
        assert parse({**entry, "sparsity": 0.5, "padding": "excluded"}).exclude_padding, entry
        assert not parse({**entry, "sparsity": 0.5, "padding": "included"}).exclude_padding, entry
    assert not parse({"name": "magnitude", "sparsity": 0.5}).exclude_padding
    with pytest.raises(ValidationError, match="padding"):
        parse({"name": "magnitude", "sparsity": 0.5, "padding": "excluded"})  # magnitude reads no inputs
    with pytest.raises(ValidationError, match="'excluded' or 'included'"):
        parse({"name": "wanda", "sparsity": 0.5, "padding": "masked"})
