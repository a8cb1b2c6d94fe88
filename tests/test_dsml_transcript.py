from __future__ import annotations

from typing import Any

import pytest
from conftest import VECTOR_MODES, load_vector
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import TOOLS, conversations

from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.errors import PrefixBreakError
from whalebone.dsml.transcript import Transcript


@pytest.mark.parametrize(("n", "mode"), VECTOR_MODES)
def test_vectors_rendered_message_by_message(n: int, mode: str) -> None:
    messages, expected = load_vector(n)
    transcript = Transcript(mode)
    pieces = []
    for msg in messages:
        transcript.append(msg)
        pieces.append(transcript.render())
    assert transcript.text == expected
    if not any(p.prefix_break for p in pieces):
        assert "".join(p.text for p in pieces) == expected


@settings(max_examples=250, deadline=None)
@given(conversations(), st.data())
def test_incremental_rendering_always_equals_full_encoding(
    case: tuple[str, list[dict[str, Any]], bool], data: st.DataObject
) -> None:
    mode, messages, drop = case
    transcript = Transcript(mode, drop_thinking=drop)
    text = ""
    i = 0
    while i < len(messages):
        step = data.draw(st.integers(1, 3))
        transcript.append(*messages[i: i + step])
        i += step
        render = transcript.render()
        assert render.start <= len(text)
        if render.prefix_break is None:
            assert render.start == len(text)
        else:
            assert render.start == render.prefix_break.offset
            assert text[: render.start] == transcript.text[: render.start]
            assert text[render.start:render.start + 1] != transcript.text[
                render.start:render.start + 1] or len(text) > len(transcript.text)
        text = text[: render.start] + render.text
        assert text == transcript.text == encode_messages(
            messages[:i], mode, drop_thinking=drop)


def agent_turns(n: int) -> list[dict[str, Any]]:
    """An agent loop's conversation: tools on the system message, calls and results."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are an agent.",
                                   "tools": TOOLS},
                                  {"role": "user", "content": "start"}]
    for i in range(n):
        msgs.append({"role": "assistant", "content": "", "reasoning_content": f"step {i}",
                     "tool_calls": [{"id": f"c{i}", "type": "function",
                                     "function": {"name": "f", "arguments": f'{{"i": {i}}}'}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i}"})
    return msgs


def test_agent_loop_is_append_only_in_thinking_mode_with_tools() -> None:
    transcript = Transcript("thinking")
    for msg in agent_turns(20):
        transcript.append(msg)
        assert transcript.render().prefix_break is None


def test_thinking_without_tools_reports_the_break_with_offset_and_cause() -> None:
    transcript = Transcript("thinking")
    transcript.append({"role": "user", "content": "q1"})
    first = transcript.render().text
    transcript.append({"role": "assistant", "content": "a1", "reasoning_content": "r1"},
                      {"role": "user", "content": "q2"})
    render = transcript.render()
    brk = render.prefix_break
    assert brk is not None
    # The generation prompt of q1, "<think>", becomes "</think>": they differ after the "<".
    assert brk.offset == first.index("<think>") + 1
    assert brk.message_index == 0 and "drop_thinking" in brk.cause
    assert brk.before.startswith("think>") and brk.after.startswith("/think>")


def test_results_appended_one_by_one_after_rendering_break_the_prefix() -> None:
    msgs = agent_turns(1)
    msgs[2]["tool_calls"].append({"id": "c9", "type": "function",
                                  "function": {"name": "f", "arguments": "{}"}})
    transcript = Transcript("chat")
    transcript.append(*msgs[:4])  # the first result only
    transcript.render()
    transcript.append({"role": "tool", "tool_call_id": "c9", "content": "late"})
    brk = transcript.render().prefix_break
    assert brk is not None and "merged into the user turn" in brk.cause


def test_strict_transcript_raises_and_reset_reports_edits() -> None:
    strict = Transcript("thinking", strict=True)
    strict.append({"role": "user", "content": "q1"})
    strict.render()
    strict.append({"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"})
    with pytest.raises(PrefixBreakError):
        strict.render()

    transcript = Transcript("chat")
    messages = [{"role": "system", "content": "s"}, {"role": "latest_reminder",
                                                     "content": "2026-11-23"},
                {"role": "user", "content": "hi"}]
    transcript.append(*messages)
    transcript.render()
    messages[1] = {"role": "latest_reminder", "content": "2026-11-24"}
    render = transcript.reset(messages)
    assert render.prefix_break is not None
    assert render.prefix_break.offset == transcript.text.index("2026-11-24") + 9
    assert "edited" in render.prefix_break.cause
