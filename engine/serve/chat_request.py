"""Read an OpenAI/DeepSeek-shaped request into a :class:`GenerationRequest`, refusing bad input
with an :class:`ApiError` that names the offending field.

What the server accepts, field by field, is what DeepSeek's API accepts (``thinking``,
``reasoning_effort``, tools and ``tool_choice``; reasoning sent back on assistant messages that
called tools); unknown fields are ignored as OpenAI-compatible servers do. Everything the client
sends is untrusted: every string that reaches the prompt is :func:`neutralise`\\ d, so a message
can never forge a turn, a tool call or a special token. Names and keys cannot be neutralised (the
model writes a name back verbatim), so :func:`check_request` refuses, with a 400 naming the field,
any tool name, parameter name or JSON key that could not be rendered honestly; it walks everything
the encoder renders, so a field that escaped cleaning is refused rather than rendered raw.

``tool_choice`` has no counterpart in V4's prompt format, so the server enforces it the only way
a decoder can: ``"required"`` or a named function pre-fills the start of the DSML tool-call block
after the prompt (the model can only continue it), ``"none"`` renders the conversation without
its tool list. Like DeepSeek's API, forcing a call is refused in thinking mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from whalebone.dsml import encode_messages, neutralise
from whalebone.dsml import tokens as T
from whalebone.dsml.errors import EncodeError
from whalebone.dsml.untrusted import UnsafeInput, check_messages, check_tools
from whalebone.engine.base import GenerationRequest, SamplingParams
from whalebone.engine.serve.http import ApiError

DEFAULT_MAX_TOKENS = 4096
MAX_STOP_STRINGS = 16
# DeepSeek's mapping of requested effort to the two V4 knows (its "Thinking Mode" guide).
EFFORTS = {"minimal": "high", "low": "high", "medium": "high", "high": "high", "xhigh": "high",
           "max": "max", "ultra": "max"}
ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass
class ChatCall:
    """A validated chat request: what to send the engine and how to shape the answer."""

    request: GenerationRequest
    prefill: str  # completion text forced by tool_choice, fed to the parser before the model's
    tools: list[dict[str, Any]] | None  # the tools the model was shown, for argument checks
    stream: bool  # usage always rides on the last chunk, as DeepSeek sends it


@dataclass
class CompletionCall:
    """A validated raw-completion request."""

    request: GenerationRequest
    stream: bool


def _clean(value: Any) -> Any:
    """Neutralise every string value inside a JSON value (keys are names: checked, not changed).
    """
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, null, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}[{j}]: only text parts are supported",
                               param=f"{where}[{j}]")
            parts.append(part["text"])
        return "\n\n".join(parts)
    raise ApiError(400, f"{where} must be a string or a list of text parts", param=where)


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise ApiError(400, f"{where} must be a list", param=where)
    out = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ApiError(400, f"{at} needs function.name", param=at)
        raw = fn.get("arguments", "{}")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw or "{}")
            except ValueError:
                raise ApiError(400, f"{at}.function.arguments is not valid JSON",
                               param=f"{at}.function.arguments") from None
        if not isinstance(raw, dict):
            raise ApiError(400, f"{at}.function.arguments must be a JSON object",
                           param=f"{at}.function.arguments")
        out.append({"id": call.get("id"), "type": "function",
                    "function": {"name": neutralise(fn["name"]),
                                 # the codec reads arguments as a JSON string, as OpenAI sends
                                 "arguments": json.dumps(_clean(raw), ensure_ascii=False)}})
    return out


def read_messages(raw: Any, thinking: bool) -> list[dict[str, Any]]:
    """Messages in the codec's shape, every outside string neutralised."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ApiError(400, f"{where} must be an object", param=where)
        role = msg.get("role")
        if role not in ROLES:
            raise ApiError(400, f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}",
                           param=f"{where}.role")
        m: dict[str, Any] = {"role": role,
                             "content": neutralise(_text(msg.get("content"), f"{where}.content"))}
        if role == "tool":
            if not isinstance(msg.get("tool_call_id"), str):
                raise ApiError(400, f"{where} (tool) needs tool_call_id",
                               param=f"{where}.tool_call_id")
            m["tool_call_id"] = msg["tool_call_id"]
        if role == "assistant":
            reasoning = msg.get("reasoning_content")
            if reasoning is not None:
                m["reasoning_content"] = neutralise(_text(reasoning, f"{where}.reasoning_content"))
            if msg.get("tool_calls"):
                m["tool_calls"] = _tool_calls(msg["tool_calls"], f"{where}.tool_calls")
                if thinking and reasoning is None:
                    # DeepSeek's API answers 400 here too: the reasoning behind a call is part
                    # of the prompt in thinking mode, and dropping it breaks the cache.
                    raise ApiError(400, f"{where}: in thinking mode an assistant message with "
                                   "tool_calls must send its reasoning_content back",
                                   param=f"{where}.reasoning_content")
        out.append(m)
    return out


