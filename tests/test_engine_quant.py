"""Simulated V4 numerics: FP8/FP4 rounding, the Hadamard rotation, and the model switch."""

from __future__ import annotations

import pytest
import torch

from whalebone.engine.v4.config import ModelConfig, ModelConfigError
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.quant import E2M1_GRID, fp4_round, fp8_round, hadamard


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_fp8_round_is_e4m3_with_power_of_two_block_scales() -> None:
    x = _x(4, 256) * 3
    y = fp8_round(x, 128)
    assert ((y - x).abs() <= x.abs() * 2**-4 + 1e-6).all()  # e4m3 keeps 3 mantissa bits
    assert torch.equal(fp8_round(y, 128), y)  # already on the grid: idempotent
    exact = torch.tensor([[1.0, -0.5, 448.0, 0.25] * 32])
    assert torch.equal(fp8_round(exact, 128), exact)


def test_fp4_round_lands_on_the_e2m1_grid_times_a_power_of_two() -> None:
    x = _x(3, 64)
    y = fp4_round(x)
    scale = 2.0 ** torch.ceil(torch.log2(x.view(3, 2, 32).abs().amax(-1, keepdim=True) / 6))
    codes = (y.view(3, 2, 32) / scale).abs()
    assert bool(torch.isin(codes, E2M1_GRID).all())
    assert bool(((y - x).abs() <= scale.repeat_interleave(32, 1).view(3, 64)).all())


def test_hadamard_is_orthonormal() -> None:
    a, b = _x(2, 64)
    torch.testing.assert_close(hadamard(a) @ hadamard(b), a @ b, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(hadamard(hadamard(a)), a, atol=1e-5, rtol=0)


def test_simulated_numerics_nudge_logits_keep_chunking_exact_and_switch_off() -> None:
    cfg = ModelConfig.preset("micro").replace(window_size=16, compress_ratios=(0, 4, 8))
    model = Transformer(cfg, seed=51)
    ids = torch.randint(0, cfg.vocab_size, (40,), generator=torch.Generator().manual_seed(1))
    exact = model.forward(ids, model.new_state())
    plain_key = model.fingerprint()
    model.simulate_quantization(True)
    assert model.fingerprint() != plain_key  # states of other numerics never mix in a cache
    simulated = model.forward(ids, model.new_state())
    state, parts = model.new_state(), []
    for a, b in [(0, 5), (5, 6), (6, 33), (33, 40)]:
        parts.append(model.forward(ids[a:b], state))
    torch.testing.assert_close(torch.cat(parts), simulated, atol=1e-4, rtol=0)
    error = (simulated - exact).norm() / exact.norm()
    assert 0 < error < 0.2
    model.simulate_quantization(False)
    assert model.fingerprint() == plain_key
    torch.testing.assert_close(model.forward(ids, model.new_state()), exact, atol=0, rtol=0)


def test_simulation_needs_a_power_of_two_indexer_width() -> None:
    model = Transformer(ModelConfig.preset("micro").replace(index_head_dim=48))
    with pytest.raises(ModelConfigError, match="power of two"):
        model.simulate_quantization(True)
