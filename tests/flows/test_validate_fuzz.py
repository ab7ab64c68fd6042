"""`prunebench validate` on whatever a user might hand it: random bytes, random YAML, and random values in
every field of a valid config. It must exit 0, or exit non-zero with one line on stderr and no traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import cli
from pruning.specs import MethodSpec

pytestmark = pytest.mark.filterwarnings("ignore")

SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

VALID = {
    "name": "fuzz",
    "studies": [{
        "model": {"source": "packaged:smollm2-135m", "dtype": "float32", "device": "cpu"},
        "calibration": {"corpus": "jargon", "n_samples": 4, "seq_len": 32, "seed": 0, "batch_size": 4},
        "methods": [{"name": "dense"}, {"name": "wanda", "sparsity": 0.5}],
        "eval": {"suites": ["jargon_ppl"], "batch_size": 8, "limit": 2},
    }],
    "output": {"database": "results/fuzz.duckdb", "workdir": ".prunebench-fuzz"},
}  # fmt: skip

# Every method and its fields: a random value may land in any of them.
METHODS = {spec.model_fields["name"].annotation.__args__[0]: [name for name in spec.model_fields if name != "name"]
           for spec in typing.get_args(typing.get_args(MethodSpec)[0])}  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "0.5", "2:4", "cuda:7", "packaged:nope", "/no/such/path", "../..", "é", "\x00", "sum", "layer"]),
)  # fmt: skip
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=6)  # fmt: skip


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch):
    """`validate` checks models, devices, suites and the calibration text's length (`preflight`): relative
    output paths land in tmp_path, and the corpus is a fixed text, not one built into a random cache."""
    from tasks import calibration

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(calibration, "calibration_documents", lambda *args, **kwargs: ["a calibration text " * 50])


def validate(text: str | bytes, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            status = cli.main(["validate", str(path)])
        except SystemExit as exit_:  # argparse's own errors
            status = exit_.code
    return status, stderr.getvalue()


def assert_one_line_or_success(status: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    if status == 0:
        return
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith("prunebench: error: "), stderr
    assert "an unexpected failure" not in stderr, stderr  # every problem a user can cause is named


@SETTINGS
@given(blob=st.binary(max_size=400))
def test_random_bytes(tmp_path, blob):
    assert_one_line_or_success(*validate(blob, tmp_path))


@SETTINGS
@given(document=values)
def test_random_yaml(tmp_path, document):
    assert_one_line_or_success(*validate(yaml.safe_dump(document, allow_unicode=True), tmp_path))


def _paths() -> list[tuple]:
    """Every field of the valid config, and every field of every method (in place of the wanda entry)."""
    paths = [("name",), ("description",), ("studies",), ("output", "database"), ("output", "workdir"), ("output", "cache")]
    for section, fields in VALID["studies"][0].items():
        paths.append(("studies", 0, section))
        if isinstance(fields, dict):
            paths += [("studies", 0, section, field) for field in fields] + [("studies", 0, section, "unknown_field")]
    paths += [("studies", 0, "model", "trust_remote_code"), ("studies", 0, "model", "name"), ("studies", 0, "model", "adapter"),
              ("studies", 0, "calibration", "seeds"), ("studies", 0, "eval", "primary_metrics"),
              ("studies", 0, "eval", "max_length"), ("studies", 0, "eval", "include_path"), ("studies", 0, "eval", "num_fewshot"),
              ("studies", 0, "eval", "apply_chat_template"), ("studies", 0, "eval", "log_samples")]  # fmt: skip
    for method, fields in METHODS.items():
        paths += [("method", method, field) for field in fields]
    return paths


@SETTINGS
@given(path=st.sampled_from(_paths()), value=values)
def test_random_values_in_every_field(tmp_path, path, value):
    import copy

    config = copy.deepcopy(VALID)
    if path[0] == "method":  # a method of that name with one field set to the value
        config["studies"][0]["methods"][1] = {"name": path[1], path[2]: value}
    else:
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    assert_one_line_or_success(*validate(yaml.safe_dump(config, allow_unicode=True), tmp_path))
