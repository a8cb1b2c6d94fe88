"""Optional simulation of V4's low-precision numerics (off by default).

The release computes with quantized activations where its kernels do: every FP8/FP4 GEMM first
casts its input to FP8 e4m3 in blocks of 128 channels with power-of-two (ue8m0) scales; the
window and compressed KV keep their non-RoPE channels FP8-rounded in blocks of 64; the
lightning indexer Hadamard-rotates its queries and keys and rounds them to FP4 e2m1 in blocks
of 32. :meth:`Transformer.simulate_quantization` turns these on, so that logits can be held
closer to V4's own inference code on a release checkpoint. Each rounding works per token (or
per compressed entry) along the channels, so prefill, chunks and decode still agree.
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0
FP4_MAX = 6.0
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    return torch.exp2(torch.ceil(torch.log2(x)))


def fp8_round(x: torch.Tensor, block: int) -> torch.Tensor:
    """x with its last dim rounded to e4m3 in blocks of ``block``, power-of-two scales."""
    blocks = x.unflatten(-1, (-1, block))
    scale = _pow2_ceil(blocks.abs().amax(-1, keepdim=True).clamp_min(1e-4) / FP8_MAX)
    q = (blocks / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype)
    return (q * scale).flatten(-2)


def fp4_round(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """x with its last dim rounded to the nearest e2m1 value in blocks of ``block``."""
    blocks = x.unflatten(-1, (-1, block))
    scale = _pow2_ceil(blocks.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126) / FP4_MAX)
    v = (blocks / scale).clamp(-FP4_MAX, FP4_MAX)
    grid = E2M1_GRID.to(x.dtype)
    nearest = grid[(v.abs().unsqueeze(-1) - grid).abs().argmin(-1)]
    return (torch.copysign(nearest, v) * scale).flatten(-2)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard transform of the last dim (a power of two)."""
    n = x.size(-1)
    if n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1, dtype=x.dtype)
    while h.size(0) < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return (x @ h) * n**-0.5


def fp8_inputs_hook(
    _module: torch.nn.Module, args: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor]:
    """Forward pre-hook of a linear V4 runs in FP8/FP4: round its input to FP8 (blocks of 128
    channels; one block per row when a small model's width is not a multiple of 128)."""
    (x,) = args
    return (fp8_round(x, 128 if x.size(-1) % 128 == 0 else x.size(-1)),)


def runs_in_low_precision(module_name: str) -> bool:
    """Whether the release stores this linear in FP8 (or FP4, the routed experts)."""
    return module_name.endswith(
        ("attn.wq_a", "attn.wq_b", "attn.wkv", "attn.wo_b", "indexer.wq_b",
         ".e_proj", ".h_proj")  # the MTP block's input projections: FP8 in the release
    ) or ".experts." in module_name or ".shared_experts." in module_name