def read_tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise ApiError(400, "tools must be a list", param="tools")
    out = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" \
                or not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                or not fn["name"]:
            raise ApiError(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": "
                           "{\"name\": …, \"parameters\": {…}}}", param=f"tools[{i}]")
        if not isinstance(fn.get("parameters", {}), dict):
            raise ApiError(400, f"tools[{i}].function.parameters must be a JSON schema object",
                           param=f"tools[{i}].function.parameters")
        out.append({"type": "function", "function": _clean(fn)})
    return out


def check_request(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
    """The gate between a client's request and the prompt: a 400 for any name or key that cannot
    be rendered honestly (the rules are :mod:`whalebone.dsml.untrusted`'s)."""
    try:
        check_messages(messages)
        check_tools(tools)
    except UnsafeInput as e:
        raise ApiError(400, str(e), param=e.where, code="unsafe_name") from None


def _prefill(choice: Any, tools: list[dict[str, Any]] | None, thinking: bool) -> tuple[str, bool]:
    """(completion prefix forced by tool_choice, whether the tools are shown at all)."""
    if choice is None or choice == "auto":
        return "", True
    if choice == "none":
        return "", False
    named = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str):
            raise ApiError(400, "tool_choice must be 'none', 'auto', 'required' or "
                           "{\"type\": \"function\", \"function\": {\"name\": …}}",
                           param="tool_choice")
        named = fn["name"]
    elif choice != "required":
        raise ApiError(400, f"tool_choice {choice!r} is not one of 'none', 'auto', 'required'",
                       param="tool_choice")
    if not tools:
        raise ApiError(400, "tool_choice forces a tool call but no tools were given",
                       param="tool_choice")
    if thinking:
        raise ApiError(400, "tool_choice 'required' or a named function is not supported in "
                       "thinking mode; disable thinking or use 'auto'", param="tool_choice")
    text = "\n\n" + T.TOOL_CALLS_OPEN + "\n"
    if named is not None:
        if named not in {t["function"]["name"] for t in tools}:
            raise ApiError(400, f"tool_choice names {named!r}, which is not among the tools",
                           param="tool_choice")
        text += f'<{T.DSML}invoke name="{named}">\n'
    return text, True


def _number(body: dict[str, Any], key: str, kind: type, default: Any, lo: float, hi: float
            ) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ApiError(400, f"{key} must be {'a number' if kind is float else 'an integer'}",
                       param=key)
    if not lo <= value <= hi:
        raise ApiError(400, f"{key} must be between {lo} and {hi}, not {value}", param=key)
    return kind(value)


def read_sampling(body: dict[str, Any], context_window: int) -> dict[str, Any]:
    """The fields chat and raw completions share: limits, sampling, stop strings, streaming."""
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", int,
                         min(DEFAULT_MAX_TOKENS, context_window), 1, context_window)
    n = _number(body, "n", int, 1, 1, 1_000_000)
    if n != 1:
        raise ApiError(400, "n must be 1: one completion per request", param="n")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) \
            or len(stop) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop must be a string or a list of at most {MAX_STOP_STRINGS} "
                       "non-empty strings", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", param="stream_options")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model must be a non-empty string", param="model")
    sampling = SamplingParams(temperature=_number(body, "temperature", float, 0.0, 0.0, 2.0),
                              top_p=_number(body, "top_p", float, 1.0, 1e-9, 1.0),
                              seed=_number(body, "seed", int, None, -(2**63), 2**63 - 1))
    return {"max_tokens": max_tokens, "stop": stop, "stream": stream, "sampling": sampling}


