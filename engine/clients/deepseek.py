"""DeepSeek's chat API, and any OpenAI-compatible chat endpoint, as an :class:`Engine`.

A chat endpoint takes the conversation as messages (``request.messages``/``request.tools``) and
answers with ``reasoning_content``, ``content`` and ``tool_calls``. This client re-emits that
answer as the V4 completion the model wrote — reasoning, ``</think>``, content, then the DSML
tool-call block — so callers parse every engine's output with the one codec parser. EOS is not
emitted: like every engine it ends the stream (``finish_reason="stop"``).

What DeepSeek's API requires, as measured by others and handled here: thinking is on unless
``{"thinking": {"type": "disabled"}}``; an assistant message with tool calls must send its
``reasoning_content`` back (a missing one is refused here, before the API answers 400);
streamed tool calls arrive as deltas by ``index``, interleaved, a few characters each (kept as
lists, joined once); some chunks have empty ``choices``; cache hits are read from both
``prompt_cache_hit_tokens`` and ``prompt_tokens_details.cached_tokens``; a ``length`` finish in
the middle of a tool call yields no call (never "salvaged" from partial arguments).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any, Literal

from whalebone.dsml import emit_invoke
from whalebone.dsml import tokens as T
from whalebone.engine.base import (
    Engine,
    EngineAuthError,
    EngineRequestError,
    EngineUnavailable,
    Finished,
    GenerationRequest,
    StreamEvent,
    TextDelta,
    Usage,
)
from whalebone.engine.clients.retry import RetryPolicy
from whalebone.engine.clients.transport import Transport, read_usage

DEEPSEEK_BASE_URL = "https://api.deepseek.com"
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content")


class _Call:
    """A tool call assembled from stream deltas (fragments joined once, at the end)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: list[str] = []
        self.arguments: list[str] = []

    def invoke(self) -> str:
        """The call as a DSML ``invoke`` element, as the model would have written it."""
        name, raw = "".join(self.name), "".join(self.arguments)
        try:
            args = json.loads(raw or "{}")
        except ValueError:
            args = None
        if isinstance(args, dict):
            return emit_invoke(name, args)
        # Not a JSON object: pass it on as one unparseable parameter, so the codec's parser
        # reports bad_json to the loop instead of the call silently losing its arguments.
        param = f'<{T.DSML}parameter name="arguments" string="false">{raw}</{T.DSML}parameter>'
        return f'<{T.DSML}invoke name="{name}">\n{param}\n</{T.DSML}invoke>'


def _block(calls: list[_Call]) -> str:
    """The tool-call block as :func:`emit_tool_calls` writes it."""
    invokes = "\n".join(c.invoke() for c in calls)
    return f"\n\n{T.TOOL_CALLS_OPEN}\n{invokes}\n{T.TOOL_CALLS_CLOSE}"


