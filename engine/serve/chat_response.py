"""Turn what the engine wrote (V4 completion text) into OpenAI/DeepSeek response shapes.

One :class:`ChatShaper` per response parses the completion with the codec's tolerant streaming
parser and produces either streamed chunks or the whole message; both come from the same parser
events, so a streamed answer reassembles to exactly the non-streamed one (same content,
reasoning, tool-call ids, names and arguments).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from whalebone.dsml import (
    CompletionParser,
    ContentDelta,
    ParsedCompletion,
    ReasoningDelta,
    ToolCallArgumentsDelta,
    ToolCallBegin,
)
from whalebone.dsml import tokens as T
from whalebone.engine.base import Finished, Usage


def usage_json(usage: Usage) -> dict[str, Any]:
    """``usage`` exactly as DeepSeek's API writes it, plus OpenAI's cached-tokens detail."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_cache_hit_tokens": usage.prompt_cache_hit_tokens,
        "prompt_cache_miss_tokens": usage.prompt_cache_miss_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.prompt_cache_hit_tokens},
    }


def served_by(finished: Finished) -> dict[str, Any]:
    """whalebone's extension to the answer: which engine served it, and its notes (a router's
    failover, "the cache starts cold"). OpenAI clients ignore fields they do not know."""
    return {"engine": finished.engine, "notes": list(finished.notes)}


def finish_reason(finished: Finished, parsed: ParsedCompletion | None) -> str:
    if finished.finish_reason == "length":
        return "length"
    if parsed is not None and parsed.tool_calls:
        return "tool_calls"
    return "stop"


class ChatShaper:
    """Parse one completion as it streams and shape it as ``chat.completion`` JSON."""

    def __init__(self, model: str, thinking_mode: str,
                 tools: list[dict[str, Any]] | None = None) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.thinking = thinking_mode == "thinking"
        self.parser = CompletionParser(thinking_mode, tools=tools, strict=False)

    def call_id(self, index: int) -> str:
        return f"call_{self.id[-12:]}_{index}"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "whalebone",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                             "logprobs": None}]}

    def _deltas(self, events: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in events:
            if isinstance(ev, ReasoningDelta):
                out.append(self._chunk({"reasoning_content": ev.text}))
            elif isinstance(ev, ContentDelta):
                out.append(self._chunk({"content": ev.text}))
            elif isinstance(ev, ToolCallBegin):
                out.append(self._chunk({"tool_calls": [{
                    "index": ev.index, "id": self.call_id(ev.index), "type": "function",
                    "function": {"name": ev.name, "arguments": ""}}]}))
            elif isinstance(ev, ToolCallArgumentsDelta) and ev.delta:
                out.append(self._chunk({"tool_calls": [{
                    "index": ev.index, "function": {"arguments": ev.delta}}]}))
        return out

    def first_chunk(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Chunks for a piece of the completion (none while a marker is still undecided)."""
        return self._deltas(self.parser.feed(text))

    def close(self, finished: Finished) -> list[dict[str, Any]]:
        """The remaining chunks and the last one, with finish_reason and usage."""
        chunks = []
        if finished.finish_reason == "stop" and not self.parser.finished:
            # Engines stop at EOS (or a stop string) without returning it: the message ended.
            chunks += self._deltas(self.parser.feed(T.EOS))
        chunks += self._deltas(self.parser.close())
        last = self._chunk({}, finish_reason(finished, self.parser.result))
        last["usage"] = usage_json(finished.usage)
        last["whalebone"] = served_by(finished)
        return [*chunks, last]

    def message(self) -> dict[str, Any]:
        parsed = self.parser.result
        msg: dict[str, Any] = {"role": "assistant", "content": parsed.content,
                               "reasoning_content": parsed.reasoning_content if self.thinking
                               else None}
        if parsed.tool_calls:
            msg["tool_calls"] = [c.to_openai(self.call_id(c.index)) for c in parsed.tool_calls]
        return msg

    def completion(self, finished: Finished) -> dict[str, Any]:
        """The whole ``chat.completion`` object, once the parser is closed."""
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": "whalebone",
                "choices": [{"index": 0, "message": self.message(), "logprobs": None,
                             "finish_reason": finish_reason(finished, self.parser.result)}],
                "usage": usage_json(finished.usage), "whalebone": served_by(finished)}


class TextShaper:
    """``text_completion`` JSON for POST /v1/completions (the raw text, unparsed)."""

    def __init__(self, model: str) -> None:
        self.id = "cmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model

    def chunk(self, text: str, finished: Finished | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model, "system_fingerprint": "whalebone",
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": finished.finish_reason if finished else None}]}
        if finished is not None:
            out["usage"] = usage_json(finished.usage)
            out["whalebone"] = served_by(finished)
        return out
