"""V4's mixture of experts: sqrt-softplus routing, hash-routed first layers, clamped SwiGLU.

- Scores are ``sqrt(softplus(x·Wᵀ))`` in FP32 (``score_func`` may also name V3's softmax or
  sigmoid). A learned per-expert ``bias`` shifts the scores *for choosing* the top-k experts
  only; the chosen experts are weighted by their unbiased scores.
- The first ``n_hash_layers`` layers choose no experts at all: a fixed table
  ``tid2eid[token_id]`` names them.
- Weights are renormalised to sum to 1 (not for softmax), then multiplied by ``route_scale``.
- A hash table row may name the same expert in two slots (V4's own tables do). V4's reference
  adds the routed outputs with an indexed ``y[idx] += …``, which writes a repeated row once, so
  such a token gets that expert once, at one slot's weight (the slots' weights are equal: both
  are gathered from the same score). We compute exactly that: a repeated slot is dropped.
- Experts are SwiGLU with clamps (up-projection to ±swiglu_limit, gate ≤ swiglu_limit);
  one shared expert sees every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.layers import Linear, by_rows, exact_rows, linear


class Gate(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.hashed = layer < cfg.n_hash_layers
        self.weight = nn.Parameter(torch.zeros(cfg.n_routed_experts, cfg.dim))
        if self.hashed:
            table = torch.zeros(cfg.vocab_size, cfg.n_activated_experts, dtype=torch.int32)
            self.register_buffer("tid2eid", table)
            self.bias = None
        else:
            self.bias = nn.Parameter(torch.zeros(cfg.n_routed_experts))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (T, dim), ids (T,) -> routing weights (T, k) and expert indices (T, k)."""
        logits = linear(x.float(), self.weight.float())  # (T, E)
        scores = by_rows(self._score, logits)
        if self.hashed:
            indices = self.tid2eid[ids].long()
        else:
            assert self.bias is not None
            indices = (scores + self.bias).topk(self.cfg.n_activated_experts, dim=-1).indices
        weights = scores.gather(1, indices)  # the bias chose; it does not weigh
        if self.cfg.score_func != "softmax":
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.cfg.route_scale, indices

    def _score(self, logits: torch.Tensor) -> torch.Tensor:
        func = self.cfg.score_func
        if func == "softmax":
            return logits.softmax(dim=-1)
        if func == "sigmoid":
            return logits.sigmoid()
        return F.softplus(logits).sqrt()


class Expert(nn.Module):
    def __init__(self, dim: int, inter_dim: int, limit: float) -> None:
        super().__init__()
        self.w1 = Linear(dim, inter_dim)  # gate
        self.w2 = Linear(inter_dim, dim)  # down
        self.w3 = Linear(dim, inter_dim)  # up
        self.limit = limit

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if exact_rows(x.size(0)):  # SiLU's bits depend on the tensor's size
            w = [None] * x.size(0) if weights is None else weights.split(1)
            return torch.cat([self(row, wr) for row, wr in zip(x.split(1), w, strict=True)])
        gate, up = self.w1(x), self.w3(x)
        if self.limit > 0:
            up = up.clamp(-self.limit, self.limit)
            gate = gate.clamp(max=self.limit)
        h = F.silu(gate) * up
        if weights is not None:
            h = h * weights
        return self.w2(h)


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.gate = Gate(cfg, layer)
        self.experts = nn.ModuleList(
            Expert(cfg.dim, cfg.moe_inter_dim, cfg.swiglu_limit)
            for _ in range(cfg.n_routed_experts)
        )
        self.shared_experts = (
            Expert(cfg.dim, cfg.moe_inter_dim, cfg.swiglu_limit) if cfg.n_shared_experts else None
        )

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x (T, dim), ids (T,) token ids (for hash routing) -> (T, dim)."""
        weights, indices = self.gate(x, ids)  # (T, k), (T, k)
        routed = _first_slots(indices) if self.gate.hashed else indices  # top-k never repeats
        y = torch.zeros_like(x)
        counts = torch.bincount(indices.flatten(), minlength=len(self.experts)).tolist()
        for e, n in enumerate(counts):
            if n == 0:
                continue
            rows, slot = torch.where(routed == e)
            y.index_add_(0, rows, self.experts[e](x[rows], weights[rows, slot, None]))
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y


def _first_slots(indices: torch.Tensor) -> torch.Tensor:
    """indices (T, k) with every slot that repeats an earlier slot's expert set to -1."""
    same = indices[:, :, None] == indices[:, None, :]  # (T, k, k): slot i names slot j's expert
    return indices.masked_fill(same.tril(-1).any(-1), -1)
