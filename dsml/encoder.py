"""Render a conversation as V4's prompt, byte for byte as the reference encoder does.

The pipeline is the reference's: merge ``tool`` messages into user turns, order tool results by
the order of the calls, optionally drop earlier reasoning, then render each message with the
transition token that the next message calls for. Every input the reference accepts renders
identically; inputs it rejects (with an assert or a crash) raise :class:`EncodeError` naming the
offending message. Unlike the reference, which rescans for the last user message once per
message, this renders a conversation in linear time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from whalebone.dsml import templates
from whalebone.dsml import tokens as T
from whalebone.dsml.emit import emit_invoke, to_json
from whalebone.dsml.errors import EncodeError

Message = dict[str, Any]

THINKING_MODES = ("chat", "thinking")
REASONING_EFFORTS = (None, "high", "max")
ROLES = ("system", "user", "assistant", "tool", "developer", "latest_reminder")
# Roles that survive _drop_thinking before the last user message.
_KEPT_WHEN_DROPPING = {"user", "system", "tool", "latest_reminder", "direct_search_results"}


def check_options(thinking_mode: str, reasoning_effort: str | None) -> None:
    if thinking_mode not in THINKING_MODES:
        raise EncodeError(f"thinking_mode must be 'chat' or 'thinking', not {thinking_mode!r}")
    if reasoning_effort not in REASONING_EFFORTS:
        raise EncodeError(
            f"reasoning_effort must be None, 'high' or 'max', not {reasoning_effort!r}"
        )


def validate(messages: Sequence[Mapping[str, Any]], where: str = "messages",
             dropped: frozenset[int] = frozenset()) -> None:
    """Refuse, with a clear message, every input the reference would assert on or crash on.

    ``dropped`` holds the indices of messages the reference drops unseen (developer and
    unknown-role messages before the last user turn when reasoning is dropped): it accepts
    whatever they hold, so they are not checked."""
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise EncodeError(f"{where}[{i}] is a {type(msg).__name__}, not a message dict", i)
        if i in dropped:
            continue
        role = msg.get("role")
        if role not in ROLES:
            raise EncodeError(f"{where}[{i}] has unknown role {role!r}", i)
        content = msg.get("content", "")
        if role == "user" and not isinstance(content, str):
            raise EncodeError(f"{where}[{i}] (user) content must be a string", i)
        if role == "developer" and not (content and isinstance(content, str)):
            raise EncodeError(f"{where}[{i}] (developer) needs non-empty string content", i)
        if role == "tool" and isinstance(content, list):
            for block in content:
                if not isinstance(block, Mapping):
                    raise EncodeError(f"{where}[{i}] (tool) content blocks must be dicts", i)
        if role in ("system", "developer"):
            for tool in msg.get("tools") or ():
                if not isinstance(tool, Mapping) or not isinstance(tool.get("function"), Mapping):
                    raise EncodeError(f"{where}[{i}] tools must be OpenAI {{'function': …}}", i)
        if role == "assistant":
            for tc in msg.get("tool_calls") or ():
                fn = tc.get("function") if isinstance(tc, Mapping) else None
                if not isinstance(fn, Mapping) or "name" not in fn or "arguments" not in fn:
                    raise EncodeError(
                        f"{where}[{i}] (assistant) tool call needs function.name and "
                        "function.arguments",
                        i,
                    )
                call_arguments(fn["arguments"], i)


def call_arguments(raw: Any, index: int | None = None) -> dict[str, Any]:
    """The arguments of an OpenAI tool call as the reference reads them.

    A JSON object string gives its members; anything that is not JSON (or not a string) becomes
    one parameter named ``arguments``; JSON that is not an object is refused.
    """
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return {"arguments": raw}
    if not isinstance(parsed, dict):
        raise EncodeError(
            f"tool call arguments must be a JSON object, not {type(parsed).__name__}", index
        )
    return parsed


# --- preprocessing -----------------------------------------------------------------------


def merge_tool_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """V4 has no tool role: tool results and following user text join one user turn."""
    merged: list[Message] = []
    for raw in messages:
        msg = copy.deepcopy(dict(raw))
        merge_one(merged, msg)
    return merged


def merge_one(merged: list[Message], msg: Message) -> None:
    """Append one (already copied) message to a merged list, merging where the format does."""
    role = msg.get("role")
    last = merged[-1] if merged else None
    joinable = last is not None and last.get("role") == "user" and "content_blocks" in last
    if role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": msg.get("tool_call_id", ""),
            "content": msg.get("content", ""),
        }
        if joinable:
            assert last is not None
            last["content_blocks"].append(block)
        else:
            merged.append({"role": "user", "content_blocks": [block]})
    elif role == "user":
        block = {"type": "text", "text": msg.get("content", "")}
        if joinable and last is not None and last.get("task") is None:
            last["content_blocks"].append(block)
        else:
            new: Message = {"role": "user", "content": msg.get("content", ""),
                            "content_blocks": [block]}
            for key in ("task", "wo_eos", "mask"):
                if key in msg:
                    new[key] = msg[key]
            merged.append(new)
    else:
        merged.append(msg)


def call_order(msg: Mapping[str, Any]) -> dict[str, int]:
    order: dict[str, int] = {}
    for i, tc in enumerate(msg["tool_calls"]):
        tc_id = tc.get("id") or tc.get("function", {}).get("id", "")
        if tc_id:
            order[tc_id] = i
    return order


def sort_blocks(msg: Message, order: Mapping[str, int]) -> None:
    """Put a user turn's tool results in the order of the calls (unknown ids count as 0)."""
    blocks = msg["content_blocks"]
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if len(results) <= 1 or not order:
        return
    ordered = iter(sorted(results, key=lambda b: order.get(b.get("tool_use_id", ""), 0)))
    msg["content_blocks"] = [
        next(ordered) if b.get("type") == "tool_result" else b for b in blocks
    ]


