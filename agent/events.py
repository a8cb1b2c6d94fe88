"""What an agent run tells its caller, as typed events (pydantic, discriminated by ``type``).

A run yields, per step: :class:`StepStarted`, then :class:`Reasoning` and :class:`AnswerText`
deltas as the model writes, one :class:`UsageReport` per model call, :class:`ToolCalled` and
:class:`ToolFinished` per tool call, :class:`RunWarning` when something deserves attention (a prefix
break, malformed output, an interrupted call, a loop), :class:`Compacted` after a compaction, and
finally exactly one :class:`Done` saying why the run stopped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, computed_field
from typing_extensions import deprecated

from whalebone.core.deprecation import renamed
from whalebone.core.usage import TokenCounts

StopReason = Literal["answer", "max_steps", "loop", "budget", "cancelled", "error",
                     "parse_retries"]


class StepStarted(BaseModel):
    type: Literal["step"] = "step"
    step: int


class Reasoning(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    text: str


class AnswerText(BaseModel):
    """A piece of the answer as the model writes it (``Text`` before its rename)."""

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
    content: str  # neutralised and capped: exactly what the model reads
    is_error: bool
    seconds: float


class UsageReport(TokenCounts):
    """One model call: tokens, cache hits and price, as the engine reported them."""

    type: Literal["usage"] = "usage"
    kind: str = "turn"  # turn, retry, compaction, or the run's turn kind (e.g. heartbeat)
    model: str = ""
    price: float
    # Over this run so far (named session_* before: they never covered the whole session).
    run_prompt_tokens: int = Field(
        validation_alias=AliasChoices("run_prompt_tokens", "session_prompt_tokens"))
    run_cache_hit_tokens: int = Field(
        validation_alias=AliasChoices("run_cache_hit_tokens", "session_cache_hit_tokens"))
    engine_seconds: float = 0.0  # time spent inside the engine

    @property
    def run_hit_rate(self) -> float:
        total = self.run_prompt_tokens
        return self.run_cache_hit_tokens / total if total else 0.0

    # The old names, still in the JSON for readers that expect them (deprecated: dumping them
    # must not warn on every event, so only the docs say so).
    @computed_field  # type: ignore[prop-decorator]
    @property
    def session_prompt_tokens(self) -> int:
        return self.run_prompt_tokens

    @computed_field  # type: ignore[prop-decorator]
    @property
    def session_cache_hit_tokens(self) -> int:
        return self.run_cache_hit_tokens

    @property
    @deprecated("use run_hit_rate")
    def session_hit_rate(self) -> float:
        return self.run_hit_rate


class RunWarning(BaseModel):
    """Something that deserves attention (``Warning`` before its rename: it shadowed the
    builtin)."""

    type: Literal["warning"] = "warning"
    kind: str  # prefix_break, malformed_output, interrupted_call, loop, engine_error, …
    message: str


class Compacted(BaseModel):
    """A compaction: what it saved, and the cache hit rate either side of it. A run reports it
    after the first turn that follows; ``Agent.compact`` (on demand, between runs) reports it
    at once, with ``tokens_after`` counted and ``hit_rate_after`` None (no turn has followed)."""

    type: Literal["compacted"] = "compacted"
    messages_before: int
    messages_after: int
    tokens_before: int  # prompt tokens of the conversation that was compacted
    tokens_after: int  # prompt tokens of the first turn after it (on demand: of the new prompt)
    hit_rate_before: float  # of the last turn before the compaction
    hit_rate_after: float | None = None  # of the first turn after it; None until there is one
    summary_hit_rate: float  # of the summary call itself
    kept_prefix_chars: int  # prompt characters that stayed byte-identical (system, tools, task)

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after


class Done(BaseModel):
    type: Literal["done"] = "done"
    reason: StopReason
    answer: str = ""
    session_id: str = ""
    run_id: str = ""  # the budget guard's run scope is ``run:<run_id>``
    message: str = ""
    steps: int = 0
    prompt_tokens: int = 0  # over this run
    cache_hit_tokens: int = 0
    price: float = 0.0  # USD over this run

    @property
    def hit_rate(self) -> float:
        return self.cache_hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


AgentEvent = Annotated[
    StepStarted | Reasoning | AnswerText | ToolCalled | ToolFinished | UsageReport | RunWarning
    | Compacted | Done,
    Field(discriminator="type"),
]


__getattr__ = renamed(__name__, {"Text": "AnswerText", "Warning": "RunWarning"})
