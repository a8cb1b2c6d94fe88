"""Checkpoints: our own format round-trips; V4's release layout (FP8 blocks, packed FP4 experts)
written here by an independent quantizer loads to the same weights and near-same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.weights import CheckpointError, load_checkpoint, save_checkpoint

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> Transformer:
    return Transformer(ModelConfig.preset("micro"), seed=21)


def _ids(n: int = 40) -> torch.Tensor:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(0))


def _logits(model: Transformer) -> torch.Tensor:
    return model.forward(_ids(), model.new_state())


# -- an independent writer of V4's release layout -----------------------------------------------


def _pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    return torch.exp2(torch.ceil(torch.log2(x)))


def _e8m0(scale: torch.Tensor) -> torch.Tensor:
    return (torch.log2(scale).round().to(torch.int32) + 127).to(torch.uint8).view(
        torch.float8_e8m0fnu)


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """e4m3 weight, e8m0 scale per 128×128 block, and what they decode to."""
    out_f, in_f = w.shape
    bo, bi = -(-out_f // 128), -(-in_f // 128)
    padded = torch.zeros(bo * 128, bi * 128)
    padded[:out_f, :in_f] = w
    blocks = padded.view(bo, 128, bi, 128)
    scale = _pow2_ceil(blocks.abs().amax(dim=(1, 3)).clamp_min(1e-12) / 448)  # (bo, bi)
    full = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[:out_f, :in_f]
    q = (w / full).to(torch.float8_e4m3fn)
    return q, _e8m0(scale), q.float() * full


def quantize_fp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed e2m1 (int8, low nibble first), e8m0 scale per 32, and what they decode to."""
    out_f, in_f = w.shape
    groups = w.view(out_f, in_f // 32, 32)
    scale = _pow2_ceil(groups.abs().amax(-1).clamp_min(1e-12) / 6)  # (out, in/32)
    v = (groups / scale[..., None]).flatten(1)
    mag = (v.abs()[..., None] - E2M1).abs().argmin(-1)  # nearest magnitude code 0..7
    codes = (mag | ((v < 0).long() << 3)).to(torch.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(torch.int8)
    values = E2M1[mag] * torch.where(v < 0, -1.0, 1.0)
    return packed, _e8m0(scale), values * scale.repeat_interleave(32, 1)


FP8_PARTS = ("attn.wq_a.", "attn.wq_b.", "attn.wkv.", "attn.wo_a.", "attn.wo_b.",
             "indexer.wq_b.", "shared_experts.")


def write_v4_checkpoint(
    model: Transformer, folder: Path, hf_names: bool = False
) -> dict[str, torch.Tensor]:
    """Write ``model`` as the release stores it; return the weights its files decode to."""
    decoded: dict[str, torch.Tensor] = {}
    files: list[dict[str, torch.Tensor]] = [{}, {}]
    for i, (name, t) in enumerate(sorted(model.state_dict().items())):
        shard = files[i % 2]
        stem = name[: -len(".weight")]
        scale_name = stem + (".weight_scale_inv" if hf_names else ".scale")
        if ".experts." in name and name.endswith(".weight"):
            shard[name], shard[scale_name], decoded[name] = quantize_fp4(t)
        elif any(p in name for p in FP8_PARTS) and name.endswith(".weight"):
            shard[name], shard[scale_name], decoded[name] = quantize_fp8(t)
        elif t.is_floating_point() and not name.endswith(("ape", "attn_sink")):
            shard[name] = t.to(torch.bfloat16)
            decoded[name] = shard[name].float()
        else:
            shard[name] = t.clone()
            decoded[name] = t
    files[0]["mtp.0.emb.weight"] = torch.zeros(4, 4)  # the engine skips MTP
    for n, shard in enumerate(files):
        if hf_names:
            shard = {"model." + _hf_style(k): v for k, v in shard.items()}
        save_file(shard, folder / f"model{n}-mp2.safetensors")
    config = model.cfg.to_json() | {"max_batch_size": 4, "dtype": "fp8", "expert_dtype": "fp4"}
    (folder / "config.json").write_text(json.dumps(config))
    return decoded


def _hf_style(name: str) -> str:
    """Some of the names as HF-style checkpoints spell them."""
    renames = [(".attn.", ".self_attn."), (".ffn.", ".mlp."), ("embed.", "embed_tokens."),
               ("gate.bias", "gate.e_score_correction_bias"), (".wq_a.", ".q_a_proj."),
               (".w1.", ".gate_proj."), (".w3.", ".up_proj."), ("attn_norm", "input_layernorm")]
    for ours, theirs in renames:
        name = name.replace(ours, theirs)
    return name


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hf_names", [False, True], ids=["inference-names", "hf-names"])
def test_v4_release_layout_loads_to_the_dequantized_weights(
    model: Transformer, tmp_path: Path, hf_names: bool
) -> None:
    decoded = write_v4_checkpoint(model, tmp_path, hf_names)
    written = {k for p in tmp_path.glob("*.safetensors") for k in load_file(p)}
    assert ("model.layers.1.self_attn.q_a_proj.weight_scale_inv" in written) == hf_names
    loaded = load_checkpoint(tmp_path)
    weights = loaded.state_dict()
    assert weights.keys() == decoded.keys()
    for name, t in decoded.items():
        assert torch.equal(weights[name], t.to(weights[name].dtype)), name
    assert loaded.cfg.extra["max_batch_size"] == 4


def test_v4_release_layout_gives_the_unquantized_logits_within_quantization_error(
    model: Transformer, tmp_path: Path
) -> None:
    write_v4_checkpoint(model, tmp_path)
    exact, quantized = _logits(model), _logits(load_checkpoint(tmp_path))
    error = (quantized - exact).norm() / exact.norm()
    unrelated = (_logits(Transformer(model.cfg, seed=22)) - exact).norm() / exact.norm()
    assert 0 < error < 0.3  # FP4 experts and FP8 linears: close, not equal
    assert error < unrelated / 4
    agree = (quantized.argmax(-1) == exact.argmax(-1)).float().mean()
    assert agree > 0.6


def test_fp4_codes_unpack_low_nibble_first_with_power_of_two_scales(tmp_path: Path) -> None:
    cfg = ModelConfig.preset("micro")
    model = Transformer(cfg)
    write_v4_checkpoint(model, tmp_path)
    name = "layers.1.ffn.experts.2.w1.weight"
    shard, tensors = next((p, t) for p in sorted(tmp_path.glob("*.safetensors"))
                          if name in (t := load_file(p)))
    row = torch.zeros(cfg.dim // 2, dtype=torch.uint8)
    row[0] = 0x71  # codes 1 (0.5) then 7 (6.0)
    row[1] = 0xA8  # codes 8 (-0.0) then 10 (-1.0)
    tensors[name][0] = row.view(torch.int8)
    scale = tensors[name.replace("weight", "scale")]
    scale[0, 0] = torch.tensor([128], dtype=torch.uint8).view(torch.float8_e8m0fnu)[0]  # 2.0
    save_file(tensors, shard)
    w = load_checkpoint(tmp_path).state_dict()[name]
    assert w[0, :4].tolist() == [1.0, 12.0, -0.0, -2.0]


def test_our_format_round_trips_exactly_and_keeps_the_fingerprint(
    model: Transformer, tmp_path: Path
) -> None:
    save_checkpoint(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    again = load_checkpoint(tmp_path)
    assert again.cfg == model.cfg
    assert again.fingerprint() == model.fingerprint()
    assert torch.equal(_logits(again), _logits(model))


def test_bf16_checkpoint_is_half_the_size_and_close(model: Transformer, tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path / "f32")
    save_checkpoint(model, tmp_path / "bf16", dtype=torch.bfloat16)
    f32 = (tmp_path / "f32" / "model.safetensors").stat().st_size
    bf16 = (tmp_path / "bf16" / "model.safetensors").stat().st_size
    assert bf16 < 0.55 * f32
    exact, approx = _logits(model), _logits(load_checkpoint(tmp_path / "bf16"))
    assert (approx - exact).norm() / exact.norm() < 0.05


def test_broken_checkpoints_raise_checkpoint_error_naming_the_fault(
    model: Transformer, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tmp_path)
    save_checkpoint(model, tmp_path)
    weights = model.state_dict()

    def expect(match: str, tensors: dict[str, torch.Tensor]) -> None:
        save_file(tensors, tmp_path / "model.safetensors")
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(tmp_path)

    expect("missing.*embed.weight", {k: v for k, v in weights.items() if k != "embed.weight"})
    expect("unexpected.*layers.7.attn", {**weights, "layers.7.attn.wkv.weight": torch.zeros(1)})
    expect("head.weight has shape", {**weights, "head.weight": torch.zeros(3, 3)})
    fp8 = weights["layers.0.attn.wkv.weight"].to(torch.float8_e4m3fn)
    expect("no scale", {**weights, "layers.0.attn.wkv.weight": fp8})
    expect("needs a \\(1, 1\\) block scale",
           {**weights, "layers.0.attn.wkv.weight": fp8,
            "layers.0.attn.wkv.scale": torch.ones(2, 2)})
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not readable"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"dim": "wide"}')
    with pytest.raises(CheckpointError, match="dim must be int"):
        load_checkpoint(tmp_path)
