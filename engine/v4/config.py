"""The shape of a DeepSeek V4 model, named exactly as V4's inference ``config.json``.

``ModelConfig`` is plain data (no torch), so the runtime, the CLI and the prefix cache can read a
checkpoint's config without loading the model. Field names are the keys of V4's inference config
(``ModelArgs`` in the reference ``inference/model.py``); a release config.json loads with
:meth:`ModelConfig.from_json` and writes back with :meth:`ModelConfig.to_json`. Keys we do not use
(``max_batch_size``, ``moe_ep_size``, …) are kept in ``extra`` so that a round trip loses nothing.

Presets:

- ``flash`` / ``pro``: the release shapes (for big machines; nothing here instantiates them in
  tests).
- ``nano``: four layers covering compress ratios 0, 4 and 128, a hash-routed first layer, MoE
  with a shared expert; a few MB of weights, a 32K-token prefill on a 2-core CPU in seconds.
- ``micro``: smaller still, for unit tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from whalebone.core.errors import WhaleboneError

SCORE_FUNCS = ("softmax", "sigmoid", "sqrtsoftplus")


class ModelConfigError(WhaleboneError, ValueError):
    """A model config that cannot describe a V4 model (wrong type, inconsistent shapes)."""


@dataclass(frozen=True)
class ModelConfig:
    # vocabulary and trunk
    vocab_size: int = 129280
    dim: int = 4096
    n_layers: int = 43
    n_mtp_layers: int = 1  # multi-token prediction blocks after the trunk (window-only)
    norm_eps: float = 1e-6
    # attention: one shared 512-d KV per token, low-rank query, grouped low-rank output
    n_heads: int = 64
    q_lora_rank: int = 1024
    head_dim: int = 512
    rope_head_dim: int = 64
    o_groups: int = 8
    o_lora_rank: int = 1024
    window_size: int = 128
    # one ratio per layer (0: window only; 4: overlapping + indexer; else: plain pooling);
    # the release lists one more for the MTP block (0; a list without it means 0 too)
    compress_ratios: tuple[int, ...] = (0, 0, *([4, 128] * 20), 4, 0)
    # lightning indexer (ratio-4 layers)
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    # MoE
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    moe_inter_dim: int = 2048
    n_hash_layers: int = 3
    score_func: str = "sqrtsoftplus"
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    # RoPE: plain on window-only layers, YaRN on compressed layers
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_seq_len: int = 65536
    beta_fast: int = 32
    beta_slow: int = 1
    # hyper-connections
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    # how the release stores weights (informative: loading dequantizes whatever it finds)
    dtype: str = "fp8"
    scale_fmt: str | None = "ue8m0"
    expert_dtype: str | None = "fp4"
    scale_dtype: str = "fp8"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compress_ratios", tuple(self.compress_ratios))
        self.validate()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """One of ``flash``, ``pro`` (release shapes), ``nano``, ``micro`` (small, random)."""
        try:
            return _PRESETS[name]()
        except KeyError:
            raise ModelConfigError(
                f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}"
            ) from None

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> ModelConfig:
        """From V4's inference config (a dict, or its JSON text). Unknown keys go to ``extra``."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ModelConfigError(f"config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelConfigError(f"config must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(data.get("extra") or {})
        for key, value in data.items():
            if key == "extra":
                continue
            if key in known:
                kwargs[key] = _coerce(key, value, _FIELD_TYPES[key])
            else:
                extra[key] = value
        return cls(**kwargs, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """V4 inference-config keys (plus any unknown keys read earlier), JSON-ready."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.pop("extra")
        out["compress_ratios"] = list(self.compress_ratios)
        return {**self.extra, **out}

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # -- derived shapes ----------------------------------------------------------------------

    def ratio(self, layer: int) -> int:
        """Layer ``layer``'s compress ratio; MTP blocks (ids ``n_layers`` …) are window-only
        whether or not the list carries their entry."""
        return self.compress_ratios[layer] if layer < len(self.compress_ratios) else 0

    def with_mtp(self, n: int) -> ModelConfig:
        """This trunk with ``n`` MTP blocks, ``compress_ratios`` in the release layout (one
        entry per trunk layer, then a 0 per MTP block)."""
        ratios = (*self.compress_ratios[: self.n_layers], *(0,) * n)
        return self.replace(n_mtp_layers=n, compress_ratios=ratios)

    @property
    def mix_hc(self) -> int:
        """Mixing numbers per sub-layer: hc pre + hc post + hc×hc comb."""
        return (2 + self.hc_mult) * self.hc_mult

    def validate(self) -> None:
        def need(ok: bool, why: str) -> None:
            if not ok:
                raise ModelConfigError(why)

        for name in (
            "vocab_size", "dim", "n_layers", "n_heads", "q_lora_rank", "head_dim",
            "o_groups", "o_lora_rank", "window_size", "index_n_heads", "index_head_dim",
            "n_routed_experts", "n_activated_experts", "moe_inter_dim", "hc_mult",
            "hc_sinkhorn_iters",
        ):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.rope_head_dim >= 2 and self.rope_head_dim % 2 == 0,
             f"rope_head_dim must be even and >= 2, got {self.rope_head_dim}")
        need(self.rope_head_dim <= self.head_dim, "rope_head_dim must be <= head_dim")
        need(self.rope_head_dim <= self.index_head_dim, "rope_head_dim must be <= index_head_dim")
        need(self.n_heads % self.o_groups == 0,
             f"n_heads ({self.n_heads}) must be a multiple of o_groups ({self.o_groups})")
        need(len(self.compress_ratios) >= self.n_layers,
             f"compress_ratios has {len(self.compress_ratios)} entries for {self.n_layers} layers")
        need(all(isinstance(r, int) and r >= 0 for r in self.compress_ratios),
             f"compress_ratios must be non-negative integers, got {list(self.compress_ratios)}")
        need(0 <= self.n_mtp_layers <= 16, f"n_mtp_layers must be in [0, 16], got "
             f"{self.n_mtp_layers}")
        mtp_ratios = self.compress_ratios[self.n_layers : self.n_layers + self.n_mtp_layers]
        need(not any(mtp_ratios), f"the MTP blocks are window-only: their compress_ratios "
             f"entries must be 0, got {list(mtp_ratios)}")
        need(self.n_activated_experts <= self.n_routed_experts,
             "n_activated_experts must be <= n_routed_experts")
        need(self.n_shared_experts in (0, 1), "n_shared_experts must be 0 or 1 (V4 has one)")
        need(0 <= self.n_hash_layers <= self.n_layers, "n_hash_layers must be in [0, n_layers]")
        need(self.score_func in SCORE_FUNCS, f"score_func must be one of {SCORE_FUNCS}")
        need(self.index_topk >= 1, "index_topk must be >= 1")
        need(self.norm_eps > 0 and self.rope_theta > 0 and self.compress_rope_theta > 0,
             "norm_eps, rope_theta and compress_rope_theta must be positive")


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Check one JSON value against its field's type (ints may stand for floats)."""
    if key == "compress_ratios":
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ModelConfigError(f"compress_ratios must be a list of integers, got {value!r}")
        return tuple(value)
    if value is None and key in ("scale_fmt", "expert_dtype"):
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelConfigError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


_FIELD_TYPES: dict[str, type] = {
    **{f: int for f in (
        "vocab_size", "dim", "n_layers", "n_mtp_layers", "n_heads", "q_lora_rank", "head_dim",
        "rope_head_dim", "o_groups", "o_lora_rank", "window_size", "index_n_heads",
        "index_head_dim", "index_topk", "n_routed_experts", "n_shared_experts",
        "n_activated_experts", "moe_inter_dim", "n_hash_layers", "original_seq_len",
        "beta_fast", "beta_slow", "hc_mult", "hc_sinkhorn_iters")},
    **{f: float for f in (
        "norm_eps", "route_scale", "swiglu_limit", "rope_theta", "compress_rope_theta",
        "rope_factor", "hc_eps")},
    **{f: str for f in ("score_func", "dtype", "scale_fmt", "expert_dtype", "scale_dtype")},
    "compress_ratios": tuple,
}


def _flash() -> ModelConfig:
    return ModelConfig()


def _pro() -> ModelConfig:
    return ModelConfig(
        dim=7168, n_layers=61, n_heads=128, q_lora_rank=1536, o_groups=16,
        n_routed_experts=384, moe_inter_dim=3072, route_scale=2.5, index_topk=1024,
        compress_ratios=(128, 128, *([4, 128] * 29), 4, 0),
    )


def _nano() -> ModelConfig:
    return ModelConfig(
        vocab_size=4096, dim=256, n_layers=4, n_mtp_layers=0, n_heads=4, q_lora_rank=128,
        head_dim=128, rope_head_dim=32, o_groups=2, o_lora_rank=64, window_size=128,
        compress_ratios=(0, 4, 128, 4), index_n_heads=4, index_head_dim=64, index_topk=64,
        n_routed_experts=8, n_activated_experts=2, moe_inter_dim=128, n_hash_layers=1,
        dtype="bf16", scale_fmt=None, expert_dtype=None, scale_dtype="fp32",
    )


def _micro() -> ModelConfig:
    return ModelConfig(
        vocab_size=512, dim=64, n_layers=3, n_mtp_layers=0, n_heads=2, q_lora_rank=32,
        head_dim=64, rope_head_dim=16, o_groups=2, o_lora_rank=32, window_size=128,
        compress_ratios=(0, 4, 128), index_n_heads=2, index_head_dim=32, index_topk=8,
        n_routed_experts=4, n_activated_experts=2, moe_inter_dim=32, n_hash_layers=1,
        dtype="bf16", scale_fmt=None, expert_dtype=None, scale_dtype="fp32",
    )


_PRESETS = {"flash": _flash, "pro": _pro, "nano": _nano, "micro": _micro}
