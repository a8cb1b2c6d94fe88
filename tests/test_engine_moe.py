"""MoE routing: sqrt-softplus scores, bias that only selects, hash layers, clamped SwiGLU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.moe import Expert, MoE
from whalebone.engine.v4.weights import load_checkpoint, save_checkpoint


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


def _every_slot(moe: MoE, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The shared expert plus each slot's expert at that slot's weight, token by token."""
    weights, experts = moe.gate(x, ids)
    assert moe.shared_experts is not None
    expected = moe.shared_experts(x).clone()
    for t in range(len(ids)):
        for w, e in zip(weights[t], experts[t], strict=True):
            expected[t] += moe.experts[int(e)](x[t : t + 1], w)[0]
    return expected


def test_moe_output_is_routed_experts_plus_the_shared_one(layers: tuple[MoE, MoE]) -> None:
    _, moe = layers
    x, ids = _x(), torch.zeros(12, dtype=torch.int64)
    torch.testing.assert_close(moe(x, ids), _every_slot(moe, x, ids), atol=1e-5, rtol=1e-5)


# A hash table row may name one expert in two slots (V4's released tables do). The reference's
# ``y[idx] += expert(x[idx], weights[idx, top, None])`` then writes that token's row once.
REPEATS = {3: [1, 1, 2], 7: [0, 0, 0], 9: [2, 3, 2]}  # token id -> its tid2eid row


def _reference_moe(moe: MoE, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """V4's reference ``MoE.forward`` (inference/model.py), transcribed line for line."""
    weights, indices = moe.gate(x, ids)
    y = torch.zeros_like(x, dtype=torch.float32)
    counts = torch.bincount(indices.flatten(), minlength=len(moe.experts)).tolist()
    for i in range(len(moe.experts)):
        if counts[i] == 0:
            continue
        idx, top = torch.where(indices == i)
        y[idx] += moe.experts[i](x[idx], weights[idx, top, None])
    assert moe.shared_experts is not None
    return y + moe.shared_experts(x)


@pytest.fixture(scope="module")
def repeating(tmp_path_factory: pytest.TempPathFactory) -> MoE:
    """Layer 0 (hash-routed, 3 of 4 experts) of a tiny checkpoint whose table repeats experts."""
    cfg = ModelConfig.preset("micro").replace(n_activated_experts=3)
    model = Transformer(cfg, seed=43)
    with torch.no_grad():
        for token, row in REPEATS.items():
            model.layers[0].ffn.gate.tid2eid[token] = torch.tensor(row, dtype=torch.int32)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("repeating"))
    return load_checkpoint(folder).layers[0].ffn


def test_a_repeated_hash_expert_is_applied_once_as_in_the_reference(repeating: MoE) -> None:
    ids = torch.tensor([3, 5, 7, 9, 11, 3])
    x = _x(6)
    with torch.no_grad():
        out = repeating(x, ids)
        weights, experts = repeating.gate(x, ids)
        assert repeating.shared_experts is not None
        for t, token in enumerate(ids.tolist()):
            row = experts[t].tolist()
            if token in REPEATS:
                assert row == REPEATS[token]
            expected = repeating.shared_experts(x[t : t + 1])[0].clone()
            for e in dict.fromkeys(row):  # each distinct expert once, at its first slot's weight
                w = weights[t, row.index(e)]
                expected += repeating.experts[e](x[t : t + 1], w)[0]
            torch.testing.assert_close(out[t], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, _reference_moe(repeating, x, ids), atol=1e-5, rtol=1e-5)


def test_distinct_hash_rows_still_add_every_slot(repeating: MoE) -> None:
    ids = torch.tensor([5, 11, 100, 200])
    assert not any(int(t) in REPEATS for t in ids)
    x = _x(4)
    with torch.no_grad():
        _, experts = repeating.gate(x, ids)
        assert all(len(set(row)) == 3 for row in experts.tolist())
        torch.testing.assert_close(repeating(x, ids), _every_slot(repeating, x, ids),
                                   atol=1e-5, rtol=1e-5)