def sort_tool_results(messages: list[Message]) -> list[Message]:
    order: dict[str, int] = {}
    for msg in messages:
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            order = call_order(msg)
        elif msg.get("role") == "user" and msg.get("content_blocks"):
            sort_blocks(msg, order)
    return messages


def last_user_index(messages: Sequence[Mapping[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") in ("user", "developer"):
            return i
    return -1


def drop_thinking_messages(messages: Sequence[Message]) -> list[Message]:
    """Before the last user message: assistants lose their reasoning, developers vanish."""
    last_user = last_user_index(messages)
    out: list[Message] = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in _KEPT_WHEN_DROPPING or i >= last_user:
            out.append(msg)
        elif role == "assistant":
            stripped = dict(msg)
            stripped.pop("reasoning_content", None)
            out.append(stripped)
    return out


# --- rendering ---------------------------------------------------------------------------


def render_tools(tools: Sequence[Mapping[str, Any]]) -> str:
    schemas = "\n".join(to_json(tool["function"]) for tool in tools)
    return templates.TOOLS.replace("{tool_schemas}", schemas)


def _extras(msg: Mapping[str, Any]) -> str:
    """The tools and response-format sections a system or developer message may carry."""
    out = ""
    if msg.get("tools"):
        out += "\n\n" + render_tools(msg["tools"])
    if msg.get("response_format"):
        out += "\n\n" + templates.RESPONSE_FORMAT.format(schema=to_json(msg["response_format"]))
    return out


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        content = "\n\n".join(
            b.get("text", "") if b.get("type") == "text" else f"[Unsupported {b.get('type')}]"
            for b in content
        )
    return f"{T.TOOL_RESULT_OPEN}{content}{T.TOOL_RESULT_CLOSE}"


def _user_text(msg: Mapping[str, Any]) -> str:
    blocks = msg.get("content_blocks")
    if not blocks:
        return msg.get("content") or ""
    parts = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            parts.append(block.get("text", ""))
        elif kind == "tool_result":
            parts.append(_tool_result_text(block.get("content", "")))
        else:
            parts.append(f"[Unsupported {kind}]")
    return "\n\n".join(parts)


def render_tool_calls_block(tool_calls: Sequence[Mapping[str, Any]]) -> str:
    invokes = [
        emit_invoke(tc["function"]["name"], call_arguments(tc["function"]["arguments"]))
        for tc in tool_calls
    ]
    return "\n\n" + f"{T.TOOL_CALLS_OPEN}\n" + "\n".join(invokes) + f"\n{T.TOOL_CALLS_CLOSE}"


class Renderer:
    """Renders message ``i`` of a prepared (merged, sorted, maybe dropped) conversation.

    ``drop_thinking`` here is the *effective* flag (already off when any message has tools).
    """

    def __init__(
        self,
        messages: Sequence[Message],
        thinking_mode: str,
        drop_thinking: bool,
        reasoning_effort: str | None,
    ) -> None:
        self.messages = messages
        self.thinking = thinking_mode == "thinking"
        self.drop_thinking = drop_thinking
        self.reasoning_effort = reasoning_effort
        self.last_user = last_user_index(messages)

    def render(self, i: int) -> str:
        msg = self.messages[i]
        text = ""
        if i == 0 and self.thinking and self.reasoning_effort == "max":
            text += templates.REASONING_EFFORT_MAX
        role = msg.get("role")
        if role == "system":
            text += "{}".format(msg.get("content") or "") + _extras(msg)
        elif role == "developer":
            text += T.USER + msg["content"] + _extras(msg)
        elif role == "user":
            text += T.USER + _user_text(msg)
        elif role == "latest_reminder":
            text += T.LATEST_REMINDER + "{}".format(msg.get("content"))
        elif role == "assistant":
            text += self._assistant(i, msg)
        else:  # pragma: no cover - validate() refuses rendered unknown roles; "tool" is merged
            raise EncodeError(f"message {i} has role {role!r}, which cannot be rendered", i)
        return text + self._transition(i, msg)

    def _assistant(self, i: int, msg: Mapping[str, Any]) -> str:
        calls = render_tool_calls_block(msg["tool_calls"]) if msg.get("tool_calls") else ""
        reasoning = ""
        after_task = i > 0 and self.messages[i - 1].get("task") is not None
        if self.thinking and not after_task and (not self.drop_thinking or i > self.last_user):
            reasoning = (msg.get("reasoning_content") or "") + T.THINK_END
        eos = "" if msg.get("wo_eos", False) else T.EOS
        return "{}{}{}".format(reasoning, msg.get("content") or "", calls) + eos

    def _transition(self, i: int, msg: Mapping[str, Any]) -> str:
        """What follows a message when the model speaks next (or a task marker)."""
        nxt = self.messages[i + 1] if i + 1 < len(self.messages) else None
        if nxt is not None and nxt.get("role") not in ("assistant", "latest_reminder"):
            return ""
        task = msg.get("task")
        if task is not None:
            if task not in T.TASK_TOKENS:
                raise EncodeError(
                    f"message {i} has invalid task {task!r}; valid: {sorted(T.TASK_TOKENS)}", i
                )
            if task != "action":
                return T.TASK_TOKENS[task]
            opener = T.THINK_START if self.thinking else T.THINK_END
            return T.ASSISTANT + opener + T.TASK_TOKENS[task]
        if msg.get("role") in ("user", "developer"):
            think = self.thinking and (not self.drop_thinking or i >= self.last_user)
            return T.ASSISTANT + (T.THINK_START if think else T.THINK_END)
        return ""


def prepare(
    messages: Sequence[Mapping[str, Any]],
    thinking_mode: str,
    context: Sequence[Mapping[str, Any]] | None,
    drop_thinking: bool,
) -> tuple[list[Message], int, bool]:
    """Merge, sort and maybe drop: returns (all messages, index of the first to render,
    effective drop_thinking)."""
    raw_context = [dict(m) for m in context or ()]
    merged = merge_tool_messages(messages)
    # As the reference does: sort the raw context followed by the merged messages, so the
    # context's last tool calls order the first results; then merge and sort the context.
    merged = sort_tool_results(copy.deepcopy(raw_context) + merged)[len(raw_context):]
    ctx = sort_tool_results(merge_tool_messages(raw_context)) if raw_context else []
    full = ctx + merged
    effective_drop = drop_thinking and not any(m.get("tools") for m in full)
    if thinking_mode == "thinking" and effective_drop:
        full = drop_thinking_messages(full)
        return full, len(drop_thinking_messages(ctx)), effective_drop
    return full, len(ctx), effective_drop


def encode_messages(
    messages: Sequence[Mapping[str, Any]],
    thinking_mode: str,
    context: Sequence[Mapping[str, Any]] | None = None,
    drop_thinking: bool = True,
    add_default_bos_token: bool = True,
    reasoning_effort: str | None = None,
) -> str:
    """Render ``messages`` (OpenAI-shaped dicts) as V4's prompt text.

    ``context`` is an already-rendered conversation that ``messages`` continue: it informs the
    rendering (merging, call order, which user message is last) but is not itself rendered, and
    no BOS is written. ``drop_thinking`` drops the reasoning of turns before the last user
    message; it is switched off whenever any message carries tools.
    """
    for where, msgs in (("messages", messages), ("context", context or ())):
        for i, msg in enumerate(msgs):
            if not isinstance(msg, Mapping):
                raise EncodeError(f"{where}[{i}] is a {type(msg).__name__}, not a message dict",
                                  i)
    # The reference checks options and messages only as it renders them: the context is never
    # rendered, nor are the messages that dropping removes, so neither is refused for them.
    bos = T.BOS if add_default_bos_token and not context else ""
    dropping = thinking_mode == "thinking" and drop_thinking and not any(
        m.get("tools") for m in (*(context or ()), *messages))
    dropped = _dropped_unseen(messages) if dropping else frozenset()
    try:
        full, start, effective_drop = prepare(messages, thinking_mode, context, drop_thinking)
    except (AttributeError, KeyError, TypeError) as e:  # malformed tool calls or results
        validate(messages, dropped=dropped)  # names the message where it can
        raise EncodeError(f"the conversation cannot be rendered: {e}") from e
    if start >= len(full):  # (the reference's context can outnumber what dropping left)
        return bos
    check_options(thinking_mode, reasoning_effort)
    validate(messages, dropped=dropped)
    renderer = Renderer(full, thinking_mode, effective_drop, reasoning_effort)
    return bos + "".join(renderer.render(i) for i in range(start, len(full)))


def _dropped_unseen(messages: Sequence[Mapping[str, Any]]) -> frozenset[int]:
    """Indices of messages that dropping removes whole: any role but the kept ones (and
    assistant, which loses only its reasoning) before the last user turn. A tool message merges
    into a user turn, so it counts as one."""
    last = max((i for i, m in enumerate(messages)
                if m.get("role") in ("user", "developer", "tool")), default=-1)
    return frozenset(i for i, m in enumerate(messages[:last])
                     if m.get("role") not in _KEPT_WHEN_DROPPING | {"assistant"})
