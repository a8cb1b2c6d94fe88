"""Undoing the last tokens of a forward (speculative decoding's rejected draft), and forwards of
two tokens that compute each row exactly as a one-token step."""

from __future__ import annotations

import pytest
import torch

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.state import SeqState, StateError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def micro() -> Transformer:
    return Transformer(ModelConfig.preset("micro").with_mtp(1), seed=5)  # window 128, ratios 4, 128


@pytest.fixture(scope="module")
def nano() -> Transformer:
    return Transformer(ModelConfig.preset("nano").with_mtp(1), seed=6)


def _ids(model: Transformer, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.vocab_size, (n,), generator=g)


def _assert_same(a: SeqState, b: SeqState) -> None:
    ta, tb = a.to_tensors(), b.to_tensors()
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k]), k


def _prefilled(model: Transformer, ids: torch.Tensor, n: int) -> SeqState:
    state = model.new_state()
    for lo in range(0, n, 100):  # chunks, as a prefill cuts them
        model.forward(ids[lo:min(n, lo + 100)], state)
    return state


# around ratio-4 blocks (a block completes at the kept token, at the dropped one, at neither),
# the ratio-128 block and the 128-slot window ring's wrap
POSITIONS = [0, 1, 2, 3, 5, 125, 126, 127, 128, 253, 254, 255, 256, 300]


@pytest.mark.parametrize("pos", POSITIONS, ids=lambda p: f"pos{p}")
@pytest.mark.parametrize("keep", [0, 1])
def test_rolling_back_equals_a_state_that_never_saw_the_dropped_tokens(
        micro: Transformer, pos: int, keep: int) -> None:
    ids = _ids(micro, pos + 6, seed=pos)
    state = _prefilled(micro, ids, pos)
    reference = state.clone()
    if keep:
        micro.forward(ids[pos:pos + keep], reference)

    mark = state.mark(2)
    micro.forward(ids[pos:pos + 2], state)
    state.rollback(mark, pos + keep)
    state.release()
    assert state.pos == pos + keep
    _assert_same(state, reference)
    for i in range(pos + keep, pos + keep + 4):  # and it goes on alike, token by token
        step = ids[i:i + 1]
        assert torch.equal(micro.forward(step, state), micro.forward(step, reference))
    _assert_same(state, reference)


def test_a_mark_rolls_back_twice_and_refuses_what_it_does_not_cover(micro: Transformer) -> None:
    ids = _ids(micro, 140, seed=1)
    state = _prefilled(micro, ids, 126)
    before = state.clone()
    mark = state.mark(2)
    micro.forward(ids[126:128], state)
    with pytest.raises(StateError, match="cannot roll back"):
        state.rollback(mark, 125)
    state.rollback(mark, 127)
    state.rollback(mark, 126)  # further back with the same mark
    _assert_same(state, before)
    state.release()
    with pytest.raises(StateError, match="not the state's current"):
        state.rollback(mark, 126)
    mark = state.mark(2)
    micro.forward(ids[126:127], state)
    micro.forward(ids[127:128], state)
    with pytest.raises(StateError, match="advanced twice"):  # a mark covers one forward
        state.rollback(mark, 126)
    with pytest.raises(StateError, match="1 to window_size"):
        state.mark(129)


def test_a_mark_costs_rows_not_the_context(micro: Transformer) -> None:
    state = _prefilled(micro, _ids(micro, 300), 300)
    mark = state.mark(2)
    held = sum(t.numel() for t in mark.rings)
    assert held == 2 * micro.cfg.head_dim * micro.cfg.n_layers  # two ring rows per layer
    state.release()


@pytest.fixture(scope="module")
def shipped() -> Transformer:
    """The shipped checkpoint's trunk: its shape (dim 128, 4 experts) differs from the presets'."""
    from whalebone.engine.runtime.bundled import CHECKPOINT_DIR
    from whalebone.engine.v4.weights import load_checkpoint

    if not (CHECKPOINT_DIR / "config.json").exists():
        pytest.skip("no bundled checkpoint installed")
    return load_checkpoint(CHECKPOINT_DIR)


@pytest.mark.parametrize("which", ["micro", "nano", "shipped"])
def test_two_tokens_in_one_forward_give_each_row_a_one_token_steps_bits(
        which: str, request: pytest.FixtureRequest) -> None:
    model: Transformer = request.getfixturevalue(which)
    ids = _ids(model, 300, seed=7)
    state = _prefilled(model, ids, 120)
    for pos in range(120, 290, 2):  # the window wraps, ratio-4 and ratio-128 blocks complete
        one = state.clone()
        l0, h0 = model.forward(ids[pos:pos + 1], one, last_only=True, hidden=True)
        l1, h1 = model.forward(ids[pos + 1:pos + 2], one, last_only=True, hidden=True)
        _, h = model.forward(ids[pos:pos + 2], state, hidden=True)
        assert torch.equal(h[:1], h0) and torch.equal(h[1:], h1), pos
        logits = model.logits(h)
        assert torch.equal(logits[0], l0[0]) and torch.equal(logits[1], l1[0]), pos
        _assert_same(state, one)


def test_drafts_may_batch_their_rows_the_trunk_may_not() -> None:
    from whalebone.engine.v4 import layers

    assert layers.exact_rows(2) and not layers.exact_rows(1)
    with layers.rows_as_batch():
        assert not layers.exact_rows(2)
    assert layers.exact_rows(2)
