from __future__ import annotations

import itertools
import json

import pytest
from conftest import VECTOR_MODES, load_vector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import TOOLS, assistant_messages, hostile_text

from whalebone.dsml import tokens as T
from whalebone.dsml.emit import emit_completion
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.errors import ParseError
from whalebone.dsml.models import ContentDelta, ReasoningDelta, ToolCallArgumentsDelta
from whalebone.dsml.parser import CompletionParser, parse_completion

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                       "units": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"], "additionalProperties": False}}}


def block(*invokes: str) -> str:
    return f"\n\n{T.TOOL_CALLS_OPEN}\n" + "\n".join(invokes) + f"\n{T.TOOL_CALLS_CLOSE}"


def invoke(name: str, *params: tuple[str, str, str]) -> str:
    body = "\n".join(f'<｜DSML｜parameter name="{k}" string="{s}">{v}</｜DSML｜parameter>'
                     for k, s, v in params)
    return f'<｜DSML｜invoke name="{name}">\n{body}\n</｜DSML｜invoke>'


@pytest.mark.parametrize(("n", "mode"), VECTOR_MODES)
def test_assistant_turns_of_the_vectors_parse_back(n: int, mode: str) -> None:
    messages, _ = load_vector(n)
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant" or messages[i - 1].get("task"):
            continue
        prompt = encode_messages(messages[:i], mode, drop_thinking=False)
        completion = encode_messages(messages[: i + 1], mode, drop_thinking=False)[len(prompt):]
        parsed = parse_completion(completion, mode)
        assert parsed.content == (msg.get("content") or "")
        assert parsed.reasoning_content == (msg.get("reasoning_content") or "" if
                                            mode == "thinking" else "")
        want = [(tc["function"]["name"], json.loads(tc["function"]["arguments"]))
                for tc in msg.get("tool_calls") or []]
        assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == want


def test_openai_shape_matches_the_reference() -> None:
    text = "r</think>c" + block(invoke("get_weather", ("city", "true", "Paris"),
                                       ("days", "false", "3"))) + T.EOS
    assert parse_completion(text, "thinking").to_openai() == {
        "role": "assistant", "content": "c", "reasoning_content": "r",
        "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'}}],
    }


def test_call_without_parameters_has_empty_object_arguments() -> None:
    text = "x" + block('<｜DSML｜invoke name="ping">\n\n</｜DSML｜invoke>') + T.EOS
    (tc,) = parse_completion(text, "chat").tool_calls
    assert (tc.name, tc.arguments, tc.parsed_arguments) == ("ping", "{}", {})


@pytest.mark.parametrize(
    ("text", "mode", "kind"),
    [
        ("no end", "chat", "missing_eos"),
        ("reasoning only", "thinking", "missing_think_end"),
        (f"a{T.THINK_START}b{T.EOS}", "chat", "special_token"),
        (f"a{T.EOS}trailing", "chat", "text_after_end"),
        ("a" + block(invoke("f", ("x", "true", "1"))) + "junk" + T.EOS, "chat",
         "text_after_end"),
        ("a" + block(invoke("f", ("x", "true", "1"), ("x", "true", "2"))) + T.EOS, "chat",
         "duplicate_parameter"),
        ("a\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nom=\"f\">\n</｜DSML｜invoke>\n"
         + T.TOOL_CALLS_CLOSE + T.EOS, "chat", "malformed_invoke"),
        ("a" + block('<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="x">1'
                     '</｜DSML｜parameter>\n</｜DSML｜invoke>') + T.EOS, "chat",
         "malformed_parameter"),
        ("a\n\n<｜DSML｜tool_calls>\n" + invoke("f", ("x", "true", "1"))[:-5], "chat",
         "unclosed_block"),
        ("a\n\n<｜DSML｜tool_calls>X\n" + invoke("f") + "\n" + T.TOOL_CALLS_CLOSE + T.EOS,
         "chat", "malformed_block"),
    ],
)
def test_malformed_output_is_rejected_strictly_and_reported_tolerantly(
    text: str, mode: str, kind: str
) -> None:
    with pytest.raises(ParseError) as info:
        parse_completion(text, mode)
    assert info.value.kind == kind
    result = parse_completion(text, mode, strict=False)
    assert kind in [e.kind for e in result.errors]
    assert all(e.message and "\n" not in e.message for e in result.errors)
    assert result.correction().startswith("- ")


def test_tolerant_mode_keeps_the_well_formed_calls() -> None:
    good = invoke("get_weather", ("city", "true", "Oslo"))
    bad = invoke("get_weather", ("city", "true", "Rome"), ("city", "true", "Milan"))
    text = "ok" + block(good, bad, good)[:-20]  # cut inside the block
    result = parse_completion(text, "chat", strict=False)
    assert [c.parsed_arguments for c in result.valid_calls] == [{"city": "Oslo"},
                                                                {"city": "Oslo"}]
    assert {e.kind for e in result.errors} >= {"duplicate_parameter", "unclosed_block"}


