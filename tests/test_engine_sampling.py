from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from whalebone.dsml.tokenizer import load_tokenizer
from whalebone.engine.base import EngineError, SamplingParams
from whalebone.engine.runtime.sampling import Detokenizer, Sampler, StopScanner, nucleus


def test_temperature_zero_is_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, -2.0, 2.9])
    assert Sampler(SamplingParams(temperature=0.0, seed=1))(logits) == 1


def test_a_seed_reproduces_the_same_draws() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, seed=42)
    a, b = Sampler(params), Sampler(params)
    draws_a = [a(logits) for _ in range(50)]
    assert draws_a == [b(logits) for _ in range(50)]
    assert len(set(draws_a)) > 5  # it really samples
    torch.manual_seed(123)  # the global RNG does not reach a seeded sampler
    c = Sampler(params)
    torch.rand(10)
    assert [c(logits) for _ in range(50)] == draws_a


def test_top_p_keeps_only_the_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = nucleus(probs, 0.7)
    assert torch.allclose(kept, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.equal(nucleus(probs, 0.01), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.7, seed=0))
    assert {sampler(probs.log()) for _ in range(200)} == {0, 1}


def test_masked_ids_are_never_chosen() -> None:
    logits = torch.tensor([0.0, 10.0, 0.0])
    mask = torch.tensor([True, False, True])
    assert Sampler(SamplingParams(), mask=mask)(logits) in (0, 2)
    hot = Sampler(SamplingParams(temperature=2.0, seed=0), mask=mask)
    assert 1 not in {hot(logits) for _ in range(100)}


def test_detokenizer_releases_text_only_when_a_character_is_complete() -> None:
    tok = load_tokenizer()
    text = "naïve 鯨骨 🐋 whale"
    ids = tok.encode(text)
    detok = Detokenizer(tok.decode)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@given(st.text(max_size=60))
def test_detokenizer_deltas_always_add_up_to_the_decoded_text(text: str) -> None:
    tok = load_tokenizer()
    ids = tok.encode(text)
    detok = Detokenizer(tok.decode)
    out = "".join(detok.push(i) for i in ids) + detok.flush()
    assert out == tok.decode(ids)


def test_stop_string_is_cut_and_never_shown_even_when_split_across_deltas() -> None:
    scan = StopScanner(["</stop>"])
    shown = [scan.feed(d) for d in ["hello </", "st", "op> never"]]
    assert "".join(shown) == "hello " and scan.stopped
    assert scan.text == "hello "
    assert scan.feed("more") == ""


def test_held_back_text_is_released_when_it_cannot_become_a_stop_string() -> None:
    scan = StopScanner(["END"])
    assert scan.feed("abcE") == "abc"
    assert scan.feed("x") == "Ex"
    assert scan.feed("EN") == ""
    assert scan.flush() == "EN" and scan.text == "abcExEN" and not scan.stopped


def test_the_earliest_of_several_stop_strings_wins() -> None:
    scan = StopScanner(["bb", "a"])
    assert scan.feed("xxbba") == "xx"


@given(st.lists(st.text(alphabet="abXY", max_size=5), max_size=12),
       st.lists(st.text(alphabet="abXY", min_size=1, max_size=3), min_size=1, max_size=3))
def test_streamed_stop_scanning_equals_cutting_the_whole_text(deltas: list[str],
                                                              stops: list[str]) -> None:
    scan = StopScanner(stops)
    shown = "".join(scan.feed(d) for d in deltas) + scan.flush()
    whole = "".join(deltas)
    cut = min((i for i in (whole.find(s) for s in stops) if i >= 0), default=-1)
    assert shown == (whole[:cut] if cut >= 0 else whole)
    assert scan.stopped == (cut >= 0)


def test_logits_nothing_can_be_drawn_from_are_a_clear_error() -> None:
    with pytest.raises(EngineError, match="NaN"):
        Sampler(SamplingParams())(torch.tensor([0.0, float("nan")]))
    with pytest.raises(EngineError, match="no token"):
        Sampler(SamplingParams(temperature=1.0, seed=0),
                mask=torch.tensor([False, True]))(torch.tensor([1.0, float("-inf")]))