class ChatEngine(Engine):
    """An OpenAI-compatible ``/chat/completions`` endpoint. ``flavour="deepseek"`` adds
    DeepSeek's ``thinking`` switch and sends reasoning back; ``"openai"`` sends neither."""

    accepts_prompt = False

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None,
                 flavour: Literal["deepseek", "openai"] = "deepseek", name: str | None = None,
                 retry: RetryPolicy | None = None, context_window: int = 1_048_576,
                 path: str = "/chat/completions", **transport: Any) -> None:
        self.model = model
        self.flavour = flavour
        self.name = name or f"{flavour}@{base_url}"
        self.context_window = context_window
        self.path = path
        self.transport = Transport(base_url, where=self.name, api_key=api_key, retry=retry,
                                   **transport)

    # --- request ----------------------------------------------------------------------

    def api_messages(self, request: GenerationRequest) -> list[dict[str, Any]]:
        """The conversation as the API wants it: arguments as JSON text, reasoning sent back
        on assistant turns (DeepSeek), nothing whalebone-only."""
        if not request.messages:
            raise EngineRequestError(f"{self.name} is a chat engine: the request needs "
                                     "messages (OpenAI form), not only a prompt")
        thinking = request.thinking_mode == "thinking"
        out = []
        for i, msg in enumerate(request.messages):
            m = {k: msg[k] for k in _MESSAGE_KEYS if k in msg}
            if m.get("role") == "assistant":
                calls = m.get("tool_calls") or []
                if calls:
                    m["tool_calls"] = [self._api_call(c, i, j) for j, c in enumerate(calls)]
                if self.flavour != "deepseek":
                    m.pop("reasoning_content", None)
                elif thinking and m.get("reasoning_content") is None:
                    if calls:
                        raise EngineRequestError(
                            f"messages[{i}]: DeepSeek requires the reasoning_content of an "
                            "assistant message with tool calls to be sent back in thinking "
                            "mode")
                    # Documented as ignored, but the API has been measured rejecting
                    # assistant messages without the field: send it, empty.
                    m["reasoning_content"] = ""
                if m.get("content") is None:
                    m["content"] = ""
            out.append(m)
        return out

    @staticmethod
    def _api_call(call: dict[str, Any], i: int, j: int) -> dict[str, Any]:
        fn = dict(call.get("function") or {})
        if not isinstance(fn.get("arguments", ""), str):
            fn["arguments"] = json.dumps(fn.get("arguments"), ensure_ascii=False)
        return {"id": call.get("id") or f"call_{i}_{j}", "type": "function", "function": fn}

    def payload(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.api_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
        }
        stop = [s for s in request.stop if s != T.EOS]  # EOS always ends a chat answer
        if stop:
            body["stop"] = stop
        if request.tools:
            body["tools"] = request.tools
        if self.flavour == "deepseek":
            enabled = request.thinking_mode == "thinking"
            body["thinking"] = {"type": "enabled" if enabled else "disabled"}
            if enabled and request.reasoning_effort:
                body["reasoning_effort"] = request.reasoning_effort
        else:
            if request.sampling.seed is not None:
                body["seed"] = request.sampling.seed
            if request.reasoning_effort:
                body["reasoning_effort"] = "high"  # OpenAI has no "max"
        return body

    # --- response ---------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        body = self.payload(request)
        thinking = request.thinking_mode == "thinking"
        parts: list[str] = []
        calls: dict[int, _Call] = {}
        think_open = thinking
        finish: str | None = None
        usage = Usage()
        model = self.model

        def close_think() -> str:
            nonlocal think_open
            if think_open:
                think_open = False
                return T.THINK_END
            return ""

        events = self.transport.events(self.path, body)
        try:
            async for chunk in events:
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = read_usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    text = ""
                    if delta.get("reasoning_content") and think_open:
                        text += delta["reasoning_content"]
                    if delta.get("content"):
                        text += close_think() + delta["content"]
                    for tc in delta.get("tool_calls") or ():
                        text += close_think()
                        call = calls.setdefault(int(tc.get("index", len(calls))), _Call())
                        call.id = tc.get("id") or call.id
                        fn = tc.get("function") or {}
                        if fn.get("name"):
                            call.name.append(fn["name"])
                        if fn.get("arguments"):
                            call.arguments.append(fn["arguments"])
                    if text:
                        parts.append(text)
                        yield TextDelta(text=text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        finally:
            await events.aclose()
        if finish is None:
            raise EngineUnavailable(f"{self.name}: the stream ended without a finish_reason")
        if finish == "insufficient_system_resource":
            raise EngineUnavailable(f"{self.name}: the API ran out of capacity mid-answer")
        reason = "length" if finish == "length" else "stop"
        tail = ""
        if reason == "stop":
            tail = close_think()
            if calls:  # in index order, as the model wrote them
                tail += _block([calls[k] for k in sorted(calls)])
        elif calls:
            pass  # a length finish inside a tool call: its arguments are cut, never run them
        if tail:
            parts.append(tail)
            yield TextDelta(text=tail)
        notes = [f"the API finished with {finish!r}"] if finish not in (
            "stop", "length", "tool_calls") else []
        yield Finished(finish_reason=reason, text="".join(parts), usage=usage,
                       engine=self.name, model=model, notes=notes)

    async def aclose(self) -> None:
        await self.transport.aclose()


class DeepSeekEngine(ChatEngine):
    """DeepSeek's API. The key comes from ``api_key`` or ``DEEPSEEK_API_KEY``, the address
    from ``base_url`` or ``DEEPSEEK_BASE_URL``."""

    def __init__(self, model: str = "deepseek-v4-flash", *, api_key: str | None = None,
                 base_url: str | None = None, **options: Any) -> None:
        key = api_key or os.environ.get("DEEPSEEK_API_KEY")
        if not key:
            raise EngineAuthError("DeepSeek needs an API key: set DEEPSEEK_API_KEY or pass "
                                  "api_key")
        url = base_url or os.environ.get("DEEPSEEK_BASE_URL") or DEEPSEEK_BASE_URL
        options.setdefault("name", "deepseek" if url == DEEPSEEK_BASE_URL
                           else f"deepseek@{url}")
        super().__init__(url, model=model, api_key=key, flavour="deepseek", **options)
