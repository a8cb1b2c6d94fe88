"""Hyper-connections: Sinkhorn-normalised stream mixing around each sub-layer."""

from __future__ import annotations

import pytest
import torch

from whalebone.engine.v4.hyper import hc_head, hc_post, hc_pre, sinkhorn_split


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sinkhorn_comb_is_doubly_stochastic_and_pre_post_in_range() -> None:
    mixes = torch.randn(5, 24, generator=_g(0))
    pre, post, comb = sinkhorn_split(mixes, torch.ones(3), torch.zeros(24), 4, 20, 1e-6)
    # 20 rounds end on a column step: columns exact, rows close (as in V4's kernel)
    torch.testing.assert_close(comb.sum(-1), torch.ones(5, 4), atol=1e-2, rtol=0)
    torch.testing.assert_close(comb.sum(-2), torch.ones(5, 4), atol=1e-5, rtol=0)
    assert bool((pre > 0).all() and (pre < 1 + 1e-5).all())
    assert bool((post > 0).all() and (post < 2).all())


def test_hc_post_mixes_old_streams_through_comb_columns() -> None:
    out = torch.randn(2, 3, generator=_g(1))
    old = torch.randn(2, 4, 3, generator=_g(2))
    post = torch.rand(2, 4, generator=_g(3))
    comb = torch.rand(2, 4, 4, generator=_g(4))
    new = hc_post(out, old, post, comb)
    for t in range(2):
        for j in range(4):
            expected = post[t, j] * out[t] + sum(comb[t, k, j] * old[t, k] for k in range(4))
            torch.testing.assert_close(new[t, j], expected)


def test_hc_pre_and_head_weigh_streams_by_sigmoid_of_normalised_mixes() -> None:
    h = torch.randn(3, 4, 8, generator=_g(5))
    fn = torch.randn(24, 32, generator=_g(6)) * 0.1
    x, _, _ = hc_pre(h, fn, torch.ones(3), torch.zeros(24), 20, 1e-6, 1e-6)
    flat = h.flatten(1)
    mixes = flat @ fn.T / flat.square().mean(-1, keepdim=True).add(1e-6).sqrt()
    pre = torch.sigmoid(mixes[:, :4]) + 1e-6
    torch.testing.assert_close(x, (pre[..., None] * h).sum(1))
    # scaling every stream leaves the mixing weights alone (they see normalised streams)
    x2, _, _ = hc_pre(2 * h, fn, torch.ones(3), torch.zeros(24), 20, 1e-6, 1e-6)
    torch.testing.assert_close(x2, 2 * x, atol=1e-5, rtol=1e-5)
    head = hc_head(h, fn[:4], torch.ones(1), torch.zeros(4), 1e-6, 1e-6)
    torch.testing.assert_close(head, x)


def test_the_one_token_fast_path_agrees_with_the_torch_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from whalebone.engine.v4 import layers
    g = torch.Generator().manual_seed(1)
    hc = 4
    mixes = torch.randn(1, (2 + hc) * hc, generator=g) * 3
    scale, base = torch.rand(3, generator=g) + 0.5, torch.randn((2 + hc) * hc, generator=g)
    fast = sinkhorn_split(mixes, scale, base, hc, 20, 1e-6)
    monkeypatch.setattr(layers, "FAST_DECODE", False)
    slow = sinkhorn_split(mixes, scale, base, hc, 20, 1e-6)
    for a, b in zip(fast, slow, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
