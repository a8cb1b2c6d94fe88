"""Shaping V4 completions as chat.completion JSON: streamed chunks reassemble to the whole."""

from __future__ import annotations

from typing import Any

from whalebone.dsml import emit_completion
from whalebone.engine.base import Finished, Usage
from whalebone.engine.serve.chat_response import ChatShaper, TextShaper, usage_json

USAGE = Usage(prompt_tokens=100, prompt_cache_hit_tokens=60, prompt_cache_miss_tokens=40,
              completion_tokens=9)


def finished(reason: str = "stop") -> Finished:
    return Finished(finish_reason=reason, text="", usage=USAGE, engine="e", model="m")  # type: ignore[arg-type]


def shaped(text: str, reason: str = "stop", size: int = 1) -> tuple[list[dict[str, Any]],
                                                                     dict[str, Any]]:
    shaper = ChatShaper("m", "thinking")
    chunks = [shaper.first_chunk()]
    for i in range(0, len(text), size):
        chunks += shaper.feed(text[i:i + size])
    chunks += shaper.close(finished(reason))
    return chunks, shaper.completion(finished(reason))


def test_usage_has_deepseek_fields_and_openai_cached_tokens() -> None:
    assert usage_json(USAGE) == {
        "prompt_tokens": 100, "completion_tokens": 9, "total_tokens": 109,
        "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 60}}


def test_chunks_of_any_size_reassemble_to_the_whole_message() -> None:
    text = emit_completion("Let me check.", reasoning="Think.",
                           tool_calls=[("f", {"q": "x", "n": 2}), ("g", {})], eos=False)
    for size in (1, 3, 1000):
        chunks, whole = shaped(text, size=size)
        msg = whole["choices"][0]["message"]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert "".join(d.get("content", "") for d in deltas) == msg["content"] == "Let me check."
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "Think."
        calls: dict[int, dict[str, str]] = {}
        for d in deltas:
            for tc in d.get("tool_calls", []):
                c = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                c["id"] = tc.get("id", c["id"])
                c["name"] += tc["function"].get("name", "")
                c["arguments"] += tc["function"].get("arguments", "")
        assert [calls[i] for i in sorted(calls)] == [
            {"id": t["id"], "name": t["function"]["name"], "arguments": t["function"]["arguments"]}
            for t in msg["tool_calls"]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert chunks[-1]["usage"]["prompt_cache_hit_tokens"] == 60


def test_length_finish_is_reported_and_chat_mode_has_no_reasoning() -> None:
    _, whole = shaped("Think more and mo", reason="length")
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["choices"][0]["message"]["reasoning_content"] == "Think more and mo"
    shaper = ChatShaper("m", "chat")
    shaper.feed("Hello.")
    shaper.close(finished())
    assert shaper.message() == {"role": "assistant", "content": "Hello.",
                                "reasoning_content": None}


def test_text_completions_carry_usage_only_on_the_last_chunk() -> None:
    shaper = TextShaper("m")
    assert "usage" not in shaper.chunk("abc")
    last = shaper.chunk("", finished())
    assert last["choices"][0]["finish_reason"] == "stop" and last["usage"]["total_tokens"] == 109
