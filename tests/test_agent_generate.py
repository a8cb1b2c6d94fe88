"""One model call: streaming deltas, the engine's record, chat-only engines, broken streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from agent_kit import call, file_tools, say

from whalebone.agent import Agent, AgentConfig
from whalebone.agent.generate import CallSpec, Generation, generate
from whalebone.engine.base import (
    Engine,
    EngineError,
    GenerationRequest,
    StreamEvent,
    TextDelta,
)
from whalebone.engine.scripted import ScriptedEngine


def test_deltas_and_the_final_record() -> None:
    engine = ScriptedEngine([say("Hello.")], model="deepseek-v4-flash")
    record = Generation()

    async def main() -> list[str]:
        return [d async for d in generate(engine, "<｜begin▁of▁sentence｜>hi",
                                          CallSpec(max_tokens=50, session_id="s1"), record)]

    deltas = anyio.run(main)
    assert "".join(deltas) == record.text == say("Hello.").removesuffix("<｜end▁of▁sentence｜>")
    assert record.finish_reason == "stop" and record.model == "deepseek-v4-flash"
    assert record.engine == "scripted" and record.prompt_tokens > 0
    assert engine.requests[0].session_id == "s1" and engine.requests[0].max_tokens == 50


def test_chat_only_engines_get_the_conversation_as_messages(tmp_path: Path) -> None:
    engine = ScriptedEngine([call(("count_lines", {})), say("Zero.")])
    engine.accepts_prompt = False
    a = Agent(engine, tools=file_tools(tmp_path), store=tmp_path / "s.db",
              config=AgentConfig(date_in_task=False))
    assert a.run_sync("count").answer == "Zero."
    second = engine.requests[1]
    assert second.tools is not None and second.tools[0]["function"]["name"] == "append_line"
    assert second.messages is not None
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert second.messages[2]["reasoning_content"]  # V4's API needs it back with tool calls


class Silent(Engine):
    """An engine whose stream ends without its Finished record."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta(text="half")


def test_a_stream_without_a_result_is_an_engine_error() -> None:
    async def main() -> None:
        async for _ in generate(Silent(), "x", CallSpec(max_tokens=5), Generation()):
            pass

    with pytest.raises(EngineError, match="without a result"):
        anyio.run(main)
