"""What an agent run tells its caller, as typed events (pydantic, discriminated by ``type``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

StopReason = Literal["answer", "max_steps", "loop", "budget", "cancelled", "error",
                     "parse_retries"]


class StepStarted(BaseModel):
    type: Literal["step"] = "step"
    step: int


class Reasoning(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    text: str


class Text(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolCalled(BaseModel):
    type: Literal["tool_call"] = "tool_call"
    call_id: str
    name: str
    arguments: dict[str, Any]


class ToolFinished(BaseModel):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    name: str
    content: str
    is_error: bool
    seconds: float


class UsageReport(BaseModel):
    """One model call: tokens, cache hits and price, as the engine reported them."""

    type: Literal["usage"] = "usage"
    kind: str = "turn"
    prompt_tokens: int
    cache_hit_tokens: int
    cache_miss_tokens: int
    completion_tokens: int
    price: float
    session_prompt_tokens: int
    session_cache_hit_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.cache_hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def session_hit_rate(self) -> float:
        total = self.session_prompt_tokens
        return self.session_cache_hit_tokens / total if total else 0.0


class Warning(BaseModel):  # noqa: A001 - the event's name in the API
    type: Literal["warning"] = "warning"
    kind: str  # prefix_break, malformed_output, interrupted_call, …
    message: str


class Done(BaseModel):
    type: Literal["done"] = "done"
    reason: StopReason
    answer: str = ""
    session_id: str = ""
    message: str = ""


AgentEvent = Annotated[
    StepStarted | Reasoning | Text | ToolCalled | ToolFinished | UsageReport | Warning | Done,
    Field(discriminator="type"),
]
