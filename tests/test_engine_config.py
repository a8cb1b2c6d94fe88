"""Model configs: V4's inference-config keys, presets, validation."""

from __future__ import annotations

import json

import pytest

from whalebone.engine.v4.config import ModelConfig, ModelConfigError

# V4-Flash's inference config.json as published with the release's inference code
FLASH_INFERENCE_CONFIG = {
    "vocab_size": 129280, "dim": 4096, "moe_inter_dim": 2048, "n_layers": 43,
    "n_hash_layers": 3, "n_heads": 64, "norm_eps": 1e-06, "n_routed_experts": 256,
    "n_shared_experts": 1, "n_activated_experts": 6, "score_func": "sqrtsoftplus",
    "route_scale": 1.5, "swiglu_limit": 10.0, "q_lora_rank": 1024, "head_dim": 512,
    "rope_head_dim": 64, "o_groups": 8, "o_lora_rank": 1024, "window_size": 128,
    "compress_ratios": [0, 0, *([4, 128] * 20), 4, 0], "compress_rope_theta": 160000.0,
    "original_seq_len": 65536, "rope_theta": 10000.0, "rope_factor": 16, "beta_fast": 32,
    "beta_slow": 1, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512,
    "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-06, "dtype": "fp8",
    "scale_fmt": "ue8m0", "max_batch_size": 4, "max_seq_len": 1048576,
}


def test_flash_preset_is_the_release_inference_config() -> None:
    loaded = ModelConfig.from_json(json.dumps(FLASH_INFERENCE_CONFIG))
    assert loaded == ModelConfig.preset("flash")
    assert loaded.extra == {"max_batch_size": 4, "max_seq_len": 1048576}
    out = loaded.to_json()
    assert {k: out[k] for k in FLASH_INFERENCE_CONFIG} == FLASH_INFERENCE_CONFIG


def test_pro_preset_has_the_release_shapes() -> None:
    pro = ModelConfig.preset("pro")
    assert (pro.dim, pro.n_layers, pro.n_heads, pro.n_routed_experts) == (7168, 61, 128, 384)
    assert pro.compress_ratios[:4] == (128, 128, 4, 128) and len(pro.compress_ratios) == 62
    assert (pro.route_scale, pro.index_topk, pro.o_groups) == (2.5, 1024, 16)


def test_small_presets_cover_every_layer_kind() -> None:
    for name in ("nano", "micro"):
        cfg = ModelConfig.preset(name)
        assert {0, 4, 128} <= set(cfg.compress_ratios[: cfg.n_layers])
        assert cfg.n_hash_layers >= 1 and cfg.n_shared_experts == 1
        assert cfg.window_size == 128
        assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_unknown_preset_and_bad_values_raise_model_config_error() -> None:
    with pytest.raises(ModelConfigError, match="unknown preset 'huge'"):
        ModelConfig.preset("huge")
    bad = [
        "[1, 2]",
        "{not json",
        {"dim": "4096"},
        {"dim": True},
        {"compress_ratios": [4, "128"]},
        {"n_layers": 50},  # 44 compress ratios cannot cover 50 layers
        {"n_heads": 6},  # 8 output groups do not divide 6 heads
        {"rope_head_dim": 63},
        {"score_func": "relu"},
        {"n_activated_experts": 300},
        {"dim": 0},
    ]
    for data in bad:
        with pytest.raises(ModelConfigError):
            ModelConfig.from_json(data)  # type: ignore[arg-type]


def test_integral_floats_and_int_floats_are_accepted() -> None:
    cfg = ModelConfig.from_json({"dim": 4096.0, "rope_factor": 16, "scale_fmt": None})
    assert cfg.dim == 4096 and isinstance(cfg.rope_factor, float) and cfg.scale_fmt is None
