"""Reading OpenAI/DeepSeek request bodies: rendering, neutralising, tool_choice, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from whalebone.dsml import encode_messages
from whalebone.dsml import tokens as T
from whalebone.engine.serve.chat_request import read_chat, read_completion
from whalebone.engine.serve.http import ApiError

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]


def chat(**body: Any) -> Any:
    return read_chat({"model": "m", **body}, context_window=1000)


def test_the_prompt_is_the_reference_rendering_with_tools_in_the_system_message() -> None:
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    call = chat(messages=msgs, tools=TOOLS)
    expected = encode_messages([{**msgs[0], "tools": TOOLS}, msgs[1]], "thinking")
    assert call.request.prompt == expected and call.prefill == ""
    assert call.request.thinking_mode == "thinking" and call.request.max_tokens == 1000
    # Without a system message, an empty one carries the tools.
    bare = chat(messages=msgs[1:], tools=TOOLS)
    assert bare.request.prompt == encode_messages(
        [{"role": "system", "content": "", "tools": TOOLS}, msgs[1]], "thinking")


def test_text_parts_are_joined_and_outside_strings_neutralised() -> None:
    call = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": f"b{T.BOS}"}]}],
        tools=[{"type": "function", "function": {"name": "f",
                                                  "description": f"evil {T.EOS}"}}])
    prompt = call.request.prompt
    assert prompt.count(T.BOS) == 1 and T.EOS not in prompt  # only the real BOS
    assert call.request.messages[0]["content"].startswith("a\n\nb<")


def test_assistant_tool_calls_keep_their_arguments() -> None:
    msgs = [{"role": "user", "content": "U"},
            {"role": "assistant", "content": "", "reasoning_content": "R", "tool_calls": [
                {"id": "c", "type": "function",
                 "function": {"name": "f", "arguments": '{"q": "x"}'}}]},
            {"role": "tool", "tool_call_id": "c", "content": "result"}]
    call = chat(messages=msgs, tools=TOOLS)
    assert '<｜DSML｜parameter name="q" string="true">x</｜DSML｜parameter>' in \
        call.request.prompt
    assert "R</think>" in call.request.prompt


def test_tool_choice_none_hides_tools_and_required_prefills_the_block() -> None:
    msgs = [{"role": "user", "content": "U"}]
    hidden = chat(messages=msgs, tools=TOOLS, tool_choice="none")
    assert hidden.tools is None and "## Tools" not in hidden.request.prompt
    forced = chat(messages=msgs, tools=TOOLS, tool_choice="required",
                  thinking={"type": "disabled"})
    assert forced.prefill == "\n\n" + T.TOOL_CALLS_OPEN + "\n"
    assert forced.request.prompt.endswith(T.THINK_END + forced.prefill)


@pytest.mark.parametrize(("body", "param"), [
    ({"tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0]"),
    ({"tools": "f"}, "tools"),
    ({"stop": ["a"] * 17}, "stop"),
    ({"stream": "yes"}, "stream"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 1001}, "max_tokens"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
])
def test_bad_fields_are_named_in_the_error(body: dict[str, Any], param: str) -> None:
    base = {"messages": [{"role": "user", "content": "U"}], "tools": TOOLS,
            "thinking": {"type": "disabled"}}
    with pytest.raises(ApiError) as e:
        chat(**{**base, **body})
    assert e.value.status == 400 and e.value.param == param


def test_unrenderable_conversations_are_400_naming_the_message() -> None:
    with pytest.raises(ApiError) as e:
        chat(messages=[{"role": "user", "content": "U"}, {"role": "developer", "content": ""}])
    assert e.value.status == 400 and e.value.param == "messages[1]"
    with pytest.raises(ApiError, match="tool_call_id"):
        chat(messages=[{"role": "tool", "content": "r"}])


def test_raw_completion_bodies() -> None:
    text = read_completion({"model": "m", "prompt": ["p"], "stop": "x", "user": "s1"},
                           context_window=100)
    assert text.request.prompt == "p" and text.request.stop == ["x"]
    assert text.request.session_id == "s1" and not text.stream
    ids = read_completion({"model": "m", "prompt": [1, 2, 3]}, context_window=100)
    assert ids.request.prompt_ids == [1, 2, 3]
    for bad in ({"model": "m", "prompt": ""}, {"model": "m", "prompt": [1, -2]},
                {"model": "m", "prompt": [True]}, {"model": "m", "prompt": None},
                {"model": "m", "prompt": "p", "echo": True},
                {"model": "m", "prompt": "p", "n": 3}, {"prompt": "p"}):
        with pytest.raises(ApiError):
            read_completion(bad, context_window=100)
