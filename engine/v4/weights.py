"""Checkpoints: V4's own release layout (dequantized on load) and our small FP32/BF16 format.

A checkpoint is a folder with ``config.json`` (V4 inference-config keys, see
:class:`~whalebone.engine.v4.config.ModelConfig`) and one or more ``*.safetensors`` files whose
tensors carry V4's inference names (``layers.{i}.attn.wq_a.weight``, ``…ffn.experts.{e}.w1.weight``,
``hc_head_fn``, …). Loading understands what the release ships:

- FP8 linears: ``X.weight`` in e4m3 with ``X.scale`` (or HF's ``X.weight_scale_inv``), one
  scale per 128×128 block, in e8m0 (a power of two) or FP32;
- FP4 experts: ``X.weight`` of shape (out, in/2), two e2m1 codes per byte, low nibble first
  (int8, uint8 or torch's float4_e2m1fn_x2), with ``X.scale`` (out, in/32), one per 32 codes;
- everything else in BF16/FP16/FP32; ``model.`` prefixes and HF-style module names
  (``self_attn``, ``mlp``, ``q_a_proj``, ``gate_proj``, ``e_score_correction_bias``, …) are
  mapped as V4's ``convert.py`` maps them;
- the multi-token prediction block(s) as ``mtp.{k}.*`` (``mtp.0.e_proj.weight``,
  ``mtp.0.attn.wq_a.weight``, ``mtp.0.hc_head_fn``, …), loaded when the config's
  ``n_mtp_layers`` > 0 and skipped when it is 0 (a trunk-only config loads as before). The
  block shares the trunk's ``embed`` and ``head``; the reference attaches them to it as
  submodules, so its state dict also names them ``mtp.{k}.embed.*``/``mtp.{k}.head.*``: those
  copies are skipped.

All of it becomes FP32. :func:`save_checkpoint` writes our own format: ``config.json`` +
``model.safetensors`` with the same names in FP32 (or BF16), which loads back through the same
function. Anything missing, extra or misshapen raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from whalebone.core.errors import WhaleboneError
from whalebone.engine.v4.config import ModelConfig, ModelConfigError
from whalebone.engine.v4.model import Transformer

FP8_BLOCK = 128
FP4_BLOCK = 32
# e2m1 code -> value (bit 3 is the sign)
FP4_VALUES = torch.tensor(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
)


class CheckpointError(WhaleboneError, ValueError):
    """A checkpoint folder that does not hold a loadable V4 model."""


def load_checkpoint(folder: str | os.PathLike[str]) -> Transformer:
    """The model in ``folder`` (V4 release layout or ours), FP32 on CPU, in eval mode."""
    folder = Path(folder)
    cfg = read_config(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {folder}")
    raw: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    key = _v4_name(name)
                    if key.startswith("mtp.") and (not cfg.n_mtp_layers
                                                   or _SHARED_IN_MTP.match(key)):
                        continue
                    if key in raw:
                        raise CheckpointError(f"tensor {key!r} appears twice ({path.name})")
                    raw[key] = f.get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"{path.name} is not readable safetensors: {exc}") from None
    weights = dequantize(raw)
    with torch.device("meta"):
        model = Transformer(cfg, init=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match its config: missing {missing[:6]}"
            f"{' …' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{' …' if len(unexpected) > 6 else ''}"
        )
    for name, want in expected.items():
        got = weights[name]
        if got.shape != want.shape:
            raise CheckpointError(
                f"{name} has shape {tuple(got.shape)}, config says {tuple(want.shape)}"
            )
        weights[name] = got.to(want.dtype)
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    model.requires_grad_(False)
    return model


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no config.json") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    try:
        return ModelConfig.from_json(text)
    except ModelConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def save_checkpoint(
    model: Transformer, folder: str | os.PathLike[str], dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (floats in ``dtype``) into ``folder``.
    Each file is written to a temporary name and renamed, so a crash leaves no half file."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise CheckpointError(f"save_checkpoint writes float32 or bfloat16, not {dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (t.to(dtype) if t.is_floating_point() else t).contiguous()
        for name, t in model.state_dict().items()
    }
    _atomic_write(folder / "model.safetensors", lambda p: save_file(tensors, p))
    text = json.dumps(model.cfg.to_json(), indent=2) + "\n"
    _atomic_write(folder / "config.json", lambda p: Path(p).write_text(text, encoding="utf-8"))
    return folder


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# HF-style module names -> the inference code's (as V4's own convert.py maps them)
_HF_SEGMENTS = {
    "self_attn": "attn", "mlp": "ffn", "embed_tokens": "embed", "lm_head": "head",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "q_a_proj": "wq_a", "q_a_layernorm": "q_norm", "q_b_proj": "wq_b",
    "gate_proj": "w1", "down_proj": "w2", "up_proj": "w3",
    "weight_scale_inv": "scale", "e_score_correction_bias": "bias",
}


_SHARED_IN_MTP = re.compile(r"mtp\.\d+\.(embed|head)\.")


def _v4_name(name: str) -> str:
    """A release tensor name in the inference code's naming."""
    if name.startswith("model."):
        name = name[len("model.") :]
    return ".".join(_HF_SEGMENTS.get(part, part) for part in name.split("."))


