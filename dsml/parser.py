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

from collections.abc import Mapping, Sequence
from typing import Any

from whalebone.dsml import tokens as T
from whalebone.dsml.block import BlockReader
from whalebone.dsml.encoder import check_options
from whalebone.dsml.models import (
    CompletionEnd,
    ContentDelta,
    ParsedCompletion,
    ParseEvent,
    ReasoningDelta,
)
from whalebone.dsml.scan import (
    AFTER_BLOCK,
    BLOCK,
    CONTENT,
    DONE,
    HEAD,
    PARAM,
    PARAM_GAP,
    REASONING,
    SKIP_INVOKE,
    SKIP_PARAM,
    VALUE,
    Markers,
)

_REASONING = Markers(T.THINK_END, T.TOOL_CALLS_START, T.BOS, T.EOS, T.THINK_START, T.DSML)
_CONTENT = Markers(T.EOS, T.TOOL_CALLS_START, T.BOS, T.THINK_START, T.THINK_END, T.DSML)
_FORBIDDEN = {T.BOS: "BOS", T.EOS: "EOS", T.THINK_START: "<think>", T.THINK_END: "</think>",
              T.DSML: "｜DSML｜"}


class CompletionParser(BlockReader):
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
        super().__init__(strict, tools)
        self.state = REASONING if thinking_mode == "thinking" else CONTENT
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.closed = False
        self._result: ParsedCompletion | None = None

    def feed(self, text: str) -> list[ParseEvent]:
        if self.closed:
            raise ValueError("feed() after close()")
        self._append(text)
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

    def _step(self) -> bool:
        """Advance as far as the buffer allows; True when something changed."""
        return _HANDLERS[self.state](self)

    def _text(self, markers: Markers, sink: list[str], delta: type) -> str | None:
        at, marker, safe = self._scan(markers)
        upto = at if marker is not None else safe
        if upto:
            chunk = self._peek(upto)
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

    def _done(self) -> bool:
        if self._unread():
            if not self.gap_bad:
                self.gap_bad = True
                self._issue("text_after_end", self.pos, "nothing may follow the end of the "
                            "message; the extra text was ignored")
            self._consume(self._unread())
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
                self._issue("text_after_end", self.gap_start, self._gap_message("after"))
            self._issue("missing_eos", at, "the message stopped before its end", rejects=False)
            return
        if self.state != DONE:
            self._finish_block()


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
