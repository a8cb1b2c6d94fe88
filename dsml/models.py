"""Typed results and streaming events of the completion parser."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# What went wrong, in a word. Structural kinds make the reference parser reject the completion;
# the argument kinds (bad_json and the schema checks) it lets through; ParseIssue.rejects says.
IssueKind = Literal[
    "missing_think_end",  # reasoning never closed with </think>
    "special_token",  # a special token inside reasoning or content
    "missing_eos",  # the completion stopped without <｜end▁of▁sentence｜>
    "text_after_end",  # anything after EOS, or between the tool-call block and EOS
    "malformed_block",  # the DSML block's framing (">\n" between tags) is wrong
    "malformed_invoke",  # an <｜DSML｜invoke> head is not name="…">
    "malformed_parameter",  # a <｜DSML｜parameter> is not name="…" string="true|false">…<
    "duplicate_parameter",
    "unclosed_block",  # the completion ended inside the tool-call block
    "bad_json",  # a string="false" value that is not JSON
    "unknown_tool",
    "unknown_parameter",
    "missing_parameter",
    "type_mismatch",
]



class ParseIssue(BaseModel):
    """One problem found in a completion, with a one-line message fit to show the model."""

    model_config = ConfigDict(frozen=True)

    kind: IssueKind
    offset: int  # character offset in the completion text
    message: str
    call_index: int | None = None
    rejects: bool = True  # V4's reference parser would reject the completion for this


class ToolCall(BaseModel):
    """One tool call. ``arguments`` is the JSON string the reference parser builds."""

    index: int
    name: str
    arguments: str
    parsed_arguments: dict[str, Any] | None = None  # decoded (and schema-checked) values
    errors: list[ParseIssue] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_openai(self, call_id: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if call_id is not None:
            out["id"] = call_id
        return out


class ParsedCompletion(BaseModel):
    """An assistant message parsed from a completion."""

    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    errors: list[ParseIssue] = Field(default_factory=list)
    finished: bool = False  # an EOS was seen

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def valid_calls(self) -> list[ToolCall]:
        """The calls that are safe to run: well-formed, with typed arguments."""
        return [c for c in self.tool_calls if c.ok]

    def correction(self) -> str:
        """A short message telling the model what to fix, one line per problem."""
        return "\n".join(f"- {issue.message}" for issue in self.errors)

    def to_openai(self) -> dict[str, Any]:
        """The reference parser's dict: role, content, reasoning_content, tool_calls."""
        return {
            "role": "assistant",
            "content": self.content,
            "reasoning_content": self.reasoning_content,
            "tool_calls": [c.to_openai() for c in self.tool_calls],
        }


# --- streaming events --------------------------------------------------------------------


class ReasoningDelta(BaseModel):
    type: Literal["reasoning_delta"] = "reasoning_delta"
    text: str


class ContentDelta(BaseModel):
    type: Literal["content_delta"] = "content_delta"
    text: str


class ToolCallBegin(BaseModel):
    type: Literal["tool_call_begin"] = "tool_call_begin"
    index: int
    name: str


class ToolCallArgumentsDelta(BaseModel):
    """A fragment of the call's JSON arguments; the fragments concatenate to ``arguments``."""

    type: Literal["tool_call_arguments_delta"] = "tool_call_arguments_delta"
    index: int
    delta: str


class ToolCallEnd(BaseModel):
    type: Literal["tool_call_end"] = "tool_call_end"
    call: ToolCall


class IssueFound(BaseModel):
    type: Literal["issue"] = "issue"
    issue: ParseIssue


class CompletionEnd(BaseModel):
    type: Literal["end"] = "end"
    result: ParsedCompletion


ParseEvent = Annotated[
    ReasoningDelta
    | ContentDelta
    | ToolCallBegin
    | ToolCallArgumentsDelta
    | ToolCallEnd
    | IssueFound
    | CompletionEnd,
    Field(discriminator="type"),
]


def loads_object(text: str) -> dict[str, Any] | None:
    """``json.loads`` for a JSON object, or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
