"""`prunebench report` and `prunebench compare` through flows.cli.main, on synthetic databases."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle, synthetic_bundles


@pytest.fixture(scope="module")
def database(module_tmp):
    path = module_tmp("cli") / "results.duckdb"
    store = ResultStore(path)
    for bundle in synthetic_bundles():
        store.record(bundle)
    return path


def test_report_html_writes_one_self_contained_file(database, tmp_path, capsys):
    out = tmp_path / "site" / "index.html"
    assert main(["report", "--db", str(database), "--format", "html", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="retention-vs-drop-ratio"' in page and "http" not in page


def test_report_html_defaults_to_beside_the_database(database, capsys):
    assert main(["report", "--database", str(database), "--format", "html", "--model", "toy-vlm"]) == 0
    page = (database.parent / "report.html").read_text(encoding="utf-8")
    assert "toy-vlm" in page and "smollm2-135m" not in page


def test_report_markdown_has_every_table(database, capsys):
    assert main(["report", "--db", str(database), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "## Leaderboard" in out and "## Retention vs drop ratio" in out and "## Speed and memory" in out


def test_report_text_and_json_still_print_the_leaderboard(database, capsys):
    assert main(["report", "--db", str(database)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("smollm2-135m\n") and "mean retention" in text and "|" not in text
    assert main(["report", "--db", str(database), "--format", "json", "--model", "toy-vlm"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["model"] for row in rows} == {"toy-vlm"} and len(rows) == 4


def test_report_without_a_database_exits_2(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "none.duckdb"), "--format", "html"]) == 2
    assert "no results database" in capsys.readouterr().err


def history(tmp_path, later_quality: float):
    path = tmp_path / "results.duckdb"
    store = ResultStore(path)
    for run_id, hours, quality in (("run-a", 0, 0.8), ("run-b", 1, later_quality)):
        store.record(synthetic_bundle(run_id, "wanda", "wanda 50%", sparsity=0.5, quality=quality, hours=hours))
    return path


def test_compare_exits_1_on_a_regression_and_lists_it(tmp_path, capsys):
    database = history(tmp_path, later_quality=0.6)
    assert main(["compare", "--db", str(database)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and out.count("| worse") == 2 and "run-a → run-b" in out


def test_compare_exits_0_within_noise_or_when_better(tmp_path, capsys):
    database = history(tmp_path, later_quality=0.795)  # ppl 12.50 -> 12.58 (0.6%), acc within its stderr
    assert main(["compare", "--db", str(database)]) == 0
    assert "No regression" in capsys.readouterr().out
    assert main(["compare", "--db", str(database), "--tolerance", "0.001"]) == 1  # a tighter margin sees it
    assert main(["compare", "run-b", "run-a", "--db", str(database), "--tolerance", "0.001"]) == 0  # reversed: better
    assert "better" in capsys.readouterr().out


def test_compare_exits_2_when_there_is_nothing_to_compare(tmp_path, capsys):
    database = tmp_path / "results.duckdb"
    ResultStore(database).record(synthetic_bundle("only", "dense", "dense"))
    assert main(["compare", "--db", str(database)]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert main(["compare", "no-such-run", "--db", str(database)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert main(["compare", "--db", str(tmp_path / "none.duckdb")]) == 2


def test_compare_refuses_a_negative_tolerance(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--tolerance", "-1"])
    assert exit_.value.code == 2 and "must be >= 0" in capsys.readouterr().err


def test_compare_refuses_an_alpha_outside_0_1(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--alpha", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err
