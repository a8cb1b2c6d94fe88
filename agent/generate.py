"""One model call from the loop's point of view: a prompt in, text deltas out, then a record.

This is the loop's only contact with the engine interface, so the loop reads the same whatever
engine runs underneath (the bundled one, DeepSeek's API in raw mode, vLLM, SGLang).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from whalebone.core.usage import TokenCounts
from whalebone.dsml import tokens as T
from whalebone.engine.base import (
    Engine,
    EngineError,
    Finished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)


class Generation(TokenCounts):
    """Filled in while a generation streams; complete once the stream ends."""

    text: str = ""
    finish_reason: str = ""
    engine: str = ""
    model: str = ""
    engine_seconds: float = 0.0  # time spent inside the engine's stream (the model's share)
    finished: bool = False


@dataclass
class CallSpec:
    """What one call asks of the engine, beyond the prompt."""

    max_tokens: int
    thinking_mode: str = "thinking"
    reasoning_effort: str | None = None
    temperature: float = 0.0
    seed: int | None = None
    session_id: str | None = None


async def generate(engine: Engine, prompt: str, spec: CallSpec, record: Generation, *,
                   messages: Callable[[], tuple[list[dict[str, Any]],
                                                list[dict[str, Any]] | None]] | None = None,
                   ) -> AsyncIterator[str]:
    """Stream the completion of ``prompt`` as text deltas, filling ``record``.

    ``messages`` gives the same conversation in OpenAI form (messages, tools); it is called only
    for engines that cannot take a rendered prompt, since building it costs O(conversation).
    """
    request = GenerationRequest(
        prompt=prompt,
        max_tokens=spec.max_tokens,
        stop=[T.EOS],
        thinking_mode=spec.thinking_mode,  # type: ignore[arg-type]
        reasoning_effort=spec.reasoning_effort,  # type: ignore[arg-type]
        sampling=SamplingParams(temperature=spec.temperature, seed=spec.seed),
        session_id=spec.session_id,
    )
    if not getattr(engine, "accepts_prompt", True) and messages is not None:
        request.messages, request.tools = messages()
    parts: list[str] = []
    stream = engine.stream(request)
    try:
        while True:
            start = time.perf_counter()
            try:
                event = await stream.__anext__()
            except StopAsyncIteration:
                break
            finally:
                record.engine_seconds += time.perf_counter() - start
            if isinstance(event, TextDelta):
                parts.append(event.text)
                yield event.text
            else:  # the final record
                _finish(record, event)
    finally:
        # A cancelled or abandoned call closes the engine's stream, which stops generation.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if not record.finished:
        raise EngineError(f"engine {getattr(engine, 'name', engine)!r} ended its stream "
                          "without a result")
    record.text = "".join(parts)


def _finish(record: Generation, event: Finished) -> None:
    record.finished = True
    record.finish_reason = event.finish_reason
    record.engine = event.engine
    record.model = event.model
    record.set_counts(event.usage.counts())
