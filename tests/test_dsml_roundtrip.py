"""encode -> parse round trips: what the encoder writes for an assistant turn parses back."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import TOOLS, assistant_messages, safe_text

from whalebone.dsml.emit import emit_completion
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.parser import parse_completion


def _calls(msg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(tc["function"]["name"], json.loads(tc["function"]["arguments"]))
            for tc in msg.get("tool_calls", [])]


@settings(max_examples=300, deadline=None)
@given(safe_text, st.sampled_from(["chat", "thinking"]), st.data())
def test_rendered_assistant_turn_parses_back_to_the_message(
    user: str, mode: str, data: st.DataObject
) -> None:
    msg = data.draw(assistant_messages(thinking=mode == "thinking"))
    system = {"role": "system", "content": "s", "tools": TOOLS}  # tools: append-only rendering
    prompt = encode_messages([system, {"role": "user", "content": user}], mode)
    full = encode_messages([system, {"role": "user", "content": user}, msg], mode)
    assert full.startswith(prompt)
    parsed = parse_completion(full[len(prompt):], mode)  # strict: must be accepted
    assert parsed.content == msg["content"]
    assert parsed.reasoning_content == msg.get("reasoning_content", "")
    assert [(c.name, c.parsed_arguments) for c in parsed.tool_calls] == _calls(msg)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == _calls(msg)


@settings(max_examples=200, deadline=None)
@given(assistant_messages(thinking=True))
def test_emitter_writes_what_the_encoder_writes(msg: dict[str, Any]) -> None:
    prompt = encode_messages([{"role": "user", "content": "u"}], "thinking",
                             drop_thinking=False)
    full = encode_messages([{"role": "user", "content": "u"}, msg], "thinking",
                           drop_thinking=False)
    assert full[len(prompt):] == emit_completion(
        msg["content"], reasoning=msg["reasoning_content"], tool_calls=_calls(msg))
