"""The reference schedule: prefill's last logits, then one per single-token step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.fidelity import FidelityError, reference_logits
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.weights import CheckpointError, save_checkpoint

TOKENS = [0, 5, 7, 9, 11, 13, 2, 4, 8, 16]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Transformer, Path]:
    cfg = ModelConfig.preset("micro").replace(window_size=16, compress_ratios=(0, 4, 8))
    model = Transformer(cfg, seed=31)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("ckpt"))


def test_reference_logits_follow_the_prefill_then_decode_schedule(
    checkpoint: tuple[Transformer, Path],
) -> None:
    model, folder = checkpoint
    logits = reference_logits(folder, TOKENS, prefill_len=4)
    assert len(logits) == len(TOKENS) - 4 + 1
    full = model.forward(torch.tensor(TOKENS), model.new_state())  # row i: after token i
    for step, row in enumerate(logits):
        assert row.shape == (model.cfg.vocab_size,)
        torch.testing.assert_close(row, full[3 + step], atol=1e-4, rtol=0)


def test_bad_arguments_raise_whalebone_errors(
    checkpoint: tuple[Transformer, Path], tmp_path: Path
) -> None:
    _, folder = checkpoint
    for bad in (0, len(TOKENS) + 1):
        with pytest.raises(FidelityError):
            reference_logits(folder, TOKENS, prefill_len=bad)
    with pytest.raises(CheckpointError, match="config"):
        reference_logits(tmp_path, TOKENS, prefill_len=2)


def test_command_line_writes_the_logits_file(
    checkpoint: tuple[Transformer, Path], tmp_path: Path
) -> None:
    model, folder = checkpoint
    out = tmp_path / "logits.safetensors"
    tokens = ",".join(map(str, TOKENS))
    cmd = [sys.executable, "-m", "whalebone.engine.v4.fidelity", str(folder),
           "--tokens", tokens, "--prefill", "6", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    saved = load_file(out)
    assert saved["logits"].shape == (len(TOKENS) - 6 + 1, model.cfg.vocab_size)
    assert saved["token_ids"].tolist() == TOKENS
    expected = reference_logits(folder, TOKENS, prefill_len=6)
    torch.testing.assert_close(saved["logits"], torch.stack(expected))

    bad = subprocess.run([*cmd[:5], "1,x", *cmd[6:]], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "comma-separated integers" in bad.stderr
