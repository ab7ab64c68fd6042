import re
from pathlib import Path

import pytest
import yaml

from flows.config import EvalSpec, ExperimentConfig, load_config, spec_hash
from pruning.errors import ConfigError
from pruning.specs import ModelSpec, WandaSpec

REPO = Path(__file__).resolve().parents[2]

VALID = """
name: t
studies:
  - model: {source: packaged:smollm2-135m}
    methods:
      - name: dense
      - name: wanda
        sparsity: 0.5
    eval: {suites: [jargon_ppl]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(path.name for path in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name):
    config = load_config(REPO / "configs" / name)
    assert config.name == name.removesuffix(".yaml")
    assert all(study.methods for study in config.studies)


def test_valid_config_defaults(tmp_path):
    config = load_config(write(tmp_path, VALID))
    study = config.studies[0]
    assert study.calibration.n_samples == 32 and study.calibration.seq_len == 256
    assert [m.label for m in study.methods] == ["dense", "wanda 50%"]
    assert config.output.database == Path("results/prunebench.duckdb")


def test_overrides_replace_output_fields(tmp_path):
    config = load_config(write(tmp_path, VALID), {"database": "x.duckdb", "workdir": None})
    assert config.output.database == Path("x.duckdb")
    assert config.output.workdir == Path(".prunebench")


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (("sparsity: 0.5", "sparsity: 1.5"), "studies.0.methods.1.wanda.sparsity: Input should be less than 1 (got 1.5)"),
        (("sparsity: 0.5", "sparsity: -0.1"), "greater than or equal to 0"),
        (("name: wanda", "name: wandaa"), "does not match any of the expected tags"),
        (("name: wanda", "name: wanda\n        sparsityy: 0.5"), "sparsityy: Extra inputs are not permitted"),
        (("eval: {suites: [jargon_ppl]}", "eval: {suites: []}"), "studies.0.eval.suites"),
        (("name: t", "name: t\nbogus: 1"), "bogus: Extra inputs are not permitted"),
        (("sparsity: 0.5", "n_m: '2:4'\n        sparsity: 0.6"), "implies sparsity 0.5"),
        (("sparsity: 0.5", "n_m: '4:2'"), "0 < N < M"),
        (("name: wanda", "name: ecoflap\n        n_m: '2:4'"), "an N:M pattern fixes every layer's sparsity"),
        (("name: wanda", "name: owl\n        local: obc"), "local: Input should be 'magnitude', 'wanda' or 'sparsegpt'"),
        (("name: wanda", "name: ecoflap\n        score: second"), "score: Input should be 'zeroth' or 'first'"),
        (("name: wanda", "name: ecoflap\n        epsilon: 0"), "epsilon: Input should be greater than 0"),
        (("name: wanda", "name: sparsegpt\n        damp: -1"), "damp: Input should be greater than 0"),
        (("model: {source: packaged:smollm2-135m}", "model: {source: packaged:smollm2-135m, offload: gpu}"),
         "offload: Input should be 'none', 'cpu' or 'disk'"),
        (("model: {source: packaged:smollm2-135m}\n    methods:\n      - name: dense\n      - name: wanda",
          "model: {source: packaged:smollm2-135m, offload: cpu}\n    methods:\n      - name: dense\n      - name: ecoflap\n        score: first"),
         "methods.1 (ecoflap(first)+wanda 50%): first-order scores need the whole model on the device"),
    ],
)
def test_bad_config_fails_with_field_and_reason(tmp_path, mutation, expected):
    old, new = mutation
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, VALID.replace(old, new, 1)))
    message = str(err.value)
    assert expected in message
    assert "config.yaml" in message and "\n" not in message


def test_malformed_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+"):
        load_config(write(tmp_path, "name: t\nstudies: [\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_method_listed_twice_is_rejected(tmp_path):
    text = VALID.replace("      - name: dense\n", "      - name: dense\n      - name: dense\n")
    with pytest.raises(ConfigError, match=r"the same method is listed twice \(entries 1 and 2 after expanding grids, dense"):
        load_config(write(tmp_path, text))


def _study(*methods: dict) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "t",
        "studies": [{"model": {"source": "packaged:smollm2-135m"}, "methods": list(methods), "eval": {"suites": ["jargon_ppl"]}}],
    })  # fmt: skip


def test_methods_differing_in_one_parameter_are_two_methods_labelled_by_it():
    methods = _study(
        {"name": "dense"},
        {"name": "sparsegpt", "sparsity": 0.5, "blocksize": 32}, {"name": "sparsegpt", "sparsity": 0.5},
        {"name": "owl", "sparsity": 0.5, "lam": 0.04}, {"name": "owl", "sparsity": 0.7, "lam": 0.04},
        {"name": "wanda", "sparsity": 0.5, "finetune": {"lr": 1e-4}}, {"name": "wanda", "sparsity": 0.5, "finetune": {}},
    ).studies[0].methods  # fmt: skip
    assert [m.label for m in methods] == [
        "dense", "sparsegpt 50% (blocksize=32)", "sparsegpt 50% (blocksize=128)",
        "owl+wanda 50%", "owl+wanda 70%",  # the label already tells them apart
        "wanda 50% +ft (finetune.lr=0.0001)", "wanda 50% +ft (finetune.lr=1e-05)",
    ]  # fmt: skip
    assert len({m.method_id for m in methods}) == len(methods)


def test_a_grid_entry_expands_to_one_method_per_combination():
    methods = _study({"name": "owl", "sparsity": [0.5, 0.7], "lam": [0.04, 0.08]}).studies[0].methods
    assert [(m.sparsity, m.lam) for m in methods] == [(0.5, 0.04), (0.5, 0.08), (0.7, 0.04), (0.7, 0.08)]
    assert [m.label for m in methods] == [
        "owl+wanda 50% (lam=0.04)", "owl+wanda 50% (lam=0.08)", "owl+wanda 70% (lam=0.04)", "owl+wanda 70% (lam=0.08)",
    ]  # fmt: skip
    nested = _study({"name": "shortgpt", "drop_ratio": 0.25, "finetune": {"lr": [1e-5, 1e-4], "epochs": [1, 2]}}).studies[0].methods
    assert [(m.finetune.lr, m.finetune.epochs) for m in nested] == [(1e-5, 1), (1e-5, 2), (1e-4, 1), (1e-4, 2)]


def test_a_user_id_names_the_method_and_is_no_parameter():
    mine, default = _study({"name": "wanda", "sparsity": 0.5, "id": "my wanda"}, {"name": "wanda", "sparsity": 0.6}).studies[0].methods
    assert (mine.label, default.label) == ("my wanda", "wanda 60%")
    assert mine.method_id == _study({"name": "wanda", "sparsity": 0.5}).studies[0].methods[0].method_id
    grid = _study({"name": "wanda", "sparsity": [0.5, 0.6], "id": "mine"}).studies[0].methods
    assert [m.label for m in grid] == ["mine (sparsity=0.5)", "mine (sparsity=0.6)"]


@pytest.mark.parametrize(
    "methods, expected",
    [
        # the same parameters under two names are still one method
        ([{"name": "wanda", "sparsity": 0.5, "id": "a"}, {"name": "wanda", "sparsity": 0.5, "id": "b"}], "entries 1 and 2"),
        # a default spelled out is the default
        ([{"name": "sparsegpt", "sparsity": 0.5}, {"name": "sparsegpt", "sparsity": 0.5, "blocksize": 128}], "sparsegpt 50%"),
        ([{"name": "wanda", "n_m": "2:4"}, {"name": "wanda", "sparsity": [0.5, 0.6], "n_m": "2:4"}], "implies sparsity 0.5"),
        ([{"name": "wanda", "sparsity": [0.5, 0.6]}, {"name": "wanda", "sparsity": 0.6}], "entries 2 and 3"),
        ([{"name": "wanda", "sparsity": []}], "sparsity: an empty list"),
    ],
)
def test_identical_methods_and_empty_grids_are_refused(tmp_path, methods, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump({"name": "t", "studies": [
            {"model": {"source": "packaged:smollm2-135m"}, "methods": methods, "eval": {"suites": ["jargon_ppl"]}}]})))  # fmt: skip
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_allocation_methods_label_their_local_pruner_and_share_scores_across_sparsities():
    from pydantic import TypeAdapter

    from pruning.specs import MethodSpec

    parse = TypeAdapter(MethodSpec).validate_python
    a = parse({"name": "ecoflap", "sparsity": 0.6, "local": "sparsegpt"})
    b = parse({"name": "ecoflap", "sparsity": 0.7, "local": "wanda"})
    assert a.label == "ecoflap(zeroth)+sparsegpt 60%" and a.target == 0.6
    assert a.scores == b.scores and a.scores.n_samples == 32  # one scoring serves both
    assert parse({"name": "ecoflap", "sparsity": 0.5, "score": "first"}).scores.n_samples == 128
    assert parse({"name": "owl", "sparsity": 0.5}).scores.kind == "outlier_ratio"
    assert a.local_options() == {"blocksize": 128, "damp": 0.01, "mask_rule": "exact"} and b.local_options() == {}


def test_n_m_fixes_sparsity_and_label():
    spec = WandaSpec(name="wanda", n_m="2:4")
    assert spec.target == 0.5 and spec.label == "wanda 2:4"


def test_spec_hash_is_stable_and_sensitive():
    a, b = WandaSpec(name="wanda", sparsity=0.5), WandaSpec(name="wanda", sparsity=0.6)
    assert spec_hash(a) == spec_hash(WandaSpec(name="wanda", sparsity=0.5))
    assert spec_hash(a) != spec_hash(b)


def test_experiment_is_frozen():
    config = ExperimentConfig.model_validate({"name": "x", "studies": [
        {"model": {"source": "m"}, "methods": [{"name": "dense"}], "eval": {"suites": ["s"]}}]})
    with pytest.raises(Exception):
        config.name = "y"


def test_primary_metrics_name_evaluated_suites_and_leave_hashes_alone(tmp_path):
    config = load_config(write(tmp_path, VALID.replace("eval: {suites: [jargon_ppl]}",
                                                       "eval: {suites: [prunebench_text], primary_metrics: {jargon_mc: acc_norm}}")))  # fmt: skip
    evaluation = config.studies[0].eval
    assert evaluation.primary_metrics == {"jargon_mc": "acc_norm"}  # a tag's member may be chosen
    assert "primary_metrics" not in EvalSpec(suites=["jargon_ppl"]).model_dump()  # configs without it keep their hashes
    with pytest.raises(ConfigError, match=r"studies\.0\.eval\.primary_metrics: Value error, suite 'hellaswag' is not evaluated"):
        load_config(write(tmp_path, VALID.replace("eval: {suites: [jargon_ppl]}",
                                                  "eval: {suites: [jargon_ppl], primary_metrics: {hellaswag: acc}}")))  # fmt: skip


def test_calibration_seeds_run_each_calibrated_method_once_per_seed(tmp_path):
    from flows.benchmark import per_seed

    text = VALID.replace("    methods:", "    calibration: {seeds: [3, 1, 2]}\n    methods:").replace(
        "      - name: dense", "      - name: dense\n      - {name: magnitude, sparsity: 0.5}")
    study = load_config(write(tmp_path, text)).studies[0]
    assert study.calibration.seed == 3  # the first draw is what a single run would use
    seeded = per_seed(study)
    assert [s.calibration.seed for s in seeded] == [3, 1, 2]
    assert [[m.name for m in s.methods] for s in seeded] == [["dense", "magnitude", "wanda"], ["wanda"], ["wanda"]]
    assert all(s.calibration.seeds is None for s in seeded)
    # seeds are no parameter of a run: a study with seeds [3, ...] hashes as the single draw 3
    assert spec_hash(study.calibration) == spec_hash(seeded[0].calibration)
    assert per_seed(load_config(write(tmp_path, VALID)).studies[0])[0].calibration.seed == 0


@pytest.mark.parametrize(
    "calibration, expected",
    [
        ("{seeds: [0, 0]}", "seeds must differ"),
        ("{seeds: []}", "List should have at least 1 item"),
        ("{seed: 4, seeds: [0, 1]}", "give seed or seeds, not both"),
    ],
)
def test_bad_calibration_seeds_are_refused(tmp_path, calibration, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, VALID.replace("    methods:", f"    calibration: {calibration}\n    methods:")))


def test_a_calibration_option_of_another_kind_of_corpus_is_one_line_naming_the_field(tmp_path):
    text = VALID.replace("    methods:", "    calibration: {corpus: ./domain.txt, config: en}\n    methods:")
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, text))
    assert str(refused.value) == (f"{tmp_path / 'config.yaml'}: studies.0.calibration: Value error, config is an option of "
                                  "Hugging Face datasets; corpus './domain.txt' is a local folder or text file")  # fmt: skip


def _models(*models: dict) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "t",
        "studies": [{"model": model, "methods": [{"name": "dense"}], "eval": {"suites": ["jargon_ppl"]}} for model in models],
    })  # fmt: skip


@pytest.mark.parametrize(
    "models, expected",
    [
        # two checkpoints whose directories share a name
        ([{"source": "/models/base/llama-7b"}, {"source": "/models/chat/llama-7b"}], ["base/llama-7b", "chat/llama-7b"]),
        # one checkpoint in two dtypes
        ([{"source": "/models/llama-7b"}, {"source": "/models/llama-7b", "dtype": "bfloat16"}],
         ["llama-7b (dtype=float32)", "llama-7b (dtype=bfloat16)"]),
        # both at once, and a name of the user's kept in front
        ([{"source": "/m/a/x", "name": "mine"}, {"source": "/m/b/x", "name": "mine", "dtype": "bfloat16"}],
         ["mine (a/x, dtype=float32)", "mine (b/x, dtype=bfloat16)"]),
        # the same model twice (two calibration corpora, say) is one model: one label, one dense baseline
        ([{"source": "packaged:smollm2-135m"}, {"source": "packaged:smollm2-135m"}], ["smollm2-135m", "smollm2-135m"]),
        ([{"source": "/m/x"}, {"source": "/m/x/", "device": "cpu"}], ["x", "x"]),
        ([{"source": "packaged:smollm2-135m"}, {"source": "/ckpt/smollm2-135m"}], ["packaged:smollm2-135m", "ckpt/smollm2-135m"]),
    ],
)  # fmt: skip
def test_studies_of_different_models_never_share_a_label(models, expected):
    assert [study.model.label for study in _models(*models).studies] == expected


def test_a_model_name_is_a_label_and_no_parameter():
    config = _models({"source": "/models/llama-7b", "name": "llama (base)"})
    model = config.studies[0].model
    assert model.label == "llama (base)"
    assert "name" not in model.model_dump() and spec_hash(model) == spec_hash(ModelSpec(source="/models/llama-7b"))


def test_studies_that_cannot_be_told_apart_are_refused(tmp_path):
    text = """
