"""The V4 transformer: one prefill, random chunks and token-by-token decode agree (FP32)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import ModelInputError, Transformer
from whalebone.engine.v4.state import StateError

ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _prompt(cfg: ModelConfig, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (n,), generator=g)


def _in_chunks(model: Transformer, ids: torch.Tensor, cuts: list[int]) -> torch.Tensor:
    """Logits of ``ids`` fed as chunks ending at each cut (and at the end)."""
    state, out, start = model.new_state(), [], 0
    for end in [*cuts, len(ids)]:
        if end > start:
            out.append(model.forward(ids[start:end], state))
            assert state.pos == end
            start = end
    return torch.cat(out)


def _one_by_one(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    state = model.new_state()
    return torch.cat([model.forward(ids[i : i + 1], state) for i in range(len(ids))])


@pytest.fixture(scope="module")
def micro() -> Transformer:
    return Transformer(ModelConfig.preset("micro"))


@pytest.fixture(scope="module")
def small_window() -> Transformer:
    """Window 16, ratios 0/4/8 and top-2: every boundary case within a few dozen tokens."""
    cfg = ModelConfig.preset("micro").replace(
        window_size=16, compress_ratios=(0, 4, 8), index_topk=2
    )
    return Transformer(cfg, seed=3)


def test_micro_prefill_equals_token_by_token_decode_past_ring_wrap_and_128_blocks(
    micro: Transformer,
) -> None:
    ids = _prompt(micro.cfg, 300)  # ring wraps twice; two ratio-128 entries complete
    full = micro.forward(ids, micro.new_state())
    assert full.shape == (300, micro.cfg.vocab_size)
    torch.testing.assert_close(_one_by_one(micro, ids), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "cuts",
    [
        [4, 8, 128, 256],  # on ratio-4 and ratio-128 block boundaries
        [3, 5, 127, 129, 255, 257],  # just off them
        [1, 2, 131, 132, 299],  # single tokens between long chunks
    ],
    ids=["on-boundaries", "off-boundaries", "singles"],
)
def test_micro_chunked_prefill_equals_one_prefill(micro: Transformer, cuts: list[int]) -> None:
    ids = _prompt(micro.cfg, 300, seed=1)
    full = micro.forward(ids, micro.new_state())
    torch.testing.assert_close(_in_chunks(micro, ids, cuts), full, atol=ATOL, rtol=0)


def test_random_chunkings_agree_with_prefill_and_decode(small_window: Transformer) -> None:
    ids = _prompt(small_window.cfg, 90, seed=2)
    full = small_window.forward(ids, small_window.new_state())
    torch.testing.assert_close(_one_by_one(small_window, ids), full, atol=ATOL, rtol=0)
    rng = random.Random(7)
    for _ in range(4):
        cuts = sorted(rng.sample(range(1, 90), rng.randint(1, 12)))
        torch.testing.assert_close(_in_chunks(small_window, ids, cuts), full, atol=ATOL, rtol=0)


def test_nano_preset_chunk_after_prefix_matches_one_prefill() -> None:
    model = Transformer(ModelConfig.preset("nano"))
    ids = _prompt(model.cfg, 260, seed=4)
    full = model.forward(ids, model.new_state())
    torch.testing.assert_close(_in_chunks(model, ids, [129, 130, 131, 256]), full,
                               atol=ATOL, rtol=0)


def test_last_only_is_the_last_row_of_the_full_logits(micro: Transformer) -> None:
    ids = _prompt(micro.cfg, 50, seed=5)
    full = micro.forward(ids, micro.new_state())
    state = micro.new_state()
    last = micro.forward(ids, state, last_only=True)
    assert last.shape == (1, micro.cfg.vocab_size) and state.pos == 50
    torch.testing.assert_close(last[0], full[-1], atol=ATOL, rtol=0)


def test_earlier_logits_do_not_see_later_tokens(small_window: Transformer) -> None:
    # causality across window, compressor blocks and indexer: change only the tail
    a = _prompt(small_window.cfg, 60, seed=6)
    b = a.clone()
    b[37:] = (b[37:] + 1) % small_window.cfg.vocab_size
    la = small_window.forward(a, small_window.new_state())
    lb = small_window.forward(b, small_window.new_state())
    torch.testing.assert_close(la[:37], lb[:37], atol=ATOL, rtol=0)
    assert not torch.allclose(la[37:], lb[37:], atol=1e-3)


def test_tokens_beyond_the_window_still_matter_through_compressed_entries() -> None:
    base = ModelConfig.preset("micro").replace(window_size=16, index_topk=64)
    ids = _prompt(base, 48, seed=8)
    changed = ids.clone()
    changed[0] = (changed[0] + 1) % base.vocab_size  # 47 positions before the last query

    def last_logits(cfg: ModelConfig, tokens: torch.Tensor) -> torch.Tensor:
        # n_hash_layers=0: token 0 may reach the last position only through attention
        model = Transformer(cfg.replace(n_hash_layers=0), seed=1)
        return model.forward(tokens, model.new_state(), last_only=True)

    window_only = base.replace(compress_ratios=(0, 0, 0))
    torch.testing.assert_close(last_logits(window_only, ids), last_logits(window_only, changed))
    compressed = base.replace(compress_ratios=(0, 4, 8))
    assert not torch.allclose(last_logits(compressed, ids), last_logits(compressed, changed))


def test_index_topk_limits_what_ratio4_layers_attend_to() -> None:
    cfg = ModelConfig.preset("micro").replace(window_size=16, compress_ratios=(4,), n_layers=1,
                                             n_hash_layers=0)
    ids = _prompt(cfg, 64, seed=9)

    def logits(topk: int) -> torch.Tensor:
        model = Transformer(cfg.replace(index_topk=topk), seed=2)
        return model.forward(ids, model.new_state())

    everything = logits(64)
    # before position 7 at most one entry is complete: top-1 and top-all see the same keys
    torch.testing.assert_close(logits(1)[:7], everything[:7], atol=ATOL, rtol=0)
    assert not torch.allclose(logits(1)[20:], everything[20:], atol=1e-3)
    # top-k at or above the number of complete entries selects them all
    torch.testing.assert_close(logits(16), everything, atol=ATOL, rtol=0)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    cfg = ModelConfig.preset("micro")
    assert Transformer(cfg, seed=5).fingerprint() == Transformer(cfg, seed=5).fingerprint()
    assert Transformer(cfg, seed=5).fingerprint() != Transformer(cfg, seed=6).fingerprint()


def test_fingerprint_follows_weights_and_config(micro: Transformer) -> None:
    model = Transformer(micro.cfg)
    before = model.fingerprint()
    weights = model.state_dict()
    weights["layers.1.attn.attn_sink"] = weights["layers.1.attn.attn_sink"] + 1
    model.load_state_dict(weights)
    assert model.fingerprint() != before
    assert len(before) == 64 and int(before, 16) >= 0


@pytest.mark.parametrize(
    "bad",
    [torch.tensor([], dtype=torch.int64), torch.tensor([[1, 2]]), torch.tensor([1.0, 2.0]),
     torch.tensor([0, 512]), torch.tensor([-1]), ["a"]],
    ids=["empty", "2-d", "float", "past-vocab", "negative", "not-ints"],
)
def test_bad_token_ids_raise_before_touching_the_state(micro: Transformer, bad: object) -> None:
    state = micro.new_state()
    micro.forward(torch.tensor([1, 2, 3]), state)
    snapshot = state.to_tensors()
    with pytest.raises(ModelInputError):
        micro.forward(bad, state)  # type: ignore[arg-type]
    assert state.pos == 3
    after = state.to_tensors()
    assert all(torch.equal(snapshot[k], after[k]) for k in snapshot)


def test_a_state_of_another_config_is_refused(micro: Transformer) -> None:
    other = ModelConfig.preset("micro").replace(window_size=16)
    from whalebone.engine.v4.state import SeqState

    with pytest.raises(StateError):
        micro.forward(torch.tensor([1]), SeqState.new(other))


def test_importing_the_engine_room_does_not_import_torch() -> None:
    code = ("import sys, whalebone, whalebone.engine, whalebone.engine.v4.config;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
