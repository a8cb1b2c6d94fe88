from __future__ import annotations

import json

import pytest
from conftest import VECTOR_MODES, load_vector

from whalebone.dsml import tokens as T
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.errors import EncodeError
from whalebone.dsml.templates import REASONING_EFFORT_MAX

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def call(call_id: str, name: str, args: dict) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


@pytest.mark.parametrize(("n", "mode"), VECTOR_MODES)
def test_published_vectors_render_byte_identically(n: int, mode: str) -> None:
    messages, expected = load_vector(n)
    assert encode_messages(messages, mode) == expected


def test_input_messages_are_not_mutated() -> None:
    messages, _ = load_vector(1)
    before = json.dumps(messages, sort_keys=True)
    encode_messages(messages, "thinking")
    assert json.dumps(messages, sort_keys=True) == before


def test_tool_results_are_merged_into_one_user_turn_in_call_order() -> None:
    messages = [
        {"role": "system", "content": "sys", "tools": [TOOL]},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [
            call("a", "get_weather", {"city": "A"}), call("b", "get_weather", {"city": "B"})]},
        {"role": "tool", "tool_call_id": "b", "content": "rainy"},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "user", "content": "and?"},
    ]
    text = encode_messages(messages, "chat")
    assert text.endswith(
        "<｜User｜><tool_result>sunny</tool_result>\n\n<tool_result>rainy</tool_result>"
        "\n\nand?<｜Assistant｜></think>"
    )


def test_drop_thinking_keeps_only_reasoning_after_the_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
        {"role": "developer", "content": "dev note"},
        {"role": "user", "content": "q2"},
    ]
    dropped = encode_messages(messages, "thinking")
    assert "r1" not in dropped and "dev note" not in dropped
    assert dropped.endswith("<｜User｜>q2<｜Assistant｜><think>")
    kept = encode_messages(messages, "thinking", drop_thinking=False)
    assert "<｜Assistant｜><think>r1</think>a1<｜end▁of▁sentence｜>" in kept
    assert "dev note" in kept


def test_tools_switch_drop_thinking_off() -> None:
    messages = [
        {"role": "system", "content": "s", "tools": [TOOL]},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
        {"role": "user", "content": "q2"},
    ]
    assert "<think>r1</think>a1" in encode_messages(messages, "thinking")


def test_reasoning_effort_max_prefixes_the_prompt_in_thinking_mode_only() -> None:
    messages = [{"role": "user", "content": "hi"}]
    thinking = encode_messages(messages, "thinking", reasoning_effort="max")
    assert thinking == T.BOS + REASONING_EFFORT_MAX + "<｜User｜>hi<｜Assistant｜><think>"
    assert REASONING_EFFORT_MAX not in encode_messages(messages, "chat", reasoning_effort="max")
    assert encode_messages(messages, "thinking", reasoning_effort="high") == encode_messages(
        messages, "thinking")


def test_response_format_section() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x"}}
    text = encode_messages([{"role": "system", "content": "s", "response_format": schema},
                            {"role": "user", "content": "u"}], "chat")
    assert "s\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to " \
           'reply:\n{"type": "json_schema", "json_schema": {"name": "x"}}<｜User｜>' in text


def test_task_tokens_and_wo_eos() -> None:
    text = encode_messages([{"role": "user", "content": "title me", "task": "title"}], "chat")
    assert text == T.BOS + "<｜User｜>title me<｜title｜>"
    text = encode_messages([{"role": "user", "content": "u"},
                            {"role": "assistant", "content": "partial", "wo_eos": True}], "chat")
    assert text.endswith("</think>partial")


def test_context_renders_only_the_continuation_without_bos() -> None:
    context = [{"role": "user", "content": "q1"}]
    messages = [{"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    whole = encode_messages(context + messages, "chat")
    part = encode_messages(messages, "chat", context=context)
    assert whole == encode_messages(context, "chat") + part
    assert not part.startswith(T.BOS)


def test_no_bos_when_asked() -> None:
    assert encode_messages([{"role": "user", "content": "u"}], "chat",
                           add_default_bos_token=False) == "<｜User｜>u<｜Assistant｜></think>"


@pytest.mark.parametrize(
    ("messages", "kwargs", "needle"),
    [
        ([{"role": "user", "content": "u"}], {"thinking_mode": "fast"}, "thinking_mode"),
        ([{"role": "user", "content": "u"}], {"reasoning_effort": "low"}, "reasoning_effort"),
        ([{"role": "robot", "content": "u"}], {}, "messages[0] has unknown role 'robot'"),
        ([{"role": "user", "content": None}], {}, "messages[0] (user) content must be a string"),
        ([{"role": "user", "content": "u"}, {"role": "developer", "content": ""}], {},
         "messages[1] (developer) needs non-empty"),
        ([{"role": "user", "content": "u"}, {"role": "assistant", "tool_calls": [{"x": 1}]}],
         {}, "messages[1] (assistant) tool call needs function.name"),
        ([{"role": "user", "content": "u"}, {"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "[1, 2]"}}]}], {}, "JSON object"),
        ([{"role": "user", "content": "u", "task": "dance"}], {}, "invalid task 'dance'"),
        (["not a dict"], {}, "messages[0] is a str"),
    ],
)
def test_rejected_inputs_raise_encode_error_naming_the_message(
    messages: list, kwargs: dict, needle: str
) -> None:
    mode = kwargs.pop("thinking_mode", "chat")
    with pytest.raises(EncodeError, match=None) as info:
        encode_messages(messages, mode, **kwargs)
    assert needle in str(info.value)


def test_non_json_arguments_render_as_one_parameter_like_the_reference() -> None:
    calls = [{"function": {"name": "f", "arguments": "not json"}}]
    messages = [{"role": "user", "content": "u"},
                {"role": "assistant", "content": "", "tool_calls": calls}]
    assert '<｜DSML｜parameter name="arguments" string="true">not json</｜DSML｜parameter>' in (
        encode_messages(messages, "chat"))


def test_messages_the_reference_drops_unseen_are_not_refused() -> None:
    # Dropping reasoning removes developer and unknown-role messages before the last user turn
    # without looking at them, and the context is never rendered: the reference accepts both.
    dropped = [{"role": "robot"}, {"role": "developer", "content": ""},
               {"role": "user", "content": "u"}]
    assert encode_messages(dropped, "thinking") == T.BOS + T.USER + "u" + T.ASSISTANT + "<think>"
    with pytest.raises(EncodeError, match="unknown role 'robot'"):
        encode_messages(dropped, "chat")  # nothing is dropped in chat mode: it is rendered
    assert (encode_messages([{"role": "user", "content": "u"}], "chat",
                            context=[{"role": "robot"}])
            == T.USER + "u" + T.ASSISTANT + T.THINK_END)


def test_options_are_checked_only_when_something_is_rendered() -> None:
    assert encode_messages([], "thinking", reasoning_effort="low") == T.BOS