def dequantize(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn every ``X.weight`` + ``X.scale`` pair into one FP32 ``X.weight``; upcast the rest
    of the floats to FP32 and leave integer tables (``tid2eid``) as they are."""
    out: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        if name.endswith(".scale"):
            if name[: -len(".scale")] + ".weight" not in raw:
                raise CheckpointError(f"{name} scales no weight")
            continue
        scale = raw.get(name[: -len(".weight")] + ".scale") if name.endswith(".weight") else None
        if scale is not None:
            out[name] = _dequantize_pair(name, t, _scale_values(name, scale))
        elif t.dtype in (torch.float8_e4m3fn, torch.float4_e2m1fn_x2):
            raise CheckpointError(f"{name} is quantized ({t.dtype}) but has no scale")
        elif t.is_floating_point():
            out[name] = t.to(torch.float32)
        else:
            out[name] = t
    return out


def _scale_values(name: str, scale: torch.Tensor) -> torch.Tensor:
    if scale.dtype == torch.float8_e8m0fnu:
        exponent = scale.view(torch.uint8).to(torch.int32)
        if bool((exponent == 255).any()):
            raise CheckpointError(f"{name}: e8m0 scale holds NaN")
        return torch.exp2((exponent - 127).to(torch.float32))
    if not scale.is_floating_point():
        raise CheckpointError(f"{name}: scale must be e8m0 or a float, got {scale.dtype}")
    return scale.to(torch.float32)


def _dequantize_pair(name: str, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if w.dtype == torch.float8_e4m3fn:
        out_f, in_f = w.shape
        blocks = (-(-out_f // FP8_BLOCK), -(-in_f // FP8_BLOCK))
        if tuple(scale.shape) != blocks:
            raise CheckpointError(f"{name}: FP8 weight {tuple(w.shape)} needs a {blocks} "
                                  f"block scale, got {tuple(scale.shape)}")
        full = scale.repeat_interleave(FP8_BLOCK, 0).repeat_interleave(FP8_BLOCK, 1)
        return w.to(torch.float32) * full[:out_f, :in_f]
    if w.dtype in (torch.int8, torch.uint8, torch.float4_e2m1fn_x2):
        return _unpack_fp4(name, w.view(torch.uint8), scale)
    raise CheckpointError(f"{name}: a scale comes with an unquantized {w.dtype} weight")


def _unpack_fp4(name: str, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(out, in/2) bytes, low nibble first, with (out, in/32) scales -> (out, in) FP32."""
    out_f, half = packed.shape
    in_f = 2 * half
    if in_f % FP4_BLOCK or tuple(scale.shape) != (out_f, in_f // FP4_BLOCK):
        raise CheckpointError(f"{name}: FP4 weight {tuple(packed.shape)} needs a "
                              f"({out_f}, {in_f // FP4_BLOCK}) scale, got {tuple(scale.shape)}")
    codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1).flatten(1).long()  # (out, in)
    values = FP4_VALUES[codes]
    return values * scale.repeat_interleave(FP4_BLOCK, dim=1)
