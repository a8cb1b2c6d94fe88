"""Manifold-constrained hyper-connections (mHC): the residual is ``hc_mult`` streams.

Around each sub-layer f, ``(2 + hc) * hc`` mixing numbers come from the RMS-normalised
concatenation of the streams (one linear map ``fn``, a per-group ``scale`` and a ``base``):

- ``pre`` (hc): sigmoid + eps, mixes the streams into f's input;
- ``post`` (hc): 2·sigmoid, scales f's output into each stream;
- ``comb`` (hc×hc): softmax over rows, then Sinkhorn row/column normalisation, remixes the old
  streams: ``new_j = post_j · f(x) + Σ_k comb[k, j] · old_k``.

The head mixes the streams with ``pre``-style sigmoid weights only.
"""

from __future__ import annotations

import numpy as np
import torch

from whalebone.engine.v4 import layers


def _mixes(h: torch.Tensor, fn: torch.Tensor, eps: float) -> torch.Tensor:
    """h (T, hc, dim), fn (m, hc*dim) -> (T, m): the linear map of the RMS-normalised streams."""
    flat = h.flatten(1)  # (T, hc*dim)
    # mean of squares from the 2-norm: one pass, no (T, hc*dim) temporary
    ms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True).square() / flat.size(-1)
    return layers.linear(flat, fn) * torch.rsqrt(ms + eps)


def sinkhorn_split(
    mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, hc: int, iters: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixes (T, (2+hc)*hc) -> pre (T, hc), post (T, hc), comb (T, hc, hc)."""
    if layers.FAST_DECODE and mixes.size(0) <= layers.EXACT_ROWS and not mixes.requires_grad:
        if mixes.size(0) == 1:
            return _split_one(mixes, scale, base, hc, iters, eps)
        # a few tokens: each as a decode step splits it (exact rows, see layers.EXACT_ROWS)
        pre, post, comb = zip(*(_split_one(row, scale, base, hc, iters, eps)
                                for row in mixes.split(1)), strict=True)
        return torch.cat(pre), torch.cat(post), torch.cat(comb)
    pre = torch.sigmoid(mixes[:, :hc] * scale[0] + base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[:, hc : 2 * hc] * scale[1] + base[hc : 2 * hc])
    comb = mixes[:, 2 * hc :].unflatten(-1, (hc, hc)) * scale[2] + base[2 * hc :].view(hc, hc)
    # eps as a tensor: a Python scalar is re-wrapped on every one of the 40 tiny ops below,
    # which dominates a one-token decode step
    e = torch.full((), eps)
    comb = comb.softmax(dim=-1) + e
    comb = comb / (comb.sum(dim=-2, keepdim=True) + e)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + e)
        comb = comb / (comb.sum(dim=-2, keepdim=True) + e)
    return pre, post, comb


def _split_one(
    mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, hc: int, iters: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sinkhorn_split` of one token (a decode step) in NumPy float32: the same math on
    hc*hc numbers, where torch's per-op dispatch (~40 ops per call, 8 calls per token on the
    nano) cost more than the arithmetic. Agrees with the torch path to float32 rounding."""
    m = mixes.numpy()[0]
    sc, b = scale.numpy(), base.numpy()
    e = np.float32(eps)
    pre = 1 / (1 + np.exp(-(m[:hc] * sc[0] + b[:hc]))) + e
    post = 2 / (1 + np.exp(-(m[hc : 2 * hc] * sc[1] + b[hc : 2 * hc])))
    comb = (m[2 * hc :] * sc[2] + b[2 * hc :]).reshape(hc, hc)
    comb = np.exp(comb - comb.max(-1, keepdims=True))
    add = np.add.reduce  # ndarray.sum goes through a Python wrapper: a third of the time
    comb /= add(comb, -1, keepdims=True)
    comb += e
    comb /= add(comb, 0) + e
    for _ in range(iters - 1):
        comb /= add(comb, -1, keepdims=True) + e
        comb /= add(comb, 0) + e
    return (torch.from_numpy(pre)[None], torch.from_numpy(post)[None],
            torch.from_numpy(comb)[None])


def hc_pre(
    h: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor,
    iters: int, norm_eps: float, hc_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Streams h (T, hc, dim) -> sub-layer input (T, dim), post (T, hc), comb (T, hc, hc)."""
    pre, post, comb = sinkhorn_split(_mixes(h, fn, norm_eps), scale, base, h.size(1), iters, hc_eps)
    return (pre.unsqueeze(-1) * h).sum(dim=1), post, comb


def hc_post(
    out: torch.Tensor, h: torch.Tensor, post: torch.Tensor, comb: torch.Tensor
) -> torch.Tensor:
    """Sub-layer output (T, dim) and old streams (T, hc, dim) -> new streams (T, hc, dim)."""
    # one fused pass: post ⊗ out + combᵀ @ h
    return torch.baddbmm(post.unsqueeze(-1) * out.unsqueeze(1), comb.transpose(1, 2), h)


def hc_head(
    h: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor,
    norm_eps: float, hc_eps: float,
) -> torch.Tensor:
    """Streams (T, hc, dim) -> one hidden state (T, dim) for the LM head."""
    pre = torch.sigmoid(_mixes(h, fn, norm_eps) * scale + base) + hc_eps
    return (pre.unsqueeze(-1) * h).sum(dim=1)
