"""Parse what a V4 model wrote: strict, tolerant and streaming, all from one state machine.

The one-shot parser feeds the whole completion to the streaming parser, so any chunking of a
completion gives the same result by construction. The machine reads the format the way V4's
reference parser does (the same markers, the same first-match rules, the same quirks on
truncated blocks), so on every completion the reference accepts it returns the same message.
Where the reference would raise, the machine records a :class:`ParseIssue` and recovers:
``strict=True`` turns the first such issue into a :class:`ParseError`.

Streaming never emits part of a marker as text: a tail of the buffer that could still become a
marker (``\\n\\n<｜DSML…``, ``</thi…``) is held back until the next delta decides it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from whalebone.dsml import tokens as T
from whalebone.dsml.encoder import check_options
from whalebone.dsml.errors import ParseError
from whalebone.dsml.models import (
    CompletionEnd,
    ContentDelta,
    IssueFound,
    IssueKind,
    ParsedCompletion,
    ParseEvent,
    ParseIssue,
    ReasoningDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallBegin,
    ToolCallEnd,
)
from whalebone.dsml.schema import check_arguments


class _Markers:
    """A set of literal markers: find the first complete one, or where a partial one starts."""

    def __init__(self, *markers: str) -> None:
        self.markers = markers
        ordered = sorted(markers, key=len, reverse=True)  # longest wins at equal start
        self.full = re.compile("|".join(re.escape(m) for m in ordered))
        self.first = re.compile("[" + re.escape("".join({m[0] for m in markers})) + "]")
        self.maxlen = max(map(len, markers))

    def partial_start(self, buf: str) -> int:
        """Earliest index whose tail is a proper prefix of a marker (len(buf) if none)."""
        n = len(buf)
        h = max(0, n - self.maxlen + 1)
        while (m := self.first.search(buf, h)) is not None:
            tail = buf[m.start():]
            if any(len(mk) > len(tail) and mk.startswith(tail) for mk in self.markers):
                return m.start()
            h = m.start() + 1
        return n


# States.
REASONING, CONTENT, BLOCK, HEAD, SKIP_INVOKE, PARAM, VALUE, SKIP_PARAM, PARAM_GAP = range(9)
AFTER_BLOCK, DONE = 9, 10

_REASONING = _Markers(T.THINK_END, T.TOOL_CALLS_START, T.BOS, T.EOS, T.THINK_START, T.DSML)
_CONTENT = _Markers(T.EOS, T.TOOL_CALLS_START, T.BOS, T.THINK_START, T.THINK_END, T.DSML)
_BLOCK = _Markers(T.INVOKE_START, T.TOOL_CALLS_CLOSE)
_HEAD = _Markers(T.PARAM_START, T.INVOKE_END)
_SKIP_INVOKE = _Markers(T.INVOKE_END)
_PARAM_NAME = ' name="'
_STRING_TRUE, _STRING_FALSE = '" string="true">', '" string="false">'
_PARAM = _Markers(_STRING_TRUE, _STRING_FALSE, T.PARAM_END)
# The value ends at the first "/｜DSML｜parameter"; the "<" (or "<\n") before it is not value.
_VALUE = _Markers(T.PARAM_END, "<" + T.PARAM_END, "<\n" + T.PARAM_END)
_SKIP_PARAM = _Markers(T.PARAM_END)
_PARAM_GAP = _Markers(T.PARAM_START, T.INVOKE_END)
_AFTER_BLOCK = _Markers(T.EOS)
_GAP = ">\n"  # what stands between DSML tags
_INVOKE_HEAD = re.compile(r'^\s*name="(.*?)">\n$', re.DOTALL)
_FORBIDDEN = {T.BOS: "BOS", T.EOS: "EOS", T.THINK_START: "<think>", T.THINK_END: "</think>",
              T.DSML: "｜DSML｜"}


class _Call:
    """A tool call being read."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.params: dict[str, tuple[str, bool]] = {}  # name -> (raw value, is_string)
        self.errors: list[ParseIssue] = []
        self.arguments: list[str] = []  # the JSON fragments streamed so far
        self.param: str | None = None
        self.is_string = True
        self.value: list[str] = []