def test_truncated_block_quirks_match_the_reference() -> None:
    # The reference accepts a completion that ends right after a tag or a parameter's ">\n".
    head = "c\n\n<｜DSML｜tool_calls>\n" + '<｜DSML｜invoke name="f">\n'
    param = '<｜DSML｜parameter name="x" string="true">v</｜DSML｜parameter>\n'
    assert parse_completion("c\n\n<｜DSML｜tool_calls", "chat").tool_calls == []
    assert parse_completion(head, "chat").tool_calls[0].arguments == "{}"
    assert parse_completion(head + param, "chat").tool_calls[0].arguments == '{"x": "v"}'
    assert parse_completion(head + param + "</｜DSML｜invoke", "chat").tool_calls[0].name == "f"
    with pytest.raises(ParseError):
        parse_completion(head + param + "</｜DSML｜invoke>\n", "chat")


def test_arguments_are_typed_against_the_schema() -> None:
    text = "x" + block(
        invoke("get_weather", ("city", "true", "Oslo"), ("days", "false", "2")),
        invoke("get_weather", ("city", "true", "Oslo"), ("days", "true", "two")),
        invoke("get_weather", ("city", "true", "Oslo"), ("days", "false", "[1,")),
        invoke("get_weather", ("city", "true", "Oslo"), ("wind", "true", "yes")),
        invoke("get_weather", ("city", "true", "Oslo"), ("units", "true", "kelvin")),
        invoke("get_wether", ("city", "true", "Oslo")),
        invoke("get_weather", ("days", "false", "1")),
    ) + T.EOS
    result = parse_completion(text, "chat", tools=[WEATHER])  # argument issues do not raise
    calls = result.tool_calls
    assert calls[0].ok and calls[0].parsed_arguments == {"city": "Oslo", "days": 2}
    kinds = [[e.kind for e in c.errors] for c in calls[1:]]
    assert kinds == [["type_mismatch"], ["bad_json"], ["unknown_parameter"],
                     ["type_mismatch"], ["unknown_tool"], ["missing_parameter"]]
    assert result.valid_calls == [calls[0]]
    assert "parameter 'days' must be integer, got string" in calls[1].errors[0].message


def test_streaming_events_carry_deltas_that_add_up() -> None:
    text = "think</think>hello\n" + block(invoke("get_weather", ("city", "true", 'Os"lo\n'),
                                                 ("days", "false", "3"))) + T.EOS
    parser = CompletionParser("thinking")
    events = [e for ch in text for e in parser.feed(ch)] + parser.close()
    result = parser.result
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "think"
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "hello\n"
    args = "".join(e.delta for e in events if isinstance(e, ToolCallArgumentsDelta))
    assert args == result.tool_calls[0].arguments == '{"city": "Os\\"lo\\n", "days": 3}'
    types = [e.type for e in events]
    assert types.index("tool_call_begin") < types.index("tool_call_arguments_delta")
    assert types[-2:] == ["tool_call_end", "end"]


def test_no_part_of_a_tag_is_ever_emitted_as_content() -> None:
    text = "a\n\n<｜DSML｜tool_calls>\n" + invoke("f") + "\n" + T.TOOL_CALLS_CLOSE + T.EOS
    parser = CompletionParser("chat")
    deltas = [e.text for ch in text for e in parser.feed(ch) if isinstance(e, ContentDelta)]
    assert "".join(deltas) == "a"


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def completions(draw: st.DrawFn) -> tuple[str, str]:
    thinking = draw(st.booleans())
    msg = draw(assistant_messages(thinking=thinking))
    calls = [(tc["function"]["name"], json.loads(tc["function"]["arguments"]))
             for tc in msg.get("tool_calls", [])]
    text = emit_completion(msg["content"], reasoning=msg.get("reasoning_content"),
                           tool_calls=calls, eos=draw(st.booleans()))
    # Damage it sometimes: truncate, or splice in hostile text.
    how = draw(st.sampled_from(["keep", "keep", "cut", "splice"]))
    if how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(hostile_text) + text[at:]
    return ("thinking" if thinking else "chat"), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completions(), st.lists(st.integers(0, 10**6), max_size=12), st.booleans())
def test_any_chunking_gives_the_one_shot_result(
    case: tuple[str, str], cuts: list[int], one_char: bool
) -> None:
    mode, text = case
    expected = parse_completion(text, mode, tools=TOOLS, strict=False)
    parser = CompletionParser(mode, tools=TOOLS)
    chunks = list(text) if one_char else _chunks(text, cuts)
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.close()
    assert parser.result == expected
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == expected.content
    for call in expected.tool_calls:
        streamed = "".join(e.delta for e in events
                           if isinstance(e, ToolCallArgumentsDelta) and e.index == call.index)
        assert streamed == call.arguments


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["chat", "thinking"]))
def test_tolerant_mode_never_raises_on_arbitrary_text(text: str, mode: str) -> None:
    result = parse_completion(text, mode, strict=False)
    for special in (T.BOS, T.EOS, T.THINK_START, T.THINK_END, T.DSML):
        assert special not in result.content and special not in result.reasoning_content
