"""Speculative decoding with the MTP block gives plain greedy decoding's output, token for token:
through ``BundledEngine.stream`` on random micro and nano models with one MTP layer, with the
block's own drafts and with drafts forced right two times in three (random weights draft badly,
and a right draft is the path that feeds two tokens), and through a real ``whalebone serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import torch
from conftest import passes_around_cancel, stream_sync

from whalebone.engine.base import (
    EngineError,
    Finished,
    GenerationRequest,
    SamplingParams,
)
from whalebone.engine.runtime import speculative
from whalebone.engine.runtime.bundled import BundledEngine, RequestStats
from whalebone.engine.runtime.speculative import Drafter, Pace, Speculator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREEDY = SamplingParams(temperature=0.0)


def _prompt(engine: BundledEngine, n: int, salt: int) -> list[int]:
    keep = [v for v in engine.vocab.model_to_v4 if v > 2]
    return [0] + [keep[(i * 7919 + salt * 104729) % len(keep)] for i in range(n - 1)]


def _engines(preset: str, tmp_path: Path) -> tuple[BundledEngine, BundledEngine]:
    plain = BundledEngine.random(preset, mtp=1, seed=2, cache_dir=tmp_path / "plain",
                                 speculative=False, progress=False)
    spec = BundledEngine.random(preset, mtp=1, seed=2, cache_dir=tmp_path / "spec",
                                speculative=True, progress=False)
    assert (spec.speculative, plain.speculative) == ("on", "off")
    return plain, spec


def _run(engine: BundledEngine, ids: list[int], **kw: Any) -> tuple[list[str], Finished,
                                                                    RequestStats]:
    deltas, fin = stream_sync(engine, GenerationRequest(prompt_ids=ids, sampling=GREEDY, **kw))
    return deltas, fin, engine.last_stats


def _right_two_times_in_three(monkeypatch: pytest.MonkeyPatch, engine: BundledEngine,
                              sequence: list[int]) -> None:
    """The MTP block still runs (its state follows the stream), but the draft it returns is
    the plain transcript's next token, except every third one, which is wrong."""
    real = Drafter.draft
    model_ids = engine.vocab.to_model(sequence)

    def draft(self: Drafter, next_ids: list[int]) -> int:
        at = self.state.pos + len(self.rows) + 1  # the drafted token's position
        drafted = real(self, next_ids)
        if at >= len(model_ids):
            return drafted
        right = model_ids[at]
        return right if at % 3 else (right + 1) % engine.cfg.vocab_size

    monkeypatch.setattr(Drafter, "draft", draft)


def _same_snapshots(plain: BundledEngine, spec: BundledEngine, a: RequestStats,
                    b: RequestStats) -> None:
    assert a.snapshots == b.snapshots
    assert plain.cache is not None and spec.cache is not None
    for n in a.snapshots:
        seq = (a.prompt_ids + a.completion_ids)[:n]
        x, y = plain.cache.lookup(seq), spec.cache.lookup(seq)
        assert x is not None and y is not None and x.length == y.length == n
        assert torch.equal(x.logits, y.logits)
        assert x.state.keys() == y.state.keys()
        assert all(torch.equal(x.state[k], y.state[k]) for k in x.state)


@pytest.mark.parametrize("preset", ["micro", "nano"])
@pytest.mark.parametrize("drafts", ["mtp", "forced"])
def test_speculative_greedy_is_plain_greedy_token_for_token(
        preset: str, drafts: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, spec = _engines(preset, tmp_path)
    generated = 0
    longest = 320 if preset == "micro" else 160  # 300 tokens in all, at less cost
    for salt, n in ((1, 40), (2, 300)):  # the drafter warmed from part of a window / a full one
        ids = _prompt(plain, n, salt)
        d1, f1, a = _run(plain, ids, max_tokens=longest)
        if drafts == "forced":
            _right_two_times_in_three(monkeypatch, spec, a.prompt_ids + a.completion_ids)
        d2, f2, b = _run(spec, ids, max_tokens=longest)
        monkeypatch.undo()
        assert b.completion_ids == a.completion_ids
        assert (d2, f2.text, f2.finish_reason, f2.usage) == (d1, f1.text, f1.finish_reason,
                                                             f1.usage)
        assert b.drafted > 0 and a.decode_passes == a.completion_tokens - 1
        # each right draft saves a pass (but one the stream stopped at)
        n = b.completion_tokens
        assert n - 1 - b.accepted <= b.decode_passes <= n - b.accepted
        if drafts == "forced" and b.completion_tokens > 6:
            assert b.accepted > b.drafted / 3  # two tokens per pass happened, often
            assert any("speculative decoding" in note for note in f2.notes)
        _same_snapshots(plain, spec, a, b)
        generated += b.completion_tokens
    assert generated >= 300


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 4, 9, 10])
def test_max_tokens_stop_strings_and_eos_end_where_plain_decoding_ends(
        max_tokens: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, spec = _engines("micro", tmp_path)
    ids = _prompt(plain, 70, 3)
    _, full, ref = _run(plain, ids, max_tokens=40)
    _run(spec, ids, max_tokens=40)  # both caches hold the same snapshots from here
    _right_two_times_in_three(monkeypatch, spec, ref.prompt_ids + ref.completion_ids)
    # stop strings that complete at a drafted token and at a sampled one
    text = full.text
    stops = [[], [text[max_tokens:max_tokens + 3]] if len(text) > max_tokens + 3 else []]
    for stop in stops:
        d1, f1, a = _run(plain, ids, max_tokens=max_tokens, stop=stop)
        d2, f2, b = _run(spec, ids, max_tokens=max_tokens, stop=stop)
        assert (d2, f2.text, f2.finish_reason, f2.usage) == (d1, f1.text, f1.finish_reason,
                                                             f1.usage)
        assert b.completion_ids == a.completion_ids
        _same_snapshots(plain, spec, a, b)
    # the next turn restores the completion's snapshot alike (the trunk state only)
    for engine in (plain, spec):
        _run(engine, ids + ref.completion_ids[:max_tokens + 2], max_tokens=1)
    assert plain.last_stats.hit_tokens == spec.last_stats.hit_tokens


def test_a_stream_that_stops_at_a_verified_draft_forgets_the_draft_like_plain_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, spec = _engines("micro", tmp_path)
    ids = _prompt(plain, 90, 6)
    _, _, ref = _run(plain, ids, max_tokens=40)
    _run(spec, ids, max_tokens=40)  # both caches hold the same snapshots from here
    _right_two_times_in_three(monkeypatch, spec, ref.prompt_ids + ref.completion_ids)
    steps: list[int] = []  # tokens each decode step gave
    real_step = BundledEngine._step

    def step(self: BundledEngine, *args: Any) -> list[int]:
        out = real_step(self, *args)
        steps.append(len(out))
        return out

    monkeypatch.setattr(BundledEngine, "_step", step)
    _run(spec, ids, max_tokens=40)
    monkeypatch.setattr(BundledEngine, "_step", real_step)
    starts = [sum(steps[:j]) for j in range(len(steps)) if steps[j] == 2]  # verified drafts
    decode = spec.tokenizer.decode
    done = ref.completion_ids

    def alone(i: int) -> str | None:  # token i's text, if it first shows at token i
        before, text = decode(done[:i]), decode(done[:i + 1])
        piece = text[len(before):]
        ok = piece.strip().isascii() and piece.strip() and text.find(piece) == len(before)
        return piece if ok else None

    stop = next((alone(i) for i in starts if alone(i)), None)
    assert stop is not None, "no verified draft with text of its own"
    undone: list[bool] = []
    real_settle = Speculator.settle

    def settle(self: Speculator, run: Any, unshown: int) -> None:
        undone.append(bool(unshown) and run.drafter.undo is not None)
        real_settle(self, run, unshown)

    monkeypatch.setattr(Speculator, "settle", settle)
    d1, f1, a = _run(plain, ids, max_tokens=40, stop=[stop])
    d2, f2, b = _run(spec, ids, max_tokens=40, stop=[stop])
    assert undone == [True]  # the draft was fed, then taken back
    assert (d2, f2.text, f2.finish_reason, f2.usage) == (d1, f1.text, f1.finish_reason, f1.usage)
    assert b.completion_ids == a.completion_ids and f2.finish_reason == "stop"
    _same_snapshots(plain, spec, a, b)


def test_a_fully_cached_prompt_drafts_after_one_plain_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, spec = _engines("micro", tmp_path)
    ids = _prompt(plain, 200, 4)
    _, _, a = _run(plain, ids, max_tokens=30)
    _run(spec, ids, max_tokens=2)  # writes the prompt's snapshot
    _, _, b = _run(spec, ids, max_tokens=30)
    assert b.hit_tokens == len(ids)  # nothing prefilled: no streams to warm the drafter from
    assert b.completion_ids == a.completion_ids
    if b.completion_tokens > 2:
        assert 0 < b.drafted < b.completion_tokens


def test_sampled_requests_and_the_switch_keep_plain_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, spec = _engines("micro", tmp_path)
    stream_sync(spec, GenerationRequest(prompt_ids=_prompt(spec, 30, 5), max_tokens=8,
                                        sampling=SamplingParams(temperature=0.8, seed=1)))
    assert spec.last_stats.drafted == 0
    for value, mode in (("0", "off"), ("off", "off"), ("1", "on"), ("on", "on"),
                        ("auto", "auto"), ("", "off")):
        monkeypatch.setenv(speculative.ENV, value)
        assert BundledEngine.random("micro", mtp=1, use_cache=False).speculative == mode
    assert BundledEngine.random("micro", use_cache=False).speculative == "off"  # no MTP block
    monkeypatch.setenv(speculative.ENV, "sometimes")
    with pytest.raises(EngineError, match="one of auto, on, off"):
        BundledEngine.random("micro", mtp=1, use_cache=False)
    monkeypatch.delenv(speculative.ENV)
    # off unless asked for: on a CPU the exact two-row verify costs about two plain steps
    assert BundledEngine.random("micro", mtp=1, use_cache=False).speculative == "off"


def test_cancelling_a_speculative_stream_stops_it_and_next_logits_stay_plain(
        tmp_path: Path) -> None:
    plain, spec = _engines("micro", tmp_path)

    at_cancel, later = passes_around_cancel(spec, GenerationRequest(
        prompt_ids=_prompt(spec, 30, 8), max_tokens=5000, sampling=GREEDY))
    assert at_cancel == later < 100  # nothing runs on after the cancel
    ids = _prompt(spec, 50, 9)
    a, b = anyio.run(plain.next_logits, ids), anyio.run(spec.next_logits, ids)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    _, _, x = _run(plain, ids, max_tokens=12)
    _, _, y = _run(spec, ids, max_tokens=12)  # the engine serves the next request alike
    assert x.completion_ids == y.completion_ids


def test_pace_drafts_while_the_measured_rates_say_it_pays() -> None:
    pace = Pace()
    assert pace.pays()  # nothing measured: try
    pace.plain(0.010)
    pace.speculative(0.016, accepted=True)
    assert pace.pays()  # 2 tokens per 16 ms beats 1 per 10 ms
    for _ in range(30):
        pace.speculative(0.016, accepted=False)
    assert not pace.pays()  # ~1 token per 16 ms
    assert "of drafts accepted" in str(pace)


def test_auto_mode_stops_drafting_where_drafts_do_not_pay(tmp_path: Path) -> None:
    plain, _ = _engines("micro", tmp_path)
    auto = BundledEngine.random("micro", mtp=1, seed=2, use_cache=False, speculative="auto")
    ids = _prompt(plain, 60, 7)
    _, _, a = _run(plain, ids, max_tokens=120)
    _, _, b = _run(auto, ids, max_tokens=120)
    assert b.completion_ids == a.completion_ids
    # random weights draft noise: once both kinds are timed, only the probes draft
    if b.completion_tokens >= 60:
        assert 0 < b.drafted < b.completion_tokens / 2, (b.drafted, str(auto.speculator.pace))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from whalebone.agent.cli import main; "
            "sys.exit(main())", *args]


