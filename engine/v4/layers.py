"""Small building blocks shared by attention and the MoE: RMSNorm and V4's rotary embedding.

V4 rotates *interleaved* pairs (dims 2i, 2i+1) of the last ``rope_head_dim`` channels. Window-only
layers use plain RoPE (``rope_theta``); compressed layers use ``compress_rope_theta`` with YaRN
frequency interpolation and no attention-scale correction. Angles are ``float32(pos) * freq`` in
float32, as the reference's precomputed table has them, so positions give the same rotation
whether they arrive in a prefill, a chunk or a single decode step.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from whalebone.engine.v4.config import ModelConfig

# The decode path's fast paths (the one-token Sinkhorn split in NumPy, window-ring slices
# instead of gathers): bench/engine_bench.py switches them off to time the old path beside
# them in one run. Results agree to float32 rounding (the ring's are identical).
FAST_DECODE = True

# A forward of 2 … EXACT_ROWS tokens gives every token the float bits a one-token forward
# would (speculative decoding verifies 2 tokens in one pass and must choose exactly what plain
# decoding chooses). Shape decides the bits of some kernels: MKL sums a GEMM row differently
# for M=1 and M=2, and torch's elementwise exp/sin/softplus take a vector or a scalar path by
# the tensor's size. So such a forward runs those ops one row at a time (:func:`by_rows`), each
# with the shapes of a decode step; everything else is per element or per row already.
EXACT_ROWS = 2
_batched = threading.local()  # .on inside rows_as_batch(), for this thread


def exact_rows(t: int) -> bool:
    """Whether a forward of ``t`` tokens computes each row as a one-token forward does."""
    return 1 < t <= EXACT_ROWS and not getattr(_batched, "on", False)


@contextmanager
def rows_as_batch() -> Iterator[None]:
    """Forwards inside compute a few tokens as one batch again (faster, not row-exact): for
    work whose bits decide nothing, like a speculative draft."""
    _batched.on = True
    try:
        yield
    finally:
        _batched.on = False


def by_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for x (T, …), row by row when :func:`exact_rows` (T)."""
    if exact_rows(x.size(0)):
        return torch.cat([fn(row) for row in x.split(1)])
    return fn(x)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for x (T, in), exact rows (see :data:`EXACT_ROWS`)."""
    if x.dim() == 2 and exact_rows(x.size(0)):
        return torch.cat([F.linear(row, weight) for row in x.split(1)])
    return F.linear(x, weight)


class Linear(nn.Linear):
    """``nn.Linear`` without bias whose 2-D inputs go through :func:`linear` (module hooks,
    parameter names and checkpoints are nn.Linear's)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps))


def rope_freqs(cfg: ModelConfig, compressed: bool) -> torch.Tensor:
    """Inverse frequencies (rope_head_dim // 2,) for a layer; YaRN-stretched when compressed."""
    dim = cfg.rope_head_dim
    base = cfg.compress_rope_theta if compressed else cfg.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim))
    if compressed and cfg.original_seq_len > 0:
        # YaRN: interpolate the slow (long-wavelength) dims by rope_factor, keep the fast ones,
        # with a linear ramp between the beta_fast and beta_slow correction dims.
        def correction_dim(rotations: float) -> float:
            return dim * math.log(cfg.original_seq_len / (rotations * 2 * math.pi)) / (
                2 * math.log(base)
            )

        low = max(math.floor(correction_dim(cfg.beta_fast)), 0)
        high = min(math.ceil(correction_dim(cfg.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = torch.arange(dim // 2, dtype=torch.float32, device="cpu")
        ramp = ((ramp - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / cfg.rope_factor * (1 - smooth) + freqs * smooth
    return freqs


def rope_table(freqs: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, rope_head_dim // 2) for integer ``positions`` (T,)."""
    angles = torch.outer(positions.to(torch.float32), freqs)
    return by_rows(torch.cos, angles), by_rows(torch.sin, angles)


def apply_rope_(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False
) -> torch.Tensor:
    """Rotate, in place, the last ``2 * cos.size(-1)`` channels of x (T, [H,] C) in interleaved
    pairs, and return x (in place: copying whole 16K-token q tensors costs more than the math).

    ``cos``/``sin`` must broadcast against x's leading dims: (T, R) for x (T, C),
    (T, 1, R) for x (T, H, C). ``inverse`` un-rotates (V4 does this to the attention output).
    """
    rd = 2 * cos.size(-1)
    if inverse:
        sin = -sin
    rot = x[..., -rd:]
    x1, x2 = rot[..., 0::2], rot[..., 1::2]
    rot.copy_(torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2))
    return x


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False
) -> torch.Tensor:
    """:func:`apply_rope_` on a copy."""
    return apply_rope_(x.clone(), cos, sin, inverse)
