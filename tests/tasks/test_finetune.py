"""The finetune stage's corpus: the train split of a built-in one, checked at the door."""

from __future__ import annotations

import pytest

from pruning.errors import ConfigError
from tasks.finetune import check_finetune_corpus


def test_a_finetune_on_the_users_own_calibration_data_is_refused_at_the_door():
    for corpus in ("jargon", "docstrings", "imageqa"):
        check_finetune_corpus(corpus)
    with pytest.raises(ConfigError, match=r"^finetune trains on the train split of a built-in corpus \(docstrings, imageqa, jargon\); "
                                          r"calibration.corpus './domain.txt' is your own data, which has none$"):
        check_finetune_corpus("./domain.txt")
