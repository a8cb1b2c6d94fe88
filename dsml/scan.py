"""The reading machinery under the completion parser: a buffer read by index, literal
markers found whole or recognised as a partial tail, and issues recorded as they are found.

Streaming never emits part of a marker as text: a tail of the buffer that could still become a
marker (``\\n\\n<｜DSML…``, ``</thi…``) is held back until the next delta decides it.
"""

from __future__ import annotations

import re

from whalebone.dsml.errors import ParseError
from whalebone.dsml.models import IssueFound, IssueKind, ParseEvent, ParseIssue

# States of the machine.
REASONING, CONTENT, BLOCK, HEAD, SKIP_INVOKE, PARAM, VALUE, SKIP_PARAM, PARAM_GAP = range(9)
AFTER_BLOCK, DONE = 9, 10


class Markers:
    """A set of literal markers: find the first complete one, or where a partial one starts."""

    def __init__(self, *markers: str) -> None:
        self.markers = markers
        ordered = sorted(markers, key=len, reverse=True)  # longest wins at equal start
        self.full = re.compile("|".join(re.escape(m) for m in ordered))
        self.first = re.compile("[" + re.escape("".join({m[0] for m in markers})) + "]")
        self.maxlen = max(map(len, markers))
        # Every proper prefix of a marker: a tail of the buffer may still become a marker
        # exactly when it is one of these (a set lookup per candidate, on every delta).
        self.prefixes = frozenset(m[:k] for m in markers for k in range(1, len(m)))

    def partial_start(self, buf: str, start: int = 0) -> int:
        """Earliest index >= start whose tail is a proper prefix of a marker (else len(buf))."""
        n = len(buf)
        h = max(start, n - self.maxlen + 1)
        while (m := self.first.search(buf, h)) is not None:
            if buf[m.start():] in self.prefixes:
                return m.start()
            h = m.start() + 1
        return n




class Call:
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



class Reader:
    """The unread text is ``_b[_i:]``: reading advances ``_i``, and the buffer is compacted
    once per feed, so a one-shot parse never copies the text more than once."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self._b = ""
        self._i = 0
        self.pos = 0  # offset of _b[_i] in the completion
        self.events: list[ParseEvent] = []
        self.errors: list[ParseIssue] = []

    def _append(self, text: str) -> None:
        self._b = self._b[self._i:] + text
        self._i = 0

    def _take(self) -> list[ParseEvent]:
        out, self.events = self.events, []
        return out

    def _issue(
        self, kind: IssueKind, offset: int, message: str, *, rejects: bool = True,
        call: Call | None = None,
    ) -> None:
        issue = ParseIssue(kind=kind, offset=offset, message=message, rejects=rejects,
                           call_index=call.index if call else None)
        self.errors.append(issue)
        if call is not None:
            call.errors.append(issue)
        self.events.append(IssueFound(issue=issue))
        if self.strict and rejects:
            raise ParseError(f"{message} (at offset {offset})", kind=kind, offset=offset)

    @property
    def buf(self) -> str:
        """The unread text (a copy: for the end of the completion, not the hot path)."""
        return self._b[self._i:]

    def _unread(self) -> int:
        return len(self._b) - self._i

    def _peek(self, n: int, start: int = 0) -> str:
        return self._b[self._i + start: self._i + n]

    def _consume(self, n: int) -> None:
        self._i += n
        self.pos += n

    def _scan(self, markers: Markers) -> tuple[int, str | None, int]:
        """(index of the first complete marker or len, the marker, safe length).

        Text before ``safe`` can never become part of a marker."""
        i = self._i
        m = markers.full.search(self._b, i)
        h = markers.partial_start(self._b, i) - i
        if m is not None and m.start() - i <= h:
            return m.start() - i, m.group(0), m.start() - i
        return len(self._b) - i, None, min(h, m.start() - i) if m is not None else h
