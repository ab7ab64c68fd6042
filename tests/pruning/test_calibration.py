import pytest
import torch

from pruning.calibration import calibration_ids, load_calibration, save_calibration
from pruning.errors import ConfigError


class CharTokenizer:
    """One token per character (its code point): enough to know every window's right answer."""

    def __call__(self, text: str, **kwargs) -> dict:
        return {"input_ids": [ord(char) for char in text]}


TEXTS = ["abcdefghij" * 5, "0123456789" * 5]  # joined: 50 + 2 + 50 = 102 tokens


def test_shape_and_windows_are_slices_of_the_joined_text():
    ids = calibration_ids(TEXTS, CharTokenizer(), n_samples=7, seq_len=12, seed=0)
    assert ids.shape == (7, 12) and ids.dtype == torch.long
    joined = "\n\n".join(TEXTS)
    for row in ids.tolist():
        assert "".join(map(chr, row)) in joined


def test_same_seed_same_windows_other_seed_other_windows():
    first = calibration_ids(TEXTS, CharTokenizer(), 8, 16, seed=3)
    assert torch.equal(first, calibration_ids(TEXTS, CharTokenizer(), 8, 16, seed=3))
    assert not torch.equal(first, calibration_ids(TEXTS, CharTokenizer(), 8, 16, seed=4))


def test_window_as_long_as_the_text_allows():
    ids = calibration_ids(["abcdef"], CharTokenizer(), n_samples=3, seq_len=5, seed=0)
    assert "".join(map(chr, ids[0].tolist())) == "abcde"  # 6 tokens: the only start is 0


def test_too_short_text_names_the_sizes():
    with pytest.raises(ConfigError, match=r"calibration.seq_len=6: the calibration text has 6 tokens; windows of 6 need at least 7"):
        calibration_ids(["abcdef"], CharTokenizer(), n_samples=1, seq_len=6, seed=0)


def test_save_load_round_trip_leaves_no_temporary_file(tmp_path):
    ids = calibration_ids(TEXTS, CharTokenizer(), 4, 10, seed=0)
    path = save_calibration(ids, tmp_path / "calibration" / "set.safetensors")
    assert torch.equal(load_calibration(path), ids)
    assert [p.name for p in path.parent.iterdir()] == ["set.safetensors"]
