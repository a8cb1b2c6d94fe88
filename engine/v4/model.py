"""The DeepSeek V4 transformer in PyTorch, readable in one sitting.

    from whalebone.engine.v4.config import ModelConfig
    from whalebone.engine.v4.model import Transformer

    model = Transformer(ModelConfig.preset("nano"))  # random weights, seeded, FP32, CPU
    state = model.new_state()
    logits = model.forward(torch.tensor(prompt_ids), state, last_only=True)  # prefill: (1, V)
    logits = model.forward(torch.tensor([next_id]), state)                   # decode: (1, V)

``forward`` takes any number of new tokens and appends them at ``state.pos``: a prefill from 0,
a chunk continuing a restored prefix, or one token; the results agree (tests hold them to
1e-4 in FP32). One token's trip: embed -> copy into ``hc_mult`` streams -> per layer
[hc_pre -> RMSNorm -> attention -> hc_post, hc_pre -> RMSNorm -> MoE -> hc_post] -> hc_head ->
RMSNorm -> LM head. Modules and parameters carry V4's inference names (``layers.3.attn.wq_a``,
``layers.0.ffn.gate.tid2eid``, ``hc_head_fn``, ``mtp.0.e_proj``, …) so that checkpoints map one
to one.

Multi-token prediction (``cfg.n_mtp_layers`` > 0): :class:`MTPBlock` takes the trunk's final
streams at position i (which predict token i+1) and the id of token i+1, and predicts token i+2
(what speculative decoding drafts with)::

    logits, h = model.forward(ids, state, hidden=True)             # h: (T, hc, dim)
    mtp_state = model.new_mtp_state()
    draft = model.mtp_forward(h, next_ids, mtp_state, last_only=True)  # token after next
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch
from torch import nn

from whalebone.core.errors import WhaleboneError
from whalebone.engine.v4.attention import Attention
from whalebone.engine.v4.config import ModelConfig, ModelConfigError
from whalebone.engine.v4.hyper import hc_head, hc_post, hc_pre
from whalebone.engine.v4.layers import RMSNorm, by_rows
from whalebone.engine.v4.moe import MoE
from whalebone.engine.v4.quant import fp8_inputs_hook, runs_in_low_precision
from whalebone.engine.v4.state import LayerState, SeqState, StateError


class ModelInputError(WhaleboneError, ValueError):
    """Token ids the model cannot take (empty, not 1-D integers, outside the vocabulary)."""


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn = Attention(cfg, layer)
        self.ffn = MoE(cfg, layer)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        mix, width = cfg.mix_hc, cfg.hc_mult * cfg.dim
        self.hc_attn_fn = nn.Parameter(torch.zeros(mix, width))
        self.hc_ffn_fn = nn.Parameter(torch.zeros(mix, width))
        self.hc_attn_base = nn.Parameter(torch.zeros(mix))
        self.hc_ffn_base = nn.Parameter(torch.zeros(mix))
        self.hc_attn_scale = nn.Parameter(torch.ones(3))
        self.hc_ffn_scale = nn.Parameter(torch.ones(3))

    def forward(self, h: torch.Tensor, st: LayerState, pos: int, ids: torch.Tensor) -> torch.Tensor:
        """Streams h (T, hc, dim) of positions pos … pos+T-1 -> new streams (T, hc, dim)."""
        c = self.cfg
        x, post, comb = hc_pre(h, self.hc_attn_fn, self.hc_attn_scale, self.hc_attn_base,
                               c.hc_sinkhorn_iters, c.norm_eps, c.hc_eps)
        h = hc_post(self.attn(self.attn_norm(x), st, pos), h, post, comb)
        x, post, comb = hc_pre(h, self.hc_ffn_fn, self.hc_ffn_scale, self.hc_ffn_base,
                               c.hc_sinkhorn_iters, c.norm_eps, c.hc_eps)
        return hc_post(self.ffn(self.ffn_norm(x), ids), h, post, comb)


class MTPBlock(Block):
    """V4's multi-token prediction block: one more window-only :class:`Block` (layer id
    ``n_layers + k``) whose input mixes the trunk's streams with the next token's embedding,
    and whose output goes through its own ``hc_head``/``norm`` into the trunk's LM head. It
    shares ``embed`` and ``head`` with the trunk; they are passed in, not held, so that the
    state dict names each weight once (``mtp.0.e_proj.weight``, ``mtp.0.attn.wq_a.weight``, …:
    the release layout)."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__(cfg, layer)
        self.e_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.h_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hc_head_fn = nn.Parameter(torch.zeros(cfg.hc_mult, cfg.hc_mult * cfg.dim))
        self.hc_head_base = nn.Parameter(torch.zeros(cfg.hc_mult))
        self.hc_head_scale = nn.Parameter(torch.ones(1))

    def mix_input(self, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Embeddings e (…, dim) of the next tokens and trunk streams h (…, hc, dim) -> the
        block's input streams (…, hc, dim): every stream gets the same projected token."""
        return self.e_proj(self.enorm(e)).unsqueeze(-2) + self.h_proj(self.hnorm(h))

    def logits(self, h: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        """Output streams (…, hc, dim) -> logits (…, vocab) through the shared ``head``."""
        c = self.cfg
        x = hc_head(h, self.hc_head_fn, self.hc_head_scale, self.hc_head_base, c.norm_eps,
                    c.hc_eps)
        return head(self.norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, *, seed: int = 0, init: bool = True) -> None:
        """A V4 model of shape ``cfg``. ``init`` fills random weights from ``seed`` (the same
        seed gives the same weights everywhere); loaders pass ``init=False``."""
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.hc_head_fn = nn.Parameter(torch.zeros(cfg.hc_mult, cfg.hc_mult * cfg.dim))
        self.hc_head_base = nn.Parameter(torch.zeros(cfg.hc_mult))
        self.hc_head_scale = nn.Parameter(torch.ones(1))
        # registered last: a trunk's random weights do not depend on whether it has MTP
        self.mtp = nn.ModuleList(MTPBlock(cfg, cfg.n_layers + k) for k in range(cfg.n_mtp_layers))
        self._fingerprint: str | None = None
        self._quant_hooks: list[Any] = []
        if init:
            self.init_random(seed)
        self.eval()
        self.requires_grad_(False)

    # -- the forward pass ----------------------------------------------------------------

    def new_state(self) -> SeqState:
        return SeqState.new(self.cfg)

    @property
    def has_mtp(self) -> bool:
        return len(self.mtp) > 0

    def new_mtp_state(self) -> SeqState:
        """A state for :meth:`mtp_forward` (one window ring per MTP block)."""
        return SeqState.new_mtp(self.cfg)

    @overload
    def forward(self, ids: torch.Tensor | Sequence[int], state: SeqState,
                last_only: bool = ..., *, hidden: Literal[False] = ...) -> torch.Tensor: ...

    @overload
    def forward(self, ids: torch.Tensor | Sequence[int], state: SeqState,
                last_only: bool = ..., *, hidden: Literal[True]
                ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(
        self, ids: torch.Tensor | Sequence[int], state: SeqState, last_only: bool = False,
        *, hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Append tokens ``ids`` (T,) at ``state.pos``; logits (T, vocab), or (1, vocab) for
        the last position only. Advances ``state``; on bad input raises before touching it.
        ``hidden``: also return the trunk's final streams (T or 1, hc, dim) of the same
        positions, before ``hc_head`` (what :meth:`mtp_forward` takes)."""
        h = self.streams(ids, state)
        if last_only:
            h = h[-1:]
        with torch.inference_mode():
            logits = self.logits(h)  # (T, vocab)
        return (logits, h) if hidden else logits

    def streams(self, ids: torch.Tensor | Sequence[int], state: SeqState) -> torch.Tensor:
        """The trunk alone: append tokens ``ids`` (T,) at ``state.pos`` and return the final
        streams (T, hc, dim), before ``hc_head`` (what :meth:`logits` and :meth:`mtp_forward`
        take). Advances ``state``; on bad input raises before touching it."""
        ids = self._check_ids(ids)
        if state.cfg != self.cfg:
            raise StateError("state belongs to a model with a different config")
        pos, t = state.pos, ids.size(0)
        with torch.inference_mode():
            h = self.embed(ids).unsqueeze(1).repeat(1, self.cfg.hc_mult, 1)  # (T, hc, dim)
            for layer, st in zip(self.layers, state.layers, strict=True):
                h = layer(h, st, pos, ids)
        state.pos = pos + t
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head on final streams h (T, hc, dim) -> (T, vocab): hc_head, RMSNorm, head;
        a few rows each computed as a one-token forward computes it (:func:`layers.by_rows`,
        so a verify pass decides exactly as plain decoding). Autograd follows it when on."""

        def tail(x: torch.Tensor) -> torch.Tensor:
            x = hc_head(x, self.hc_head_fn, self.hc_head_scale, self.hc_head_base,
                        self.cfg.norm_eps, self.cfg.hc_eps)
            return self.head(self.norm(x))

        return by_rows(tail, h)

    def mtp_forward(self, h: torch.Tensor, next_ids: torch.Tensor | Sequence[int],
                    mtp_state: SeqState, last_only: bool = False) -> torch.Tensor:
        """Draft the token after next: ``h`` (T, hc, dim) the trunk's streams of positions
        ``mtp_state.pos`` … +T-1 (from ``forward(..., hidden=True)``), ``next_ids`` (T,) the id
        of the token after each of them -> logits (T, vocab), or (1, vocab) for the last,
        predicting the token two after each position. Runs MTP block 0 (the one V4 ships;
        a deeper block would need ids further ahead). Advances ``mtp_state.pos`` by T; like
        :meth:`forward`, chunked calls agree with token-by-token ones."""
        if not self.has_mtp:
            raise ModelInputError("this model has no MTP block (config n_mtp_layers is 0)")
        next_ids = self._check_ids(next_ids)
        c, t = self.cfg, next_ids.size(0)
        if h.dim() != 3 or tuple(h.shape) != (t, c.hc_mult, c.dim):
            raise ModelInputError(f"MTP input streams must have shape {(t, c.hc_mult, c.dim)} "
                                  f"(one per next id), got {tuple(h.shape)}")
        if mtp_state.cfg != c or len(mtp_state.layers) != c.n_mtp_layers:
            raise StateError("MTP state belongs to another model (use new_mtp_state())")
        block, pos = self.mtp[0], mtp_state.pos
        with torch.inference_mode():
            x = block.mix_input(self.embed(next_ids), h)
            x = block(x, mtp_state.layers[0], pos, next_ids)
            if last_only:
                x = x[-1:]
            logits = block.logits(x, self.head)
        mtp_state.pos = pos + t
        return logits

    def _check_ids(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            try:
                ids = torch.tensor(list(ids), dtype=torch.int64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ModelInputError(f"token ids must be integers: {exc}") from None
        if ids.dim() != 1 or ids.numel() == 0:
            raise ModelInputError(
                f"token ids must be a non-empty 1-D tensor, got shape {tuple(ids.shape)}"
            )
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ModelInputError(f"token ids must be integers, got {ids.dtype}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise ModelInputError(
                f"token id {bad} is outside the vocabulary [0, {self.cfg.vocab_size})"
            )
        return ids.to(torch.int64)

    def simulate_quantization(self, enabled: bool = True) -> None:
        """Round activations the way V4's kernels do (see :mod:`whalebone.engine.v4.quant`):
        FP8 inputs to the FP8/FP4 linears, FP8 KV, FP4 Hadamard-rotated indexer. Off by
        default; the weights are not touched."""
        di = self.cfg.index_head_dim
        if enabled and di & (di - 1):
            raise ModelConfigError(
                f"simulated quantization rotates indexer vectors: index_head_dim {di} must be "
                "a power of two"
            )
        for handle in self._quant_hooks:
            handle.remove()
        self._quant_hooks = []
        for name, module in self.named_modules():
            if hasattr(module, "quant_sim"):
                module.quant_sim = enabled
            if enabled and isinstance(module, nn.Linear) and runs_in_low_precision(name):
                self._quant_hooks.append(module.register_forward_pre_hook(fp8_inputs_hook))

    # -- weights -------------------------------------------------------------------------

    @torch.no_grad()
    def init_random(self, seed: int = 0, *, prefix: str = "") -> None:
        """Random weights that keep activations O(1) through the layers (for tests/benches);
        only the tensors whose names start with ``prefix`` (``"mtp."``: a fresh MTP block on a
        trained trunk)."""
        g = torch.Generator().manual_seed(seed)

        def normal(p: torch.Tensor, std: float, mean: float = 0.0) -> None:
            p.copy_(torch.randn(p.shape, generator=g) * std + mean)

        def fill(name: str, p: torch.Tensor) -> None:
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("norm.weight"):
                normal(p, 0.1, 1.0)
            elif name == "embed.weight":
                normal(p, 1.0)
            elif leaf in ("attn_sink", "ape") or name.endswith("gate.bias"):
                normal(p, 0.5)
            elif leaf.endswith("_scale"):
                normal(p, 0.1, 1.0)
            elif leaf.endswith("_base"):
                normal(p, 0.5)
            else:  # linear maps and hc_*_fn: unit-variance outputs
                normal(p, p.shape[-1] ** -0.5)

        params = [(n, p) for n, p in self.named_parameters() if n.startswith(prefix)]
        # the trunk's draws first, then the MTP blocks': a trunk is the same with or without
        for name, p in params:
            if not name.startswith("mtp."):
                fill(name, p)
        for name, buf in self.named_buffers():
            if name.startswith(prefix) and name.endswith("tid2eid"):
                e, k = self.cfg.n_routed_experts, self.cfg.n_activated_experts
                table = torch.rand(buf.size(0), e, generator=g).argsort(dim=-1)[:, :k]
                buf.copy_(table.to(torch.int32))
        for name, p in params:
            if name.startswith("mtp."):
                fill(name, p)
        self._fingerprint = None

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._fingerprint = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def fingerprint(self) -> str:
        """A stable hex hash of the config, every weight and whether quantization is simulated
        (the prefix cache's model key: states from different numerics must not mix).
        Hashing the weights happens once; ``load_state_dict`` resets it."""
        if self._quant_hooks:
            return hashlib.sha256(f"{self._weights_hash()}+quant-sim".encode()).hexdigest()
        return self._weights_hash()

    def _weights_hash(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.cfg.to_json(), sort_keys=True, default=str).encode())
            for name, t in sorted(self.state_dict().items()):
                t = t.detach().contiguous()
                digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
                digest.update(t.view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint
