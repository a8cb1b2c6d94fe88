"""Every token a conversation re-sends comes from the prefix cache, through ``whalebone serve``.

The limit of a turn is every token the engine has already seen, byte-identical: the longest
common prefix of the new prompt's ids with an earlier prompt plus its sampled completion. With
thinking on, the next turn re-renders the previous assistant turn without its reasoning
(``<think>`` becomes ``</think>``), so the limit ends just before that marker; with tools the
reasoning is kept and the limit runs into the completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import serving

from whalebone.dsml import tokens as T
from whalebone.dsml.transcript import common_prefix_len
from whalebone.engine.runtime.bundled import BundledEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"]}}}]


@pytest.mark.parametrize("mode", ["chat", "thinking"])
def test_each_turn_through_serve_hits_every_token_the_engine_has_seen(
        tmp_path: Path, mode: str) -> None:
    engine = BundledEngine.default(cache_dir=tmp_path / "cache", progress=False)
    seen: list[list[int]] = []
    system = "Answer briefly and plainly. " * 12  # past one 64-token unit
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    with serving(engine) as (base, _), httpx.Client(base_url=base, timeout=120) as client:
        for turn, question in enumerate(["What is a cache?", "Why?", "Say it again."]):
            messages.append({"role": "user", "content": question})
            r = client.post("/v1/chat/completions", json={
                "model": "whalebone-nano", "messages": messages, "max_tokens": 12,
                "thinking": {"type": "disabled" if mode == "chat" else "enabled"},
                **({"tools": TOOLS} if mode == "thinking+tools" else {})})
            assert r.status_code == 200, r.text
            reply = r.json()
            ids = engine.last_stats.prompt_ids
            limit = max((common_prefix_len(ids, s) for s in seen), default=0)
            msg = reply["choices"][0]["message"]
            completion = engine.last_stats.completion_ids
            said = engine.tokenizer.decode([i for i in completion
                                            if i != engine.tokenizer.eos_id])
            # serve neutralises special-token text the model writes in plain content (nano
            # sometimes writes DSML there): the client then re-sends other bytes from that
            # point, which no snapshot can anticipate, so the tokens the engine has seen in a
            # form the client can re-send end with the prompt
            echoed = mode != "chat" or said == (msg.get("content") or "")
            seen.append(ids + completion if echoed else ids)
            hit = reply["usage"]["prompt_cache_hit_tokens"]
            if turn:
                assert limit > 20  # the system prompt and the first question at least
                assert limit - 1 <= hit <= limit, (turn, hit, limit)
            messages.append({k: v for k, v in msg.items()
                             if k in ("role", "content", "reasoning_content") and v is not None})


def test_snapshots_sit_before_the_think_marker_and_on_64_token_boundaries(
        tmp_path: Path) -> None:
    engine = BundledEngine.random("micro", seed=0, cache_dir=tmp_path / "cache")
    tok = engine.tokenizer
    body = tok.encode("hello " * 100)
    assistant, think, unthink = (tok.token_id(t) for t in (T.ASSISTANT, T.THINK_START,
                                                           T.THINK_END))
    thinking = [tok.bos_id, *body, assistant, think]
    assert engine.plan.stable_end(thinking) == len(thinking) - 1
    # with tools the reasoning is kept and <think> stays: the prompt end is kept too
    assert engine.plan.points(thinking) == [(len(thinking) - 1) // 64 * 64,
                                                len(thinking) - 1, len(thinking)]
    chat = [tok.bos_id, *body, assistant, unthink]
    # chat mode's marker stays in later turns: the prompt end is the point to keep
    assert engine.plan.stable_end(chat) is None
    assert engine.plan.points(chat) == [(len(chat) - 1) // 64 * 64, len(chat)]
    # a prompt forced to start its answer (tool_choice) keeps its end and the stable point
    forced = [*thinking, *tok.encode("Sure")]
    assert {len(thinking) - 1, len(forced)} <= set(engine.plan.points(forced))
    raw = [tok.bos_id, *body]
    assert engine.plan.stable_end(raw) is None
    assert engine.plan.points(raw) == [(len(raw) - 1) // 64 * 64, len(raw)]


def test_a_completion_spelled_with_other_tokens_is_snapshotted_where_it_parts(
        tmp_path: Path) -> None:
    import anyio
    import torch

    from whalebone.engine.base import GenerationRequest
    from whalebone.engine.runtime.bundled import RequestStats

    engine = BundledEngine.default(cache_dir=tmp_path / "cache", progress=False)
    tok = engine.tokenizer
    words = tok.encode(" the cache")
    odd = tok.encode(" th") + tok.encode("e") + tok.encode(" cache")  # " the" spelled in two
    assert odd != words and tok.decode(odd) == tok.decode(words)
    completion = [*tok.encode(" Yes,"), *odd, tok.eos_id]
    cut = len(tok.encode(" Yes,"))  # " th" is where the canonical spelling parts
    assert engine.plan.retokenized_from(completion) == cut
    assert engine.plan.retokenized_from([*tok.encode(" Yes,"), *words, tok.eos_id]) is None

    prompt = tok.encode("<｜begin▁of▁sentence｜>Is a cache fast?")
    anyio.run(engine.generate, GenerationRequest(prompt_ids=prompt, max_tokens=1))
    stats = RequestStats(completion_ids=completion)
    engine._snapshot_retokenized(prompt, stats)
    seq = prompt + completion[:cut]
    assert stats.snapshots == [len(seq)]
    # the next turn's prompt, spelled canonically, hits up to where the spellings part
    following = [*prompt, *tok.encode(" Yes,"), *words, tok.eos_id]
    warm, hit = anyio.run(engine.next_logits, following)
    assert hit == len(seq)
    cold = BundledEngine.default(use_cache=False, progress=False)
    expected, _ = anyio.run(cold.next_logits, following)
    torch.testing.assert_close(warm, expected, rtol=1e-4, atol=1e-4)
