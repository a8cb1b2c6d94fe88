"""MoE routing: sqrt-softplus scores, bias that only selects, hash layers, clamped SwiGLU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from whalebone.engine.config import ModelConfig
from whalebone.engine.model import Transformer
from whalebone.engine.moe import Expert, MoE


@pytest.fixture(scope="module")
def layers() -> tuple[MoE, MoE]:
    model = Transformer(ModelConfig.preset("micro"), seed=41)  # layer 0 hashed, 1-2 scored
    return model.layers[0].ffn, model.layers[1].ffn


def _x(n: int = 12, dim: int = 64) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(n))


def test_hash_layer_takes_experts_from_tid2eid(layers: tuple[MoE, MoE]) -> None:
    hashed, _ = layers
    ids = torch.tensor([3, 3, 7, 500])
    weights, experts = hashed.gate(_x(4), ids)
    assert torch.equal(experts, hashed.gate.tid2eid[ids].long())
    with torch.no_grad():
        table = hashed.gate.tid2eid.clone()
        hashed.gate.tid2eid[7] = torch.tensor([2, 0], dtype=torch.int32)
        _, changed = hashed.gate(_x(4), ids)
        hashed.gate.tid2eid.copy_(table)
    assert changed[2].tolist() == [2, 0]
    torch.testing.assert_close(weights.sum(-1), torch.full((4,), hashed.gate.cfg.route_scale))


def test_scores_are_sqrt_softplus_renormalised_times_route_scale(
    layers: tuple[MoE, MoE],
) -> None:
    _, scored = layers
    x = _x()
    weights, experts = scored.gate(x, torch.zeros(12, dtype=torch.int64))
    scores = F.softplus(x @ scored.gate.weight.T).sqrt()
    chosen = scores.gather(1, experts)
    expected = chosen / chosen.sum(-1, keepdim=True) * scored.gate.cfg.route_scale
    torch.testing.assert_close(weights, expected)


def test_bias_only_selects(layers: tuple[MoE, MoE]) -> None:
    _, scored = layers
    gate, x, ids = scored.gate, _x(), torch.zeros(12, dtype=torch.int64)
    assert gate.bias is not None
    weights, experts = gate(x, ids)
    with torch.no_grad():
        bias = gate.bias.clone()
        gate.bias.add_(100.0)  # the same shift for every expert: nothing changes
        shifted = gate(x, ids)
        gate.bias.copy_(bias)
        gate.bias[3] += 100.0  # expert 3 is now always chosen, at its unbiased score
        forced_w, forced_e = gate(x, ids)
        gate.bias.copy_(bias)
    assert torch.equal(shifted[1], experts)
    torch.testing.assert_close(shifted[0], weights)
    assert bool((forced_e == 3).any(-1).all())
    scores = F.softplus(x @ gate.weight.T).sqrt()
    chosen = scores.gather(1, forced_e)
    torch.testing.assert_close(forced_w, chosen / chosen.sum(-1, keepdim=True) * 1.5)


def test_swiglu_clamps_up_and_gate() -> None:
    expert = Expert(4, 3, limit=10.0)
    with torch.no_grad():
        expert.w1.weight.copy_(torch.tensor([[50.0, 0, 0, 0], [-50.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        expert.w3.weight.copy_(torch.tensor([[50.0, 0, 0, 0], [-50.0, 0, 0, 0], [2.0, 0, 0, 0]]))
        expert.w2.weight.copy_(torch.eye(4, 3))
    x = torch.tensor([[1.0, 0, 0, 0]])
    hidden = expert(x)[0, :3]
    expected = torch.stack([F.silu(torch.tensor(10.0)) * 10, F.silu(torch.tensor(-50.0)) * -10,
                            F.silu(torch.tensor(1.0)) * 2])
    torch.testing.assert_close(hidden, expected)


def test_moe_output_is_routed_experts_plus_the_shared_one(layers: tuple[MoE, MoE]) -> None:
    _, moe = layers
    x, ids = _x(), torch.zeros(12, dtype=torch.int64)
    weights, experts = moe.gate(x, ids)
    assert moe.shared_experts is not None
    expected = moe.shared_experts(x).clone()
    for t in range(12):
        for w, e in zip(weights[t], experts[t], strict=True):
            expected[t] += moe.experts[int(e)](x[t : t + 1], w)[0]
    torch.testing.assert_close(moe(x, ids), expected, atol=1e-5, rtol=1e-5)
