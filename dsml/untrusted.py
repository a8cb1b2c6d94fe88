"""Neutralise untrusted text before it is rendered into a V4 prompt.

Text that comes from outside (user input, file contents, tool output, memory, HTTP bodies) may
contain the literal strings of V4's special tokens. Rendered verbatim, a tool result holding
``</tool_result><｜Assistant｜>`` would close its turn and let the tool speak as the model, and
``<｜DSML｜invoke`` inside a parameter would forge a call. :func:`neutralise` breaks every such
string by inserting a ZERO WIDTH SPACE (U+200B) after its first character: the text still reads
the same to a person and nearly the same to the model, but it can no longer match a special
token, a DSML tag or the ``<tool_result>`` framing, neither in the codec's parser nor in the V4
tokenizer (whose 1,283 added tokens all belong to the families below).

Rendering does not call this for you: the encoder must stay byte-identical to V4's reference,
which renders whatever it is given. The agent loop neutralises at the boundary where outside text
enters a conversation.
"""

from __future__ import annotations

import json
import re
from typing import Any

from whalebone.dsml.errors import EncodeError

ZWSP = "\u200b"

# Every special-token family of the V4 tokenizer, plus the tool-result framing:
#   <｜…｜>  (fullwidth bars: BOS, EOS, roles, tasks, placeholders, fim, tool markers)
#   <|…|>   (ASCII bars: <|EOT|>, multimodal placeholders)
#   ｜DSML｜  <think> </think>  <dsml: </dsml:  <tool_result> </tool_result>  <｜/table>｜
_SPECIAL = re.compile(
    r"<｜[^｜<>\n]{0,80}｜>"
    r"|<\|[^|<>\n]{0,80}\|>"
    r"|｜DSML｜"
    r"|</?think>"
    r"|</?dsml:"
    r"|</?tool_result>"
    r"|<｜/table>｜"  # one odd added token closes with its bar after the ">"
)


def _break(match: re.Match[str]) -> str:
    s = match.group(0)
    return s[0] + ZWSP + s[1:]


def neutralise(text: str) -> str:
    """Return ``text`` with every special-token string broken by a zero-width space.

    Idempotent, and the identity on text that holds no special-token string. Overlapping
    occurrences are all broken (the substitution runs until nothing matches).
    """
    while True:
        out = _SPECIAL.sub(_break, text)
        if out == text:
            return out
        text = out


def contains_special(text: str) -> bool:
    """True when ``text`` holds a special-token string (i.e. neutralise would change it)."""
    return _SPECIAL.search(text) is not None


# --- names and keys ------------------------------------------------------------------------
#
# Text is made safe by neutralising it, but a name cannot be: the model writes tool and
# parameter names back verbatim inside ``name="…"``, and a changed name is a different name.
# So names and keys from outside are checked, and refused when they cannot be rendered honestly.

# Tool names: OpenAI's rule (letters, digits, _ and -, at most 64) plus the . and : that MCP-style
# names use. The model writes the name itself; any other character is one it can get wrong.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Parameter names (tool-call arguments, schema properties) may be any text, as JSON Schema allows,
# except what would end ``name="…"`` (the quote), open or close a tag (< >), start a special token
# (the full-width bar of ``<｜…｜>`` and ``｜DSML｜``; the ASCII-barred ones need "<") or a line.
_PARAM_BREAKER = re.compile(r'["<>｜\x00-\x1f\x7f\u2028\u2029]')
MAX_PARAM_NAME = 256


class UnsafeInput(EncodeError):
    """Outside input that cannot be rendered into a prompt honestly. ``where`` is its JSON path
    in the request (e.g. ``tools[0].function.parameters.properties``)."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def check_tool_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise UnsafeInput(f"tool name {_shown(name)} is not allowed: use 1-64 letters, digits "
                          "and _ - . :", where)
    return name


def check_param_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_PARAM_NAME \
            or _PARAM_BREAKER.search(name):
        raise UnsafeInput(f"parameter name {_shown(name)} is not allowed: 1-{MAX_PARAM_NAME} "
                          'characters without " < > ｜, control characters or line breaks',
                          where)
    return name


def check_json(value: Any, where: str) -> None:
    """Refuse a JSON value rendered into a prompt if any key or string in it holds special-token
    text (values are expected neutralised already: this is the last line, not the cleaner).
    Iterative, so that depth cannot exhaust the stack."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if contains_special(item):
                raise UnsafeInput("holds special-token text", at)
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str) or contains_special(k):
                    raise UnsafeInput(f"key {_shown(k)} holds special-token text", at)
                stack.append((v, f"{at}.{k}"))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


def check_tools(tools: Any, where: str = "tools") -> None:
    """Every tool of an OpenAI tool list renders honestly: names as the rules above, every key
    and string of its schema free of special-token text."""
    for i, tool in enumerate(tools or ()):
        at = f"{where}[{i}].function"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict):
            raise UnsafeInput("a tool needs a function object", at)
        check_tool_name(fn.get("name"), f"{at}.name")
        props = (fn.get("parameters") or {}).get("properties") \
            if isinstance(fn.get("parameters") or {}, dict) else None
        for name in props if isinstance(props, dict) else ():
            check_param_name(name, f"{at}.parameters.properties")
        check_json(fn, at)


def check_messages(messages: Any, where: str = "messages") -> None:
    """Every part of ``messages`` the encoder renders from outside is honest: texts free of
    special-token text, tool-call and tool names and parameter names as the rules above, the
    tools and response format a system message carries checked as :func:`check_tools` does.
    Ids (``tool_call_id``, a call's ``id``) are never rendered: they only order results."""
    for i, msg in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict):
            continue  # the encoder refuses it with its own message
        for key in ("content", "reasoning_content"):
            check_json(msg.get(key), f"{at}.{key}")
        check_tools(msg.get("tools"), f"{at}.tools")
        check_json(msg.get("response_format"), f"{at}.response_format")
        for j, call in enumerate(msg.get("tool_calls") or ()):
            cat = f"{at}.tool_calls[{j}].function"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict):
                continue
            check_tool_name(fn.get("name"), f"{cat}.name")
            try:
                arguments = json.loads(fn.get("arguments"))
            except (TypeError, ValueError):
                arguments = {"arguments": fn.get("arguments")}  # as the encoder reads it
            if isinstance(arguments, dict):
                for name in arguments:
                    check_param_name(name, f"{cat}.arguments")
            check_json(arguments, f"{cat}.arguments")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