name: t
studies:
  - {model: {source: /m/a/x, name: b/y}, methods: [{name: dense}], eval: {suites: [jargon_ppl]}}
  - {model: {source: /m/b/y}, methods: [{name: dense}], eval: {suites: [jargon_ppl]}}
  - {model: {source: /m/c/y}, methods: [{name: dense}], eval: {suites: [jargon_ppl]}}
"""
    with pytest.raises(ConfigError, match=r"studies 1 and 2 are different models \(/m/a/x, /m/b/y\) that cannot be told apart: "
                                          r"both would be recorded as 'b/y'; give one a `name`"):  # fmt: skip
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "change, expected",
    [
        ("lr: .inf", "finetune.lr: Input should be a finite number"),
        ("lr: .nan", "finetune.lr: Input should be a finite number"),
    ],
)
def test_a_number_that_is_not_finite_is_refused(tmp_path, change, expected):
    text = VALID.replace("        sparsity: 0.5", f"        sparsity: 0.5\n        finetune: {{{change}}}")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("name: t", "name: résultats", "name: String should match pattern"),
        ("name: t", "name: t/../x", "name: String should match pattern"),
        ("{source: packaged:smollm2-135m}", "{source: packaged:smollm2-135m, device: gpu}", "model.device: String should match pattern"),
        ("{source: packaged:smollm2-135m}", "{source: packaged:smollm2-135m}\n    calibration: {seed: 9223372036854775808}",
         "calibration.seed: Input should be less than 9223372036854775808"),
        ("{source: packaged:smollm2-135m}", "{source: packaged:smollm2-135m}\n    calibration: {seed: -1}",
         "calibration.seed: Input should be greater than or equal to 0"),
    ],
)  # fmt: skip
def test_values_that_would_fail_after_the_compute_are_refused_at_the_door(tmp_path, old, new, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(tmp_path, VALID.replace(old, new)))


def test_output_folders_that_are_files_are_refused(tmp_path):
    (tmp_path / "work").write_text("")
    text = VALID + f"output: {{workdir: {tmp_path / 'work'}}}\n"
    with pytest.raises(ConfigError, match=f"workdir {re.escape(str(tmp_path / 'work'))} is a file, not a folder"):
        load_config(write(tmp_path, text))
    (tmp_path / "db").mkdir()
    with pytest.raises(ConfigError, match="database .* is a folder; name a file in it"):
        load_config(write(tmp_path, VALID + f"output: {{database: {tmp_path / 'db'}}}\n"))


def test_keep_checkpoints_defaults_to_the_evaluated_one_and_names_its_choices(tmp_path):
    assert load_config(write(tmp_path, VALID)).output.keep_checkpoints == "last"
    assert load_config(write(tmp_path, VALID + "output: {keep_checkpoints: none}\n")).output.keep_checkpoints == "none"
    with pytest.raises(ConfigError, match=r"output\.keep_checkpoints: Input should be 'all', 'last' or 'none' \(got 'some'\)"):
        load_config(write(tmp_path, VALID + "output: {keep_checkpoints: some}\n"))


def test_user_task_options_leave_hashes_alone_and_log_samples_out_of_what_is_evaluated(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_mc.yaml").write_text("task: my_mc\n")
    config = load_config(write(tmp_path, VALID.replace(
        "eval: {suites: [jargon_ppl]}",
        f"eval: {{suites: [jargon_ppl, my_mc], include_path: {tmp_path / 'tasks'}, num_fewshot: 2, apply_chat_template: true, log_samples: true}}",
    )))  # fmt: skip
    evaluation = config.studies[0].eval
    assert evaluation.include_path == [tmp_path / "tasks"]  # one directory, or a list of them
    assert (evaluation.num_fewshot, evaluation.apply_chat_template, evaluation.log_samples) == (2, True, True)
    assert evaluation.evaluated().log_samples is False and evaluation.evaluated().num_fewshot == 2
    assert set(EvalSpec(suites=["jargon_ppl"]).model_dump()) == {"suites", "batch_size", "limit", "max_length"}


@pytest.mark.parametrize(
    ("include_path", "expected"),
    [
        ("missing", r"studies\.0\.eval\.include_path: Value error, .*missing' is not a directory \(of lm-eval task YAMLs\)"),
        ("empty", r"studies\.0\.eval\.include_path: Value error, .*empty' holds no task YAML"),
    ],
)
def test_an_include_path_without_task_yamls_is_refused(tmp_path, include_path, expected):
    (tmp_path / "empty").mkdir()
    text = VALID.replace("eval: {suites: [jargon_ppl]}", f"eval: {{suites: [jargon_ppl], include_path: [{tmp_path / include_path}]}}")
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"studies\.0\.eval\.num_fewshot: Input should be greater than or equal to 0"):
        load_config(write(tmp_path, VALID.replace("eval: {suites: [jargon_ppl]}", "eval: {suites: [jargon_ppl], num_fewshot: -1}")))