def read_chat(body: dict[str, Any], *, context_window: int) -> ChatCall:
    """Validate a POST /v1/chat/completions body and render its prompt."""
    common = read_sampling(body, context_window)
    thinking_opt = body.get("thinking") or {"type": "enabled"}
    if not isinstance(thinking_opt, dict) or thinking_opt.get("type") not in ("enabled",
                                                                              "disabled"):
        raise ApiError(400, "thinking must be {\"type\": \"enabled\"} or {\"type\": "
                       "\"disabled\"}", param="thinking")
    thinking = thinking_opt["type"] == "enabled"
    effort_raw = body.get("reasoning_effort")
    if effort_raw is not None and effort_raw not in EFFORTS:
        raise ApiError(400, f"reasoning_effort must be one of {', '.join(EFFORTS)}",
                       param="reasoning_effort")
    effort = EFFORTS[effort_raw] if thinking and effort_raw is not None else None
    if body.get("response_format") not in (None, {"type": "text"}):
        raise ApiError(400, "response_format other than text is not supported",
                       param="response_format")
    if body.get("logprobs"):
        raise ApiError(400, "logprobs are not supported", param="logprobs")
    messages = read_messages(body.get("messages"), thinking)
    tools = read_tools(body.get("tools"))
    check_request(messages, tools)
    prefill, show_tools = _prefill(body.get("tool_choice"), tools, thinking)
    shown = tools if show_tools else None
    rendered = messages
    if shown:
        # V4 reads the tool list from a system message; OpenAI sends it beside the messages.
        if rendered[0]["role"] == "system":
            rendered = [{**rendered[0], "tools": shown}, *rendered[1:]]
        else:
            rendered = [{"role": "system", "content": "", "tools": shown}, *rendered]
    mode = "thinking" if thinking else "chat"
    try:
        prompt = encode_messages(rendered, mode, reasoning_effort=effort)
    except EncodeError as e:
        param = f"messages[{e.index}]" if getattr(e, "index", None) is not None else "messages"
        raise ApiError(400, f"the conversation cannot be rendered: {e}", param=param) from None
    request = GenerationRequest(
        prompt=prompt + prefill, messages=messages, tools=shown,
        thinking_mode=mode, reasoning_effort=effort,  # type: ignore[arg-type]
        max_tokens=common["max_tokens"], stop=common["stop"], sampling=common["sampling"],
        session_id=body.get("user") if isinstance(body.get("user"), str) else None)
    return ChatCall(request=request, prefill=prefill, tools=shown, stream=common["stream"])


def read_completion(body: dict[str, Any], *, context_window: int) -> CompletionCall:
    """Validate a POST /v1/completions body. The prompt is taken as it is: a DSML-native client
    renders it with its own codec, special tokens included."""
    common = read_sampling(body, context_window)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if body.get("echo"):
        raise ApiError(400, "echo is not supported", param="echo")
    if body.get("logprobs"):
        raise ApiError(400, "logprobs are not supported", param="logprobs")
    if isinstance(prompt, str) and prompt:
        request = GenerationRequest(prompt=prompt, max_tokens=common["max_tokens"],
                                    stop=common["stop"], sampling=common["sampling"])
    elif isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
        request = GenerationRequest(prompt_ids=prompt, max_tokens=common["max_tokens"],
                                    stop=common["stop"], sampling=common["sampling"])
    else:
        raise ApiError(400, "prompt must be a non-empty string or a list of token ids",
                       param="prompt")
    user = body.get("user")
    request.session_id = user if isinstance(user, str) else None
    return CompletionCall(request=request, stream=common["stream"])
