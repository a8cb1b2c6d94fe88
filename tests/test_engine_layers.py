"""RMSNorm and V4's interleaved RoPE, plain and YaRN-stretched."""

from __future__ import annotations

import torch

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.layers import RMSNorm, apply_rope, rope_freqs, rope_table


def test_rmsnorm_gives_unit_rms_times_weight() -> None:
    norm = RMSNorm(8)
    x = torch.randn(3, 8) * 5
    y = norm(x)
    torch.testing.assert_close(y.square().mean(-1), torch.ones(3), atol=1e-4, rtol=0)


def test_rope_rotates_interleaved_pairs_of_the_tail_only() -> None:
    cfg = ModelConfig.preset("micro")  # rope_head_dim 16 of head_dim 64
    freqs = rope_freqs(cfg, compressed=False)
    x = torch.randn(5, 64)
    cos, sin = rope_table(freqs, torch.arange(5))
    y = apply_rope(x, cos, sin)
    assert torch.equal(y[:, :48], x[:, :48])
    pair = torch.view_as_complex(x[:, 48:].reshape(5, 8, 2))
    turned = pair * torch.polar(torch.ones(5, 8), torch.outer(torch.arange(5.0), freqs))
    torch.testing.assert_close(y[:, 48:], torch.view_as_real(turned).flatten(1))
    torch.testing.assert_close(apply_rope(y, cos, sin, inverse=True), x, atol=1e-5, rtol=0)


def test_rotated_dot_products_depend_on_distance_only() -> None:
    freqs = rope_freqs(ModelConfig.preset("micro"), compressed=True)
    q, k = torch.randn(16), torch.randn(16)

    def dot(pq: int, pk: int) -> float:
        cq, sq = rope_table(freqs, torch.tensor([pq]))
        ck, sk = rope_table(freqs, torch.tensor([pk]))
        return float(apply_rope(q[None], cq, sq) @ apply_rope(k[None], ck, sk).T)

    assert abs(dot(10, 3) - dot(1007, 1000)) < 1e-3


def test_yarn_stretches_slow_dims_on_compressed_layers_only() -> None:
    cfg = ModelConfig.preset("flash")
    plain = rope_freqs(cfg, compressed=False)
    stretched = rope_freqs(cfg, compressed=True)
    base = 1.0 / (cfg.compress_rope_theta ** (torch.arange(0, 64, 2) / 64))
    torch.testing.assert_close(plain, 1.0 / (cfg.rope_theta ** (torch.arange(0, 64, 2) / 64)))
    torch.testing.assert_close(stretched[:4], base[:4])  # fast dims kept
    torch.testing.assert_close(stretched[-4:], base[-4:] / cfg.rope_factor)  # slow dims / 16
    no_yarn = rope_freqs(cfg.replace(original_seq_len=0), compressed=True)
    torch.testing.assert_close(no_yarn, base)
