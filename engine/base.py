"""The one interface every engine implements: the bundled V4 engine, DeepSeek's API, vLLM,
SGLang, whalebone's own server, and the router over several of them.

An engine takes a :class:`GenerationRequest` and streams :class:`TextDelta` events, then exactly
one :class:`Finished` carrying a DeepSeek-shaped :class:`Usage`. Cancellation is anyio's: cancel
the scope that iterates :meth:`Engine.stream` and the engine stops generating (a remote engine
closes its connection, the bundled engine stops between forward passes).

A request carries the conversation twice on purpose: ``prompt`` is the exact rendering the
caller's codec produced (what prompt-native engines must see, byte for byte, so that their prefix
cache holds), and ``messages``/``tools`` are the same conversation in OpenAI form for engines that
only speak chat (DeepSeek's API). A chat engine re-emits what the model returned in V4's own
completion form (reasoning, ``</think>``, content, DSML tool-call block, EOS) so that callers parse
every engine's output with one parser.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from whalebone.core.errors import WhaleboneError
from whalebone.core.usage import TokenCounts

ThinkingMode = Literal["chat", "thinking"]
FinishReason = Literal["stop", "length", "cancelled"]


class SamplingParams(BaseModel):
    temperature: float = Field(0.0, ge=0.0)  # 0 is greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None


class GenerationRequest(BaseModel):
    """One model call."""

    prompt: str | None = None  # the rendered V4 prompt (BOS included when it starts a chat)
    prompt_ids: list[int] | None = None  # or token ids, for engines that take them
    messages: list[dict[str, Any]] | None = None  # the same conversation, OpenAI form
    tools: list[dict[str, Any]] | None = None  # OpenAI-form tools, for chat engines
    thinking_mode: ThinkingMode = "thinking"
    reasoning_effort: Literal["high", "max"] | None = None
    max_tokens: int = Field(1024, ge=1)
    stop: list[str] = []  # stop strings; EOS always stops
    sampling: SamplingParams = SamplingParams()
    session_id: str | None = None  # lets a router keep a session on the engine with its cache
    tier: str | None = None  # a router's policy may pick an engine by tier


class Usage(BaseModel):
    """Shaped like DeepSeek's ``usage``: hits + misses = prompt tokens."""

    prompt_tokens: int = 0
    prompt_cache_hit_tokens: int = 0
    prompt_cache_miss_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def counts(self) -> TokenCounts:
        """The same counts in whalebone's own spelling."""
        return TokenCounts(prompt_tokens=self.prompt_tokens,
                           cache_hit_tokens=self.prompt_cache_hit_tokens,
                           cache_miss_tokens=self.prompt_cache_miss_tokens,
                           completion_tokens=self.completion_tokens)

    @classmethod
    def of(cls, counts: TokenCounts) -> Usage:
        """``counts`` (or any record that extends it) in DeepSeek's spelling."""
        return cls(prompt_tokens=counts.prompt_tokens,
                   prompt_cache_hit_tokens=counts.cache_hit_tokens,
                   prompt_cache_miss_tokens=counts.cache_miss_tokens,
                   completion_tokens=counts.completion_tokens)


class TextDelta(BaseModel):
    type: Literal["delta"] = "delta"
    text: str


class Finished(BaseModel):
    """The last event of a stream. ``text`` is the whole completion, without the stop string
    that ended it (as OpenAI-compatible servers return it)."""

    type: Literal["finished"] = "finished"
    finish_reason: FinishReason
    text: str
    usage: Usage
    engine: str  # the engine's name, e.g. "bundled", "deepseek", "vllm@http://…"
    model: str  # the model name used for pricing, e.g. "deepseek-v4-flash"
    notes: list[str] = []  # e.g. a router's "switched engine: the cache starts cold"


StreamEvent = TextDelta | Finished


class EngineError(WhaleboneError):
    """An engine could not serve a request."""

    retryable: bool = False


class EngineUnavailable(EngineError):
    """Connection refused, timeout, 429 or 5xx: another try or another engine may succeed."""

    retryable = True


class EngineRequestError(EngineError):
    """The engine rejected the request (a 4xx other than 429, a prompt over the window, …)."""


class EngineAuthError(EngineRequestError):
    """Missing or wrong credentials."""


class Engine(abc.ABC):
    """What every engine offers."""

    name: str = "engine"
    model: str = "unknown"
    context_window: int = 1_048_576
    accepts_prompt: bool = True  # False for chat-only engines (they need ``messages``)

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """Yield text deltas as they are generated, then one :class:`Finished`."""

    async def generate(self, request: GenerationRequest) -> Finished:
        """Run a request to the end and return its :class:`Finished` record."""
        finished: Finished | None = None
        async for event in self.stream(request):
            if isinstance(event, Finished):
                finished = event
        if finished is None:
            raise EngineError(f"engine {self.name} ended its stream without a result")
        return finished

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` as this engine counts them (the V4 tokenizer by default)."""
        from whalebone.dsml.tokenizer import load_tokenizer

        return load_tokenizer().count(text)

    async def aclose(self) -> None:  # noqa: B027 - most engines hold nothing to release
        """Release connections, models or files the engine holds."""

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
