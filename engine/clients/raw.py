"""Raw completions: vLLM, SGLang or ``whalebone serve`` behind the engine interface.

whalebone renders the exact prompt with its own codec and sends it to ``/v1/completions``; the
server only continues it, and whalebone parses the completion itself. So no server-side chat
template, tool parser or reasoning parser stands between the agent and the model, the prompt
bytes are the ones the agent's transcript keeps stable, and the server's prefix cache holds.

Three details make the bytes survive the trip. The prompt already starts with BOS, so the server
must not add another (vLLM: ``add_special_tokens: false``). V4's markers (``</think>``, DSML
tags) are special tokens that servers strip from output by default (``skip_special_tokens:
false``; vLLM also ``spaces_between_special_tokens: false``). And ``prompt_format="ids"``
sends token ids from the V4 tokenizer instead of text, for servers whose tokenizer setup is not
to be trusted with special tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from whalebone.dsml import encode_messages
from whalebone.dsml import tokens as T
from whalebone.engine.base import (
    Engine,
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

Flavour = Literal["vllm", "sglang", "whalebone"]


def render_request(request: GenerationRequest) -> str:
    """The prompt of a request that came with messages only (the codec renders it)."""
    if not request.messages:
        raise EngineRequestError("a raw-completion engine needs a prompt, prompt ids or "
                                 "messages")
    messages = [dict(m) for m in request.messages]
    if request.tools:
        if messages[0].get("role") == "system":
            messages[0]["tools"] = request.tools
        else:
            messages.insert(0, {"role": "system", "content": "", "tools": request.tools})
    return encode_messages(messages, request.thinking_mode,
                           reasoning_effort=request.reasoning_effort)


class RawCompletionEngine(Engine):
    """``POST {base_url}/v1/completions`` with the rendered prompt; streamed."""

    accepts_prompt = True

    def __init__(self, base_url: str, *, flavour: Flavour = "vllm", model: str | None = None,
                 api_key: str | None = None, name: str | None = None,
                 retry: RetryPolicy | None = None, context_window: int = 1_048_576,
                 prompt_format: Literal["text", "ids"] = "text",
                 pricing_model: str | None = None, **transport: Any) -> None:
        base = base_url.rstrip("/")
        base = base[:-3] if base.endswith("/v1") else base
        self.flavour = flavour
        self.name = name or f"{flavour}@{base}"
        self.served_model = model  # the server's name for it; asked for when None
        self.model = pricing_model or model or "unknown"
        self.context_window = context_window
        self.prompt_format = prompt_format
        self.transport = Transport(base, where=self.name, api_key=api_key, retry=retry,
                                   **transport)

    async def _model_name(self) -> str:
        if self.served_model is None:
            listing = await self.transport.get_json("/v1/models")
            try:
                self.served_model = str(listing["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise EngineUnavailable(f"{self.name}: /v1/models names no model; pass "
                                        "model=") from None
            if self.model == "unknown":
                self.model = self.served_model
        return self.served_model

    def _prompt(self, request: GenerationRequest) -> str | list[int]:
        if self.prompt_format == "ids":
            if request.prompt_ids is not None:
                return list(request.prompt_ids)
            from whalebone.dsml.tokenizer import load_tokenizer

            text = request.prompt if request.prompt is not None else render_request(request)
            return load_tokenizer().encode(text)
        if request.prompt is not None:
            return request.prompt
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        return render_request(request)

    async def payload(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": await self._model_name(),
            "prompt": self._prompt(request),
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.sampling.seed is not None:
            body["seed"] = request.sampling.seed
        stop = [s for s in request.stop if s != T.EOS]  # the server stops at EOS by itself
        if stop:
            body["stop"] = stop
        if self.flavour in ("vllm", "sglang"):
            body["skip_special_tokens"] = False
        if self.flavour == "vllm":
            body["spaces_between_special_tokens"] = False
            body["add_special_tokens"] = False
        if request.session_id:
            body["user"] = request.session_id
        return body

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        body = await self.payload(request)
        parts: list[str] = []
        finish: str | None = None
        usage = Usage()
        events = self.transport.events("/v1/completions", body)
        try:
            async for chunk in events:
                if chunk.get("usage"):
                    usage = read_usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    text = choice.get("text") or ""
                    if text:
                        parts.append(text)
                        yield TextDelta(text=text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        finally:
            await events.aclose()
        if finish is None:
            raise EngineUnavailable(f"{self.name}: the stream ended without a finish_reason")
        text = "".join(parts)
        if text.endswith(T.EOS):  # a server told to keep special tokens may return EOS too
            text = text[: -len(T.EOS)]
        yield Finished(finish_reason="length" if finish == "length" else "stop", text=text,
                       usage=usage, engine=self.name, model=self.model)

    async def aclose(self) -> None:
        await self.transport.aclose()
