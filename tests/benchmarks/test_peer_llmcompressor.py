"""benchmarks/peer_llmcompressor.py: its arguments and measures on hand-made weights, our side of a run on a
tiny model, and (where `make peer` built .peer-venv) the peer's driver on the same tiny model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pruning.calibration import save_calibration
from pruning.models.sources import save_checkpoint
from tests.pruning.conftest import build_tiny

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
PEER_PYTHON = REPO / ".peer-venv" / "bin" / "python"


@pytest.fixture
def peer(benchmark_script):
    return benchmark_script("peer_llmcompressor")


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    """A tiny random-init Llama checkpoint (4 layers) and 8 x 16 calibration token ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    # llm-compressor wants a processor beside a calibration set: a one-word tokenizer does
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>")
    checkpoint = save_checkpoint(build_tiny("llama"), tokenizer, tmp_path / "tiny")
    ids = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(2))
    return checkpoint, save_calibration(ids, tmp_path / "calibration.safetensors")


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--threads", "0"], ["--n-samples", "0"]])
def test_nonsense_arguments_are_refused(peer, argv, capsys):
    with pytest.raises(SystemExit):
        peer.parse_args(argv)
    assert "must be" in capsys.readouterr().err


def test_agreement_and_sparsity_on_hand_made_weights(peer):
    ours = {"model.layers.0.mlp.up_proj.weight": torch.tensor([[0.0, 1.0], [2.0, 0.0]]),
            "model.layers.0.self_attn.q_proj.weight": torch.tensor([[0.0, 0.0, 3.0, 4.0]])}  # fmt: skip
    theirs = {"model.layers.0.mlp.up_proj.weight": torch.tensor([[0.0, 5.0], [0.0, 1.0]]),
              "model.layers.0.self_attn.q_proj.weight": torch.tensor([[0.0, 0.0, 3.0, 0.0]])}  # fmt: skip
    overall, by_kind = peer.agreement(ours, theirs)
    assert overall == 5 / 8 and by_kind == {"up_proj": 0.5, "q_proj": 0.75}
    assert peer.zero_share(ours) == 4 / 8 and peer.zero_share(theirs) == 5 / 8


def test_our_options_carry_the_shared_settings_and_the_extra_ones(peer):
    args = peer.parse_args(["--block-size", "64", "--damp", "0.1", "--option", 'mask_rule="x"', "--option", "k=2"])
    assert peer.our_options(args, "sparsegpt") == {"blocksize": 64, "damp": 0.1, "mask_rule": "x", "k": 2}
    assert peer.our_options(peer.parse_args([]), "wanda") == {}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_our_side_prunes_every_decoder_linear_to_the_target(peer, tiny, tmp_path, method, capsys):
    checkpoint, calibration = tiny
    out = tmp_path / "pruned.safetensors"
    peer.main(["--batch-size", "4", "--threads", "1", "--worker", str(checkpoint), str(calibration), method, str(out)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["seconds"] > 0 and result["threads"] == 1
    weights = load_file(str(out))
    assert len(weights) == 4 * 7 and not any("lm_head" in name for name in weights)
    assert peer.zero_share(weights) == 0.5


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no .peer-venv here: `make peer` builds llm-compressor's venv")
def test_the_peer_driver_prunes_the_same_linears_and_wanda_masks_agree(peer, tiny, tmp_path, capsys):
    checkpoint, calibration = tiny
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    peer.main(["--batch-size", "4", "--threads", "1", "--worker", str(checkpoint), str(calibration), "wanda", str(ours)])
    done = subprocess.run(
        [str(PEER_PYTHON), str(BENCHMARKS / "peer_driver.py"), f"--checkpoint={checkpoint}", f"--calibration={calibration}",
         "--method=wanda", f"--out={theirs}", "--batch-size=4", "--threads=1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1])["linears"] == 4 * 7
    ours_w, theirs_w = load_file(str(ours)), load_file(str(theirs))
    assert set(ours_w) == set(theirs_w)
    assert peer.zero_share(theirs_w) == 0.5
    assert peer.agreement(ours_w, theirs_w)[0] > 0.999