def _serve_completion(folder: Path, home: Path, switch: str, prompt: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "WHALEBONE_API_KEY"}
    env.update(WHALEBONE_HOME=str(home), HOME=str(home), WHALEBONE_SPECULATIVE=switch,
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_cli("serve", "--engine", f"bundled:{folder}", "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), proc.stderr and proc.stderr.read()
        url = line.split()[2]
        r = httpx.post(url + "/v1/completions", timeout=300, json={
            "model": folder.name, "prompt": prompt, "max_tokens": 300, "temperature": 0})
        assert r.status_code == 200, r.text
        return dict(r.json())
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_answers_the_same_with_and_without_speculation(tmp_path: Path) -> None:
    from whalebone.engine.v4.weights import save_checkpoint

    made = BundledEngine.random("micro", mtp=1, seed=9, use_cache=False)
    folder = tmp_path / "micro-mtp"
    save_checkpoint(made.transformer, folder)
    made.vocab.save(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["n_mtp_layers"] == 1
    prompt = "<｜begin▁of▁sentence｜>The quick brown fox jumps over the lazy dog. " * 6
    off = _serve_completion(folder, tmp_path / "home-off", "0", prompt)
    on = _serve_completion(folder, tmp_path / "home-on", "1", prompt)
    assert on["choices"][0]["text"] == off["choices"][0]["text"]
    assert on["usage"] == off["usage"] and on["usage"]["completion_tokens"] > 20
    assert not any("speculative" in n for n in off["whalebone"]["notes"])
    assert any("speculative decoding" in n for n in on["whalebone"]["notes"])
