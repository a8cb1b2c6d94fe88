"""Write tool calls and assistant turns exactly as a V4 model writes them.

The encoder renders history through these functions, and training data is written with them,
so there is one definition of what a well-formed completion looks like.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from whalebone.dsml import tokens as T


def to_json(value: Any) -> str:
    """JSON as the reference writes it: compact separators of json.dumps, non-ASCII kept."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(value, ensure_ascii=True)


def emit_parameter(name: str, value: Any) -> str:
    """One ``<｜DSML｜parameter …>`` line: strings raw with ``string="true"``, else JSON."""
    if isinstance(value, str):
        return f'<{T.DSML}parameter name="{name}" string="true">{value}</{T.DSML}parameter>'
    return f'<{T.DSML}parameter name="{name}" string="false">{to_json(value)}</{T.DSML}parameter>'


def emit_invoke(name: str, arguments: Mapping[str, Any]) -> str:
    """One ``<｜DSML｜invoke>`` element. No arguments still leaves the (empty) parameter line."""
    params = "\n".join(emit_parameter(k, v) for k, v in arguments.items())
    return f'<{T.DSML}invoke name="{name}">\n{params}\n</{T.DSML}invoke>'


def emit_tool_calls(calls: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """The whole block as it follows the content: ``\\n\\n<｜DSML｜tool_calls>…</…>``."""
    invokes = "\n".join(emit_invoke(name, args) for name, args in calls)
    return f"\n\n{T.TOOL_CALLS_OPEN}\n{invokes}\n{T.TOOL_CALLS_CLOSE}"


def emit_completion(
    content: str = "",
    *,
    reasoning: str | None = None,
    tool_calls: Iterable[tuple[str, Mapping[str, Any]]] = (),
    eos: bool = True,
) -> str:
    """What the model writes after ``<｜Assistant｜><think>`` (reasoning given) or ``</think>``.

    ``reasoning=None`` means chat mode: no reasoning part at all.
    """
    calls = list(tool_calls)
    text = "" if reasoning is None else reasoning + T.THINK_END
    text += content
    if calls:
        text += emit_tool_calls(calls)
    return text + (T.EOS if eos else "")