class CompletionParser:
    """Feed text deltas of any size; get typed events. ``close()`` ends the completion.

    ``tools`` (OpenAI tool dicts or bare function dicts) enables unknown-tool, unknown- and
    missing-parameter and type checks of each call's arguments.
    """

    def __init__(
        self,
        thinking_mode: str,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        strict: bool = False,
    ) -> None:
        check_options(thinking_mode, None)
        self.strict = strict
        self.schemas: dict[str, Mapping[str, Any]] | None = None
        if tools is not None:
            fns = [t.get("function", t) for t in tools]
            self.schemas = {f["name"]: f.get("parameters") or {} for f in fns}
        self.state = REASONING if thinking_mode == "thinking" else CONTENT
        self.buf = ""
        self.pos = 0  # offset of buf[0] in the completion
        self.gap = ""  # text seen in a gap between tags (only its first chars matter)
        self.gap_bad = False
        self.block_quiet = True  # nothing at all since the last tag (a quirk of the reference)
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.calls: list[ToolCall] = []
        self.call: _Call | None = None
        self.n_invokes = 0
        self.errors: list[ParseIssue] = []
        self.finished = False
        self.closed = False
        self.events: list[ParseEvent] = []
        self._result: ParsedCompletion | None = None

    # --- public ------------------------------------------------------------------------

    def feed(self, text: str) -> list[ParseEvent]:
        if self.closed:
            raise ValueError("feed() after close()")
        self.buf += text
        while self._step():
            pass
        return self._take()

    def close(self) -> list[ParseEvent]:
        """End of the completion: flush, judge what is unfinished, emit the final result."""
        if not self.closed:
            self.closed = True
            self._finish()
            self._result = ParsedCompletion(
                content="".join(self.content),
                reasoning_content="".join(self.reasoning),
                tool_calls=self.calls,
                errors=self.errors,
                finished=self.finished,
            )
            self.events.append(CompletionEnd(result=self._result))
        return self._take()

    @property
    def result(self) -> ParsedCompletion:
        if self._result is None:
            raise ValueError("the result is known only after close()")
        return self._result

    # --- machinery ---------------------------------------------------------------------

    def _take(self) -> list[ParseEvent]:
        out, self.events = self.events, []
        return out

    def _issue(
        self, kind: IssueKind, offset: int, message: str, *, rejects: bool = True,
        call: _Call | None = None,
    ) -> None:
        issue = ParseIssue(kind=kind, offset=offset, message=message, rejects=rejects,
                           call_index=call.index if call else None)
        self.errors.append(issue)
        if call is not None:
            call.errors.append(issue)
        self.events.append(IssueFound(issue=issue))
        if self.strict and rejects:
            raise ParseError(f"{message} (at offset {offset})", kind=kind, offset=offset)

    def _consume(self, n: int) -> None:
        self.buf = self.buf[n:]
        self.pos += n

    def _scan(self, markers: _Markers) -> tuple[int, str | None, int]:
        """(index of the first complete marker or len, the marker, safe length).

        Text before ``safe`` can never become part of a marker."""
        m = markers.full.search(self.buf)
        h = markers.partial_start(self.buf)
        if m is not None and m.start() <= h:
            return m.start(), m.group(0), m.start()
        return len(self.buf), None, min(h, m.start()) if m is not None else h

    def _step(self) -> bool:
        """Advance as far as the buffer allows; True when something changed."""
        handler = _HANDLERS[self.state]
        return handler(self)

    # --- reasoning and content -----------------------------------------------------------

    def _text(self, markers: _Markers, sink: list[str], delta: type) -> str | None:
        at, marker, safe = self._scan(markers)
        upto = at if marker is not None else safe
        if upto:
            chunk = self.buf[:upto]
            sink.append(chunk)
            self.events.append(delta(text=chunk))
            self._consume(upto)
        if marker is None:
            return None
        self._consume(len(marker))
        return marker

    def _reasoning(self) -> bool:
        marker = self._text(_REASONING, self.reasoning, ReasoningDelta)
        if marker is None:
            return False
        at = self.pos - len(marker)
        if marker == T.THINK_END:
            self.state = CONTENT
        elif marker == T.TOOL_CALLS_START:
            self._issue("missing_think_end", at, "reasoning must end with </think> before "
                        "the tool calls")
            self._open_block()
        elif marker == T.EOS:
            self._issue("missing_think_end", at, "reasoning was never closed with </think>")
            self.finished = True
            self.state = DONE
        else:
            self._forbidden(marker, at, "reasoning")
        return True

    def _content(self) -> bool:
        marker = self._text(_CONTENT, self.content, ContentDelta)
        if marker is None:
            return False
        at = self.pos - len(marker)
        if marker == T.EOS:
            self.finished = True
            self.state = DONE
        elif marker == T.TOOL_CALLS_START:
            self._open_block()
        else:
            self._forbidden(marker, at, "content")
        return True

    def _forbidden(self, marker: str, at: int, where: str) -> None:
        self._issue("special_token", at, f"the special token {_FORBIDDEN[marker]} may not "
                    f"appear in {where}; it was dropped")

    # --- the DSML block ------------------------------------------------------------------

    def _open_block(self) -> None:
        self.state = BLOCK
        self._reset_gap()

    def _reset_gap(self) -> None:
        self.gap, self.gap_bad, self.block_quiet = "", False, True

    def _gap(self, markers: _Markers, expected: str, what: str) -> str | None:
        """Read a gap between tags up to the next marker; the gap must equal ``expected``."""
        at, marker, safe = self._scan(markers)
        upto = at if marker is not None else safe
        if upto:
            self.block_quiet = False
            if len(self.gap) <= len(expected):
                self.gap += self.buf[: min(upto, len(expected) + 1 - len(self.gap))]
            if not self.gap_bad and not expected.startswith(self.gap):
                self.gap_bad = True
                self._issue("malformed_block" if what != "after" else "text_after_end",
                            self.pos, self._gap_message(what))
            self._consume(upto)
        if marker is None:
            return None
        if not self.gap_bad and self.gap != expected:
            self.gap_bad = True
            self._issue("malformed_block" if what != "after" else "text_after_end",
                        self.pos, self._gap_message(what))
        self._consume(len(marker))
        self._reset_gap()
        return marker

    @staticmethod
    def _gap_message(what: str) -> str:
        if what == "after":
            return "nothing may follow </｜DSML｜tool_calls> but the end of the message"
        return f'DSML tags must be separated by ">\\n" ({what})'

    def _block(self) -> bool:
        marker = self._gap(_BLOCK, _GAP, "between invokes")
        if marker is None:
            return False
        if marker == T.TOOL_CALLS_CLOSE:
            self.state = AFTER_BLOCK
        else:
            self.state = HEAD
        return True

    def _head(self) -> bool:
        at, marker, _ = self._scan(_HEAD)
        if marker is None:
            return False
        head, start = self.buf[:at], self.pos
        self._consume(at + len(marker))
        m = _INVOKE_HEAD.match(head)
        index = self.n_invokes
        self.n_invokes += 1
        if m is None:
            self._issue("malformed_invoke", start, 'an invoke must start with name="TOOL">; '
                        "the call was skipped", call=None)
            self.state = SKIP_INVOKE if marker == T.PARAM_START else BLOCK
            self._reset_gap()
            return True
        self.call = _Call(index, m.group(1))
        self.events.append(ToolCallBegin(index=index, name=self.call.name))
        if marker == T.PARAM_START:
            self.state = PARAM
        else:
            self._end_call()
        return True

    def _skip_invoke(self) -> bool:
        at, marker, safe = self._scan(_SKIP_INVOKE)
        self._consume(at + len(marker) if marker else safe)
        if marker is None:
            return False
        self.state = BLOCK
        self._reset_gap()
        return True

    def _param(self) -> bool:
        call = self.call
        assert call is not None
        at, marker, _ = self._scan(_PARAM)
        prefix_ok = _PARAM_NAME.startswith(self.buf[:7]) if len(self.buf) < 7 else (
            self.buf.startswith(_PARAM_NAME))
        if not prefix_ok or marker == T.PARAM_END or (
            marker is not None and at < len(_PARAM_NAME)
        ):
            self._issue("malformed_parameter", self.pos, 'a parameter must read name="NAME" '
                        'string="true|false">VALUE</｜DSML｜parameter>', call=call)
            self.state = SKIP_PARAM
            return True
        if marker is None:
            return False
        name = self.buf[len(_PARAM_NAME):at]
        self._consume(at + len(marker))
        call.is_string = marker == _STRING_TRUE
        call.value = []
        if name in call.params:
            self._issue("duplicate_parameter", self.pos, f"parameter {name!r} is given twice",
                        call=call)
        call.param = name
        key = json.dumps(name, ensure_ascii=False)
        lead = ("{" if not call.arguments else ", ") + key + ": "
        self._arguments(call, lead + ('"' if call.is_string else ""))
        self.state = VALUE
        return True

    def _arguments(self, call: _Call, delta: str) -> None:
        call.arguments.append(delta)
        self.events.append(ToolCallArgumentsDelta(index=call.index, delta=delta))

    def _value(self) -> bool:
        call = self.call
        assert call is not None and call.param is not None
        at, marker, safe = self._scan(_VALUE)
        upto = at if marker is not None else safe
        if upto:
            chunk = self.buf[:upto]
            call.value.append(chunk)
            self._arguments(call, json.dumps(chunk, ensure_ascii=False)[1:-1]
                            if call.is_string else chunk)
            self._consume(upto)
        if marker is None:
            return False
        end = self.pos
        self._consume(len(marker))
        if marker == T.PARAM_END:
            self._issue("malformed_parameter", end, f"parameter {call.param!r} must end with "
                        "</｜DSML｜parameter>", call=call)
        if call.is_string:
            self._arguments(call, '"')
        if call.param not in call.params:
            call.params[call.param] = ("".join(call.value), call.is_string)
        call.param = None
        self.state = PARAM_GAP
        return True

    def _skip_param(self) -> bool:
        at, marker, safe = self._scan(_SKIP_PARAM)
        self._consume(at + len(marker) if marker else safe)
        if marker is None:
            return False
        self.state = PARAM_GAP
        return True

    def _param_gap(self) -> bool:
        marker = self._gap(_PARAM_GAP, _GAP, "after a parameter")
        if marker is None:
            return False
        if marker == T.PARAM_START:
            self.state = PARAM
        else:
            self._end_call()
        return True

    def _end_call(self) -> None:
        call = self.call
        assert call is not None
        self._arguments(call, "}" if call.arguments else "{}")
        arguments = "".join(call.arguments)
        parsed = self._typed(call)
        tc = ToolCall(index=call.index, name=call.name, arguments=arguments,
                      parsed_arguments=parsed, errors=call.errors)
        self.calls.append(tc)
        self.events.append(ToolCallEnd(call=tc))
        self.call = None
        self.state = BLOCK
        self._reset_gap()

    def _typed(self, call: _Call) -> dict[str, Any] | None:
        """Decode string="false" values as JSON and check the call against its schema."""
        values: dict[str, Any] = {}
        where = self.pos
        for name, (raw, is_string) in call.params.items():
            if is_string:
                values[name] = raw
                continue
            try:
                values[name] = json.loads(raw)
            except ValueError:
                self._issue("bad_json", where, f"{call.name}: parameter {name!r} has "
                            f'string="false" but its value is not JSON: {raw[:60]!r}',
                            rejects=False, call=call)
        if self.schemas is not None:
            if call.name not in self.schemas:
                known = ", ".join(sorted(self.schemas)) or "none"
                self._issue("unknown_tool", where, f"there is no tool named {call.name!r} "
                            f"(tools: {known})", rejects=False, call=call)
            else:
                for kind, msg in check_arguments(values, self.schemas[call.name]):
                    self._issue(kind, where, f"{call.name}: {msg}",  # type: ignore[arg-type]
                                rejects=False, call=call)
        return values if not call.errors else None

    def _after_block(self) -> bool:
        marker = self._gap(_AFTER_BLOCK, "", "after")
        if marker is None:
            return False
        self.finished = True
        self.state = DONE
        return True

    def _done(self) -> bool:
        if self.buf:
            if not self.gap_bad:
                self.gap_bad = True
                self._issue("text_after_end", self.pos, "nothing may follow the end of the "
                            "message; the extra text was ignored")
            self._consume(len(self.buf))
        return False

    # --- the end -------------------------------------------------------------------------

    def _finish(self) -> None:
        """Judge the state the completion stopped in, as the reference does at end of text."""
        at = self.pos
        if self.state in (REASONING, CONTENT):
            sink = self.reasoning if self.state == REASONING else self.content
            if self.buf:
                sink.append(self.buf)
                delta = ReasoningDelta if self.state == REASONING else ContentDelta
                self.events.append(delta(text=self.buf))
                self._consume(len(self.buf))
            if self.state == REASONING:
                self._issue("missing_think_end", self.pos, "reasoning was never closed with "
                            "</think>")
            self._issue("missing_eos", self.pos, "the message stopped before its end "
                        "(no end-of-sentence token)")
            return
        if self.state == AFTER_BLOCK:
            if self.buf and not self.gap_bad:
                self._issue("text_after_end", at, self._gap_message("after"))
            self._issue("missing_eos", at, "the message stopped before its end", rejects=False)
            return
        if self.state == DONE:
            return
        # Inside the block. The reference accepts a text that ends exactly after a tag, or
        # after a parameter's ">\n", keeping the calls read so far.
        accepted = (self.state == BLOCK and not self.buf and self.block_quiet) or (
            self.state == PARAM_GAP and not self.gap_bad and self.gap + self.buf == _GAP)
        head = _INVOKE_HEAD.match(self.buf) if self.state == HEAD else None
        if head is not None:
            self.call = _Call(self.n_invokes, head.group(1))
            self.n_invokes += 1
            self.events.append(ToolCallBegin(index=self.call.index, name=self.call.name))
            accepted = True
        if accepted and self.call is not None:
            self._end_call()
        self._issue("unclosed_block", at, "the message ended inside the tool-call block; "
                    "calls after the last complete one were lost", rejects=not accepted)
        if self.call is not None:  # a call cut short is reported, never run
            self._issue("unclosed_block", at, f"call {self.call.name!r} was cut short",
                        call=self.call)
            self._end_call()


_HANDLERS = {
    REASONING: CompletionParser._reasoning,
    CONTENT: CompletionParser._content,
    BLOCK: CompletionParser._block,
    HEAD: CompletionParser._head,
    SKIP_INVOKE: CompletionParser._skip_invoke,
    PARAM: CompletionParser._param,
    VALUE: CompletionParser._value,
    SKIP_PARAM: CompletionParser._skip_param,
    PARAM_GAP: CompletionParser._param_gap,
    AFTER_BLOCK: CompletionParser._after_block,
    DONE: CompletionParser._done,
}


def parse_completion(
    text: str,
    thinking_mode: str,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    strict: bool = True,
) -> ParsedCompletion:
    """Parse a whole completion (what the model wrote after ``<think>`` or ``</think>``).

    ``strict=True`` raises :class:`ParseError` where V4's reference parser would reject the
    text; ``strict=False`` (tolerant) never raises on model output and reports every problem in
    ``result.errors``, keeping whatever was well-formed.
    """
    parser = CompletionParser(thinking_mode, tools=tools, strict=strict)
    parser.feed(text)
    parser.close()
    return parser.result
