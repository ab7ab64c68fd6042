"""The backend rehearsal: both harnesses run our suites on a tiny model, and a broken package is named in one line."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from evals.rehearsal import BackendError, rehearse
from evals.suites import SUITES

IMAGE_SUITES = ["imageqa_mc", "imageqa_short"]


def test_both_backends_run_every_local_suite_the_way_a_run_does(cache_dir, capsys):
    """lm-eval on the three text suites built from the corpus, lmms-eval with our model class on the image-QA ones."""
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())
    done = rehearse(sorted(SUITES), IMAGE_SUITES, cache_dir)
    assert done == [f"lm-eval ({', '.join(sorted(SUITES))})", f"lmms-eval ({', '.join(IMAGE_SUITES)})"]
    # the harnesses seed the global generators: the run that follows finds them as they were
    assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.random.get_rng_state(), states[2])
    assert capsys.readouterr().out == ""  # what the harnesses print (lm-eval's "bootstrapping ...") stays out of the run's output


def test_only_the_backends_asked_for_are_rehearsed(tmp_path):
    assert rehearse([], [], tmp_path) == []
    assert rehearse([], ["some_lmms_task"], tmp_path) == ["lmms-eval (import only)"]  # not ours: imported, not run


@pytest.fixture
def filelock_without_api(monkeypatch):
    """The environment of 2026-12-06: a filelock without `filelock._api`, which lmms-eval imports in simple_evaluate."""
    from lmms_eval import evaluator

    monkeypatch.setitem(sys.modules, "filelock._api", None)  # `import filelock._api` raises ModuleNotFoundError
    monkeypatch.setattr(evaluator._enable_reentrant_filelocks, "_patched", False, raising=False)  # patched once per process


def test_a_filelock_without_its_api_stops_the_image_rehearsal(filelock_without_api, tmp_path):
    with pytest.raises(BackendError) as caught:
        rehearse([], ["imageqa_mc"], tmp_path)
    assert caught.value.backend == "lmms-eval"
    assert isinstance(caught.value.error, ModuleNotFoundError) and caught.value.error.name == "filelock._api"
