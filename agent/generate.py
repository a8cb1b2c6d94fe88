"""One model call from the loop's point of view: a prompt in, text deltas out, then a record.

This is the loop's only contact with the engine interface, so the loop reads the same whatever
engine runs underneath (the bundled one, DeepSeek's API in raw mode, vLLM, SGLang).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from whalebone.dsml import tokens as T


@dataclass
class Generation:
    """Filled in while a generation streams; complete once the stream ends."""

    text: str = ""
    finish_reason: str = ""
    engine: str = ""
    prompt_tokens: int = 0
    cache_hit_tokens: int = 0
    cache_miss_tokens: int = 0
    completion_tokens: int = 0


async def generate(engine: Any, prompt: str, config: Any,
                   record: Generation) -> AsyncIterator[str]:
    """Stream the completion of ``prompt`` as text deltas, filling ``record``."""
    from whalebone.engine.base import GenerationRequest, SamplingParams, TextDelta

    request = GenerationRequest(
        prompt=prompt,
        max_tokens=config.max_tokens,
        stop=[T.EOS],
        sampling=SamplingParams(temperature=config.temperature, seed=config.seed),
    )
    parts: list[str] = []
    async for event in engine.stream(request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
            yield event.text
        else:  # the final record
            record.finish_reason = event.finish_reason
            usage = event.usage
            record.prompt_tokens = usage.prompt_tokens
            record.cache_hit_tokens = usage.prompt_cache_hit_tokens
            record.cache_miss_tokens = usage.prompt_cache_miss_tokens
            record.completion_tokens = usage.completion_tokens
    record.text = "".join(parts)
    record.engine = getattr(engine, "name", type(engine).__name__)
