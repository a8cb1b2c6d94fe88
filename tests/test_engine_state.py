"""A sequence's state: saved through a real safetensors file, it restores bit-exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.hyper import hc_pre
from whalebone.engine.v4.layers import apply_rope, rope_table
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.state import SeqState, StateError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> Transformer:
    cfg = ModelConfig.preset("micro").replace(window_size=16, compress_ratios=(0, 4, 8),
                                             index_topk=3)
    return Transformer(cfg, seed=11)


def _ids(model: Transformer, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.vocab_size, (n,), generator=g)


@pytest.mark.parametrize("prefix", [0, 3, 4, 8, 17, 33], ids=lambda p: f"pos{p}")
def test_state_through_a_safetensors_file_continues_bit_exactly(
    model: Transformer, prefix: int, tmp_path: Path
) -> None:
    ids = _ids(model, prefix + 12, seed=prefix)
    state = model.new_state()
    if prefix:
        model.forward(ids[:prefix], state)
    save_file(state.to_tensors(), tmp_path / "state.safetensors")
    restored = SeqState.from_tensors(model.cfg, load_file(tmp_path / "state.safetensors"))
    assert restored.pos == prefix
    for chunk in (ids[prefix : prefix + 5], ids[prefix + 5 : prefix + 6], ids[prefix + 6 :]):
        assert torch.equal(model.forward(chunk, restored), model.forward(chunk, state))
    after, again = state.to_tensors(), restored.to_tensors()
    assert after.keys() == again.keys()
    assert all(torch.equal(after[k], again[k]) for k in after)


def test_state_holds_exactly_the_window_entries_indexer_keys_and_pending_rows(
    model: Transformer,
) -> None:
    state = model.new_state()
    model.forward(_ids(model, 22), state)  # 22 = 5 blocks of 4 + 2, 2 blocks of 8 + 6
    shapes = {k: tuple(v.shape) for k, v in state.to_tensors().items()}
    w, d, di = 16, model.cfg.head_dim, model.cfg.index_head_dim
    assert shapes == {
        "pos": (1,),
        "layers.0.window": (w, d),
        "layers.1.window": (w, d),
        "layers.1.compressor.entries": (5, d),
        "layers.1.compressor.cur_kv": (2, 2 * d),
        "layers.1.compressor.cur_score": (2, 2 * d),
        "layers.1.compressor.prev_kv": (4, d),
        "layers.1.compressor.prev_score": (4, d),
        "layers.1.indexer.entries": (5, di),
        "layers.1.indexer.cur_kv": (2, 2 * di),
        "layers.1.indexer.cur_score": (2, 2 * di),
        "layers.1.indexer.prev_kv": (4, di),
        "layers.1.indexer.prev_score": (4, di),
        "layers.2.window": (w, d),
        "layers.2.compressor.entries": (2, d),
        "layers.2.compressor.cur_kv": (6, d),
        "layers.2.compressor.cur_score": (6, d),
    }


def test_window_slot_is_position_mod_window(model: Transformer) -> None:
    # layer 0's window KV of position p depends on token p alone: compute it directly
    ids = _ids(model, 40, seed=3)
    block, c = model.layers[0], model.cfg
    with torch.no_grad():
        h = model.embed(ids).unsqueeze(1).repeat(1, c.hc_mult, 1)
        x, _, _ = hc_pre(h, block.hc_attn_fn, block.hc_attn_scale, block.hc_attn_base,
                         c.hc_sinkhorn_iters, c.norm_eps, c.hc_eps)
        kv = block.attn.kv_norm(block.attn.wkv(block.attn_norm(x)))
        cos, sin = rope_table(block.attn.freqs, torch.arange(40))
        kv = apply_rope(kv, cos, sin)
    state = model.new_state()
    model.forward(ids, state)
    ring = state.layers[0].window
    for p in range(24, 40):
        torch.testing.assert_close(ring[p % 16], kv[p], atol=1e-5, rtol=0)


def test_clone_is_independent(model: Transformer) -> None:
    ids = _ids(model, 20, seed=4)
    state = model.new_state()
    model.forward(ids[:10], state)
    before = state.to_tensors()
    twin = state.clone()
    model.forward(ids[10:], twin)
    assert state.pos == 10 and twin.pos == 20
    now = state.to_tensors()
    assert all(torch.equal(before[k], now[k]) for k in before)


def test_nbytes_grows_by_the_compressed_kv_per_token(model: Transformer) -> None:
    d, di = model.cfg.head_dim, model.cfg.index_head_dim
    state = model.new_state()
    model.forward(_ids(model, 8), state)
    start = state.nbytes()
    model.forward(_ids(model, 32, seed=1), state)  # whole blocks: pending rows end as they began
    per_token = (state.nbytes() - start) / 32
    assert per_token == 4 * (d / 4 + di / 4 + d / 8)  # float32 entries of ratios 4, 4 and 8
    assert start > 3 * 16 * d * 4  # the three rings are in it


def test_restore_rejects_states_that_do_not_fit(model: Transformer) -> None:
    state = model.new_state()
    model.forward(_ids(model, 13), state)
    good = state.to_tensors()

    def broken(**changes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        t = dict(good)
        for k, v in changes.items():
            key = k.replace("__", ".")
            if v is None:
                t.pop(key)
            else:
                t[key] = v
        return t

    cases = [
        broken(pos=None),
        broken(pos=torch.tensor([14])),  # entries and pending rows no longer add up
        broken(layers__1__compressor__entries=None),
        broken(layers__2__window=torch.zeros(8, model.cfg.head_dim)),
        broken(layers__9__window=torch.zeros(16, model.cfg.head_dim)),
        broken(layers__0__window=torch.zeros(16, model.cfg.head_dim, dtype=torch.int32)),
    ]
    for tensors in cases:
        with pytest.raises(StateError):
            SeqState.from_tensors(model.cfg, tensors)
    with pytest.raises(StateError):
        SeqState.from_tensors(model.cfg.replace(compress_ratios=(0, 4, 4)), good)


def test_the_window_ring_by_slices_equals_the_ring_by_gathers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from whalebone.engine.v4 import layers
    cfg = ModelConfig.preset("micro")
    w = cfg.window_size
    gen = torch.Generator().manual_seed(0)
    rings = {True: SeqState.new(cfg).layers[0], False: SeqState.new(cfg).layers[0]}
    pos = 0
    for t in [1, 3, w - 1, 1, w + 5, 2 * w + 1, 1, 7, w, 1]:  # wraps, whole-ring overwrites
        kv = torch.randn(t, cfg.head_dim, generator=gen)
        seen = {}
        for fast, ring in rings.items():
            monkeypatch.setattr(layers, "FAST_DECODE", fast)
            ring.remember(pos, kv)
            seen[fast] = [ring.recent(pos + t, n) for n in (0, 1, min(pos + t, w - 1),
                                                             min(pos + t, w))]
        pos += t
        assert torch.equal(rings[True].window, rings[False].window)
        for a, b in zip(seen[True], seen[False], strict=True):
            assert torch.equal(a, b)
