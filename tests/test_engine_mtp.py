"""Multi-token prediction: the MTP block against a transcription of V4's reference forward,
chunked = token-by-token, release names through save/load, and trunk-only checkpoints as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from whalebone.engine.v4.config import ModelConfig, ModelConfigError
from whalebone.engine.v4.model import Block, ModelInputError, Transformer
from whalebone.engine.v4.state import StateError
from whalebone.engine.v4.weights import CheckpointError, load_checkpoint, save_checkpoint

ATOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ids(cfg: ModelConfig, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> Transformer:
    """micro with one MTP block and a 16-token window (the MTP ring wraps within 40 tokens)."""
    cfg = ModelConfig.preset("micro").replace(window_size=16, compress_ratios=(0, 4, 8),
                                              index_topk=2).with_mtp(1)
    return Transformer(cfg, seed=7)


def _reference_mtp(model: Transformer, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """V4's ``MTPBlock.forward`` (inference/model.py) line for line, batch of one, prefill from
    position 0; ``super().forward`` is the trunk's Block (held to the reference elsewhere) and
    the head is ``ParallelHead.forward`` transcribed: logits of the last position only."""
    mtp = model.mtp[0]
    x, input_ids = x.unsqueeze(0), input_ids.unsqueeze(0)  # [b, s, hc, d], [b, s]
    e = model.embed(input_ids)
    e = mtp.enorm(e)
    x = mtp.hnorm(x)
    x = mtp.e_proj(e).unsqueeze(2) + mtp.h_proj(x)
    state = model.new_mtp_state()
    x = Block.forward(mtp, x[0], state.layers[0], 0, input_ids[0]).unsqueeze(0)
    # ParallelHead.forward -> hc_head, then get_logits(norm(x))
    shape, dtype = x.size(), x.dtype
    x = x.flatten(2).float()
    rsqrt = torch.rsqrt(x.square().mean(-1, keepdim=True) + model.cfg.norm_eps)
    mixes = F.linear(x, mtp.hc_head_fn) * rsqrt
    pre = torch.sigmoid(mixes * mtp.hc_head_scale + mtp.hc_head_base) + model.cfg.hc_eps
    y = torch.sum(pre.unsqueeze(-1) * x.view(shape), dim=2).to(dtype)
    return F.linear(mtp.norm(y)[:, -1].float(), model.head.weight)[0]


def test_mtp_forward_equals_the_reference_transcription(model: Transformer) -> None:
    ids = _ids(model.cfg, 41)
    _, h = model.forward(ids[:-1], model.new_state(), hidden=True)
    ours = model.mtp_forward(h, ids[1:], model.new_mtp_state())
    assert ours.shape == (40, model.cfg.vocab_size)
    with torch.inference_mode():
        for s in (1, 2, 9, 16, 17, 40):  # past the 16-token window
            want = _reference_mtp(model, h[:s], ids[1 : s + 1])
            torch.testing.assert_close(ours[s - 1], want, atol=ATOL, rtol=0)


def test_hidden_streams_are_what_the_logits_came_from(model: Transformer) -> None:
    ids = _ids(model.cfg, 20, seed=1)
    plain = model.forward(ids, model.new_state())
    logits, h = model.forward(ids, model.new_state(), hidden=True)
    assert torch.equal(plain, logits) and h.shape == (20, model.cfg.hc_mult, model.cfg.dim)
    last, h_last = model.forward(ids, model.new_state(), last_only=True, hidden=True)
    assert torch.equal(h_last, h[-1:])
    torch.testing.assert_close(last, logits[-1:], atol=ATOL, rtol=0)  # 1-row vs 20-row matmul


@pytest.mark.parametrize("cuts", [[1], [7, 8, 30], [16, 17], list(range(1, 40))])
def test_chunked_mtp_calls_equal_one_call(model: Transformer, cuts: list[int]) -> None:
    ids = _ids(model.cfg, 41, seed=2)
    _, h = model.forward(ids[:-1], model.new_state(), hidden=True)
    whole = model.mtp_forward(h, ids[1:], model.new_mtp_state())
    state, parts, start = model.new_mtp_state(), [], 0
    for end in [*cuts, 40]:
        parts.append(model.mtp_forward(h[start:end], ids[start + 1 : end + 1], state))
        assert state.pos == end
        start = end
    torch.testing.assert_close(torch.cat(parts), whole, atol=ATOL, rtol=0)
    last = model.mtp_forward(h, ids[1:], model.new_mtp_state(), last_only=True)
    torch.testing.assert_close(last, whole[-1:], atol=ATOL, rtol=0)


def test_simulated_quantization_covers_the_mtp_block_and_keeps_chunking_exact() -> None:
    cfg = ModelConfig.preset("micro").replace(window_size=16).with_mtp(1)
    model = Transformer(cfg, seed=8)
    ids = _ids(cfg, 30, seed=4)
    _, h = model.forward(ids[:-1], model.new_state(), hidden=True)
    plain = model.mtp_forward(h, ids[1:], model.new_mtp_state())
    model.simulate_quantization(True)
    quant = model.mtp_forward(h, ids[1:], model.new_mtp_state())
    state = model.new_mtp_state()
    steps = torch.cat([model.mtp_forward(h[i : i + 1], ids[i + 1 : i + 2], state)
                       for i in range(29)])
    torch.testing.assert_close(steps, quant, atol=ATOL, rtol=0)
    assert not torch.allclose(quant, plain, atol=ATOL, rtol=0)
    block = model.mtp[0]
    for linear in (block.e_proj, block.h_proj, block.attn.wq_a):  # FP8 in the release
        assert len(linear._forward_pre_hooks) == 1
    model.simulate_quantization(False)
    assert block.e_proj._forward_pre_hooks == {}
    torch.testing.assert_close(model.mtp_forward(h, ids[1:], model.new_mtp_state()), plain,
                               atol=0, rtol=0)


def test_decoding_drafts_from_the_streams_of_each_step(model: Transformer) -> None:
    """What speculative decoding does: trunk and MTP fed one token at a time agree with one
    prefill of both."""
    ids = _ids(model.cfg, 30, seed=3)
    _, h = model.forward(ids[:-1], model.new_state(), hidden=True)
    whole = model.mtp_forward(h, ids[1:], model.new_mtp_state())
    trunk, mtp, drafts = model.new_state(), model.new_mtp_state(), []
    for i in range(29):
        _, hi = model.forward(ids[i : i + 1], trunk, hidden=True)
        drafts.append(model.mtp_forward(hi, ids[i + 1 : i + 2], mtp, last_only=True))
    torch.testing.assert_close(torch.cat(drafts), whole, atol=ATOL, rtol=0)


def test_bad_mtp_input_raises_before_touching_the_state(model: Transformer) -> None:
    _, h = model.forward(_ids(model.cfg, 5), model.new_state(), hidden=True)
    state = model.new_mtp_state()
    with pytest.raises(ModelInputError, match="shape"):
        model.mtp_forward(h, torch.tensor([1, 2]), state)
    with pytest.raises(ModelInputError, match="vocabulary"):
        model.mtp_forward(h, torch.tensor([1, 2, 3, 4, 10**6]), state)
    with pytest.raises(StateError):
        model.mtp_forward(h, torch.tensor([1, 2, 3, 4, 5]), model.new_state())
    assert state.pos == 0
    trunk_only = Transformer(ModelConfig.preset("micro"))
    assert not trunk_only.has_mtp and len(trunk_only.mtp) == 0
    with pytest.raises(ModelInputError, match="no MTP"):
        trunk_only.mtp_forward(h, torch.tensor([1, 2, 3, 4, 5]), trunk_only.new_mtp_state())


def test_the_trunk_does_not_depend_on_having_mtp(model: Transformer) -> None:
    trunk = Transformer(ModelConfig.preset("micro").replace(
        window_size=16, compress_ratios=(0, 4, 8), index_topk=2), seed=7)
    with_mtp = model.state_dict()
    for name, t in trunk.state_dict().items():
        assert torch.equal(with_mtp[name], t), name
    assert {n.split(".")[0] for n in with_mtp} - {n.split(".")[0] for n in trunk.state_dict()} \
        == {"mtp"}
    assert trunk.fingerprint() != model.fingerprint()  # the MTP weights are part of it
    other = Transformer(model.cfg, seed=7)
    other.init_random(99, prefix="mtp.")
    assert other.fingerprint() != model.fingerprint()
    for name, t in trunk.state_dict().items():
        assert torch.equal(other.state_dict()[name], t), name


def test_config_carries_the_mtp_block_as_the_release_does() -> None:
    cfg = ModelConfig.preset("micro").with_mtp(1)
    assert cfg.compress_ratios == (0, 4, 128, 0) and cfg.n_mtp_layers == 1
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.ratio(3) == 0
    # a list without the MTP entry means window-only too (older configs)
    short = ModelConfig.preset("micro").replace(n_mtp_layers=1)
    assert Transformer(short).mtp[0].attn.compressor is None
    with pytest.raises(ModelConfigError, match="window-only"):
        ModelConfig.preset("micro").replace(n_mtp_layers=1, compress_ratios=(0, 4, 128, 4))
    with pytest.raises(ModelConfigError, match="n_mtp_layers"):
        ModelConfig.preset("micro").replace(n_mtp_layers=-1)
    flash = ModelConfig.preset("flash")
    assert len(flash.compress_ratios) == flash.n_layers + flash.n_mtp_layers


def test_save_and_load_keep_the_release_names_and_values(model: Transformer,
                                                         tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    for name in ("mtp.0.e_proj.weight", "mtp.0.h_proj.weight", "mtp.0.enorm.weight",
                 "mtp.0.hnorm.weight", "mtp.0.norm.weight", "mtp.0.hc_head_fn",
                 "mtp.0.hc_head_base", "mtp.0.hc_head_scale", "mtp.0.attn.wq_a.weight",
                 "mtp.0.ffn.gate.bias", "mtp.0.hc_attn_fn"):
        assert name in saved, name
    assert not any(n.startswith("mtp.0.embed") or n.startswith("mtp.0.head") for n in saved)
    assert json.loads((tmp_path / "config.json").read_text())["n_mtp_layers"] == 1
    loaded = load_checkpoint(tmp_path)
    assert loaded.has_mtp and loaded.fingerprint() == model.fingerprint()
    ids = _ids(model.cfg, 12)
    _, h = loaded.forward(ids[:-1], loaded.new_state(), hidden=True)
    assert torch.equal(loaded.mtp_forward(h, ids[1:], loaded.new_mtp_state()),
                       model.mtp_forward(h, ids[1:], model.new_mtp_state()))


def test_the_references_shared_embed_and_head_names_under_mtp_are_skipped(
        model: Transformer, tmp_path: Path) -> None:
    """V4's reference attaches the trunk's embed and head to the MTP block, so its state dict
    names them twice; a checkpoint holding those copies loads (they are the trunk's)."""
    save_checkpoint(model, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["mtp.0.embed.weight"] = weights["embed.weight"].clone()
    weights["mtp.0.head.weight"] = weights["head.weight"].clone()
    save_file(weights, tmp_path / "model.safetensors")
    assert load_checkpoint(tmp_path).fingerprint() == model.fingerprint()


def test_trunk_only_checkpoints_load_as_before(model: Transformer, tmp_path: Path) -> None:
    """A config saying 0 skips ``mtp.*`` tensors (as the engine always did); a config saying 1
    without them is a broken checkpoint and says so."""
    save_checkpoint(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    trunk_cfg = {**config, "n_mtp_layers": 0, "compress_ratios": [0, 4, 8]}
    (tmp_path / "config.json").write_text(json.dumps(trunk_cfg))
    trunk = load_checkpoint(tmp_path)
    assert not trunk.has_mtp
    ids = _ids(model.cfg, 10)
    assert torch.equal(trunk.forward(ids, trunk.new_state()), model.forward(ids, model.new_state()))
    weights = {k: v for k, v in load_file(tmp_path / "model.safetensors").items()
               if not k.startswith("mtp.")}
    save_file(weights, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing \['mtp\.0\."):
        load_checkpoint(tmp_path)


def test_the_shipped_nano_checkpoint_carries_its_mtp_block_and_loads_as_a_trunk_too(
        tmp_path: Path) -> None:
    import json
    import shutil

    import whalebone.engine as engine

    folder = Path(engine.__file__).parent / "checkpoints" / "whalebone-nano"
    nano = load_checkpoint(folder)
    assert nano.has_mtp and nano.cfg.n_mtp_layers == 1
    # the same files with a config that says 0: the mtp.* tensors are skipped, the trunk is
    # the same model
    trunk_dir = tmp_path / "trunk"
    shutil.copytree(folder, trunk_dir)
    cfg = json.loads((trunk_dir / "config.json").read_text())
    cfg["n_mtp_layers"] = 0
    cfg["compress_ratios"] = cfg["compress_ratios"][: cfg["n_layers"]]
    (trunk_dir / "config.json").write_text(json.dumps(cfg))
    trunk = load_checkpoint(trunk_dir)
    assert not trunk.has_mtp
    ids = torch.tensor([0, 5, 17, 300, 9])
    assert torch.equal(trunk.forward(ids, trunk.new_state()), nano.forward(ids, nano.new_state()))
