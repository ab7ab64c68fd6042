import hashlib
import json
import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

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


def test_layer_drop_options_keep_the_identities_recorded_before_they_existed():
    """Options added later (`specs._option`) stay out of the parameters at their legacy value, given or not:
    these ids are what the specs hashed to before the options existed (commit e31e082)."""
    before = {"interlace": "cf8ea096f06e1f75", "sleb": "4db8a8119f5bc6f0", "shortgpt": "a3f9ca6e07bd3cc3", "angular": "c57bf5c9c0a6f1b4"}
    for name, method_id in before.items():
        assert parse({"name": name, "drop_ratio": 0.25}).method_id == method_id, name
    legacy = parse({"name": "interlace", "drop_ratio": 0.25, "tokens": "mean", "protect_first": 0, "windows": "to_output"})
    assert legacy.method_id == before["interlace"] and legacy.label == "interlace 25%"
    changed = {
        "interlace": [{"tokens": "last"}, {"protect_first": 2}, {"protect_last": 2}, {"windows": "to_last_input"},
                      {"states": "output_hidden_states"}, {"selection": "consecutive", "consecutive_start": "layer"}],
        "sleb": [{"protect_first": 1}, {"protect_last": 1}],
        "shortgpt": [{"states": "output_hidden_states"}, {"padding": "counted"}],
        "angular": [{"average": "distance"}],
    }
    for name, options in changed.items():
        ids = {parse({"name": name, "drop_ratio": 0.25, **option}).method_id for option in options}
        assert len(ids) == len(options) and before[name] not in ids, name
    spec = parse({"name": "sleb", "drop_ratio": 0.25, "protect_first": 1, "protect_last": 1})
    assert spec.canonical_params()["protect_first"] == 1 and spec.label == "sleb[protect_first=1, protect_last=1] 25%"
    assert spec.protected_edges == (1, 1)


def test_layer_drop_options_reach_the_stage_that_reads_them():
    shortgpt = parse({"name": "shortgpt", "drop_ratio": 0.25, "states": "output_hidden_states", "padding": "counted"})
    assert (shortgpt.redundancy.states, shortgpt.redundancy.padding) == ("output_hidden_states", "counted")
    assert parse({"name": "sleb", "drop_ratio": 0.25}).redundancy == parse({"name": "angular", "drop_ratio": 0.25}).redundancy
    interlace = parse({"name": "interlace", "drop_ratio": 0.25, "tokens": "last", "windows": "to_last_input"})
    assert interlace.selector_options() == {"tokens": "last", "windows": "to_last_input"}
    consecutive = parse({"name": "interlace", "drop_ratio": 0.25, "selection": "consecutive", "consecutive_start": "layer"})
    assert consecutive.selector == "consecutive" and consecutive.selector_options() == {"tokens": "mean", "start": "layer"}
    assert parse({"name": "angular", "drop_ratio": 0.25, "average": "distance"}).selector_options() == {"average": "distance"}


def test_interlace_options_that_do_not_apply_are_refused():
    import pytest
    from pydantic import ValidationError

    for entry, message in (
        ({"consecutive_start": "layer"}, "applies to selection: consecutive"),
        ({"selection": "random", "tokens": "last"}, "random reads no redundancy"),
        ({"selection": "consecutive", "windows": "to_last_input"}, "windows applies to selection: triplets"),
        ({"tokens": "first"}, "tokens"),
    ):
        with pytest.raises(ValidationError, match=message):
            parse({"name": "interlace", "drop_ratio": 0.25, **entry})


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


# ---------------------------------------------------------------------------- calibration corpora


def test_a_builtin_calibration_dumps_as_before_the_user_corpus_options_existed():
    """The options of the user's own data are left out of dumps at their defaults: built-in calibration keeps its keys."""
    from pruning.specs import CalibrationSpec

    assert CalibrationSpec().model_dump() == {"corpus": "jargon", "n_samples": 32, "seq_len": 256, "seed": 0, "batch_size": 8}
    chosen = CalibrationSpec(corpus="allenai/c4", data_files="en/c4-train.00000-of-01024.json.gz", n_samples=128, seq_len=2048)
    assert chosen.model_dump()["data_files"] == "en/c4-train.00000-of-01024.json.gz" and "fingerprint" not in chosen.model_dump()
    assert chosen.model_copy(update={"fingerprint": "f" * 16}).model_dump()["fingerprint"] == "f" * 16


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"corpus": "./domain.txt", "text_field": "body"},
         "text_field is an option of JSONL or Parquet records and Hugging Face datasets; corpus './domain.txt' is a local folder or text file"),
        ({"corpus": "data/records.jsonl", "config": "en"},
         "config is an option of Hugging Face datasets; corpus 'data/records.jsonl' is a local file of records"),
        ({"corpus": "allenai/c4", "kind": "image_qa"},
         "kind image_qa reads a local JSONL of {image, question, answer} records; corpus 'allenai/c4' is no .jsonl path"),
        ({"corpus": "./vqa.jsonl", "kind": "image_qa", "text_field": "caption"},
         "text_field is an option of JSONL or Parquet records and Hugging Face datasets; corpus './vqa.jsonl' is a JSONL of image-question-answer records"),
        ({"corpus": "./domain.txt", "fingerprint": "0" * 16}, "fingerprint is computed from the corpus's contents by the run; leave it out"),
        ({"corpus": ""}, "String should have at least 1 character"),
    ],
)  # fmt: skip
def test_a_calibration_option_given_for_another_kind_of_corpus_is_refused(fields, expected):
    from pruning.specs import CalibrationSpec

    with pytest.raises(ValidationError, match=re.escape(expected)):
        CalibrationSpec(**fields)


def test_a_corpus_is_a_local_path_when_written_as_one_or_there(tmp_path, monkeypatch):
    from pruning.specs import CalibrationSpec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    paths = {corpus: CalibrationSpec(corpus=corpus).local_path for corpus in ("notes", "./x", "/abs/x", "~/x", "x.txt", "x.parquet", "wikitext", "allenai/c4")}
    assert {corpus for corpus, path in paths.items() if path is None} == {"wikitext", "allenai/c4"}
    assert paths["~/x"] == Path("~/x").expanduser()
