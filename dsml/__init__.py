"""The DeepSeek V4 prompt codec.

Render conversations byte for byte as V4's reference encoder does (:func:`encode_messages`),
render them incrementally and detect prefix breaks (:class:`Transcript`), parse completions
strictly, tolerantly or as a stream (:func:`parse_completion`, :class:`CompletionParser`), write
tool calls as a V4 model writes them (:func:`emit_completion`), and neutralise untrusted text so
it can never forge a special token (:func:`neutralise`). The V4 tokenizer lives in
``whalebone.dsml.tokenizer`` (it needs the ``engine`` extra).
"""

from whalebone.dsml import tokens
from whalebone.dsml.emit import emit_completion, emit_invoke, emit_tool_calls
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.errors import EncodeError, ParseError, PrefixBreakError, WhaleboneError
from whalebone.dsml.models import (
    CompletionEnd,
    ContentDelta,
    IssueFound,
    ParsedCompletion,
    ParseEvent,
    ParseIssue,
    ReasoningDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallBegin,
    ToolCallEnd,
)
from whalebone.dsml.parser import CompletionParser, parse_completion
from whalebone.dsml.transcript import PrefixBreak, Render, Transcript
from whalebone.dsml.untrusted import contains_special, neutralise

__all__ = [
    "CompletionEnd",
    "CompletionParser",
    "ContentDelta",
    "EncodeError",
    "IssueFound",
    "ParseError",
    "ParseEvent",
    "ParseIssue",
    "ParsedCompletion",
    "PrefixBreak",
    "PrefixBreakError",
    "ReasoningDelta",
    "Render",
    "ToolCall",
    "ToolCallArgumentsDelta",
    "ToolCallBegin",
    "ToolCallEnd",
    "Transcript",
    "WhaleboneError",
    "contains_special",
    "emit_completion",
    "emit_invoke",
    "emit_tool_calls",
    "encode_messages",
    "neutralise",
    "parse_completion",
    "tokens",
]
