"""Hypothesis strategies for conversations, completions and hostile text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from whalebone.dsml import tokens as T
from whalebone.dsml.untrusted import neutralise

# Fragments that make hostile text: special tokens, their pieces, DSML tags and framing.
FRAGMENTS = [
    T.BOS, T.EOS, T.USER, T.ASSISTANT, T.LATEST_REMINDER, T.THINK_START, T.THINK_END, T.DSML,
    T.TOOL_CALLS_OPEN, T.TOOL_CALLS_CLOSE, T.TOOL_CALLS_START, T.INVOKE_START, T.INVOKE_END,
    T.PARAM_START, T.PARAM_END, T.TOOL_RESULT_OPEN, T.TOOL_RESULT_CLOSE, *T.TASK_TOKENS.values(),
    "<｜", "｜>", "｜", "<", ">", "</", "\n", "\n\n", '"', '">\n', ' string="true">',
    "<|EOT|>", "<dsml:", "<｜/table>｜", "<｜fim▁hole｜>", "｜DSML", "DSML｜",
]

plain_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30
)
hostile_text = st.lists(st.one_of(plain_text, st.sampled_from(FRAGMENTS)), max_size=8).map(
    "".join
)
# What the agent would put in a prompt: any text, neutralised.
safe_text = st.one_of(plain_text, hostile_text).map(neutralise)
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32), safe_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(names, inner, max_size=3)),
    max_leaves=6,
)
arguments = st.dictionaries(names, st.one_of(safe_text, json_values), max_size=4)


@st.composite
def tool_calls(draw: st.DrawFn, prefix: str = "call") -> list[dict[str, Any]]:
    n = draw(st.integers(0, 3))
    return [
        {"id": f"{prefix}_{i}", "type": "function",
         "function": {"name": draw(names), "arguments": json.dumps(draw(arguments))}}
        for i in range(n)
    ]


@st.composite
def assistant_messages(draw: st.DrawFn, thinking: bool = True) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": draw(safe_text)}
    if thinking:
        msg["reasoning_content"] = draw(safe_text)
    calls = draw(tool_calls())
    if calls:
        msg["tool_calls"] = calls
    return msg


TOOLS = [{"type": "function", "function": {
    "name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}}]


@st.composite
def conversations(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], bool]:
    """(thinking mode, messages, drop_thinking): a random agent-like conversation."""
    mode = draw(st.sampled_from(["chat", "thinking"]))
    drop = draw(st.booleans())
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        system: dict[str, Any] = {"role": "system", "content": draw(safe_text)}
        if draw(st.booleans()):
            system["tools"] = TOOLS
        messages.append(system)
    for turn in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 4)) == 0:
            messages.append({"role": "latest_reminder", "content": draw(safe_text)})
        role = draw(st.sampled_from(["user", "user", "user", "developer"]))
        messages.append({"role": role, "content": draw(safe_text) or "x"})
        if draw(st.booleans()):
            msg = draw(assistant_messages(thinking=mode == "thinking"))
            for tc in msg.get("tool_calls", []):
                tc["id"] = f"t{turn}_{tc['id']}"
            messages.append(msg)
            calls = msg.get("tool_calls", [])
            results = [{"role": "tool", "tool_call_id": tc["id"], "content": draw(safe_text)}
                       for tc in calls]
            messages.extend(draw(st.permutations(results)) if results else [])
    return mode, messages, drop
