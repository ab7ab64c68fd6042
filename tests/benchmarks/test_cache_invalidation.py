"""benchmarks/cache_invalidation.py on its tiny config: which stages each change recomputes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(?P<scenario>.+?)\s+(?P<computed>\d+)\s+(?P<cached>\d+)\s{3}(?P<stages>.+)$")


def computed_stages(text: str) -> Counter:
    """`calibration, evaluate×3` -> Counter({'evaluate': 3, 'calibration': 1}); `-` -> nothing."""
    if text == "-":
        return Counter()
    return Counter({name: int(n or 1) for name, n in (re.fullmatch(r"(\w+)(?:×(\d+))?", part).groups() for part in text.split(", "))})


@pytest.mark.e2e
def test_each_change_recomputes_exactly_the_stages_whose_code_or_inputs_it_changed(tmp_path, smollm2_checkpoint, cache_dir):
    # its own process: the script points Prefect's home into its scratch folder before Prefect imports
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cache_invalidation.py"), "--scratch", str(tmp_path), "--cache-dir", str(cache_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {m["scenario"]: (int(m["computed"]), int(m["cached"]), computed_stages(m["stages"]))
            for m in map(ROW.match, result.stdout.splitlines()[1:]) if m}  # fmt: skip
    every = Counter(suites=1, calibration=1, prune=1, evaluate=2)  # dense and wanda
    assert rows["first run"] == (5, 0, every)
    assert rows["unchanged"] == (0, 5, Counter())
    assert rows["edit reports/leaderboard.py"] == (0, 5, Counter())
    # tasks/calibration.py is in the closure of the calibration and prune stages (tasks/prune.py imports
    # it); the evaluation of the new pruned checkpoint follows by its input; the suites and dense's
    # evaluation import none of it
    assert rows["edit tasks/calibration.py"] == (3, 2, Counter(calibration=1, prune=1, evaluate=1))
    (upgraded,) = [scenario for scenario in rows if scenario.startswith("lm-eval ")]
    assert rows[upgraded] == (2, 3, Counter(evaluate=2))  # only the evaluation stage imports lm-eval
