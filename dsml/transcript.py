"""An append-only transcript: render only what a turn adds, and say when a prefix breaks.

An agent renders its prompt once per model call. Re-encoding the whole conversation each time
costs O(conversation) per turn; :class:`Transcript` keeps the rendering of every message and
re-renders only the last one or two (a new message can change only the previous message's
generation prompt, or merge into the previous user turn). Its text always equals
``encode_messages`` of the same conversation (tests hold it to that).

A *prefix break* is an append that rewrites bytes already rendered, which throws away every
cached token after them. The transcript reports it with the byte offset and a cause. Breaks
come from the format itself: thinking mode with ``drop_thinking`` and no tools rewrites earlier
turns when a user message arrives; tool results or user text merged into a user turn that was
already rendered as the last one; a message that follows a turn that was rendered with its
generation prompt but takes none; or an edit made with :meth:`Transcript.reset`.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from whalebone.dsml import tokens as T
from whalebone.dsml.encoder import (
    Message,
    Renderer,
    call_order,
    check_options,
    merge_one,
    prepare,
    sort_blocks,
    validate,
)
from whalebone.dsml.errors import PrefixBreakError


class PrefixBreak(BaseModel):
    """Bytes already rendered were rewritten, from ``offset`` on."""

    offset: int
    message_index: int  # index (in the merged, rendered conversation) of the first changed turn
    cause: str
    before: str  # a few characters of the old and new text at the break
    after: str


class Render(BaseModel):
    """What a render added: ``text`` starts at ``start`` of the full prompt.

    Without a break ``start`` is the length of the previous render; with one it is the break's
    offset and ``text`` replaces everything from there.
    """

    start: int
    text: str
    prefix_break: PrefixBreak | None = None


class Transcript:
    """A conversation rendered incrementally. ``append`` messages, then ``render()``.

    Same options as :func:`encode_messages`. With ``strict=True`` a prefix break raises
    :class:`PrefixBreakError` instead of being reported on the :class:`Render`.
    """

    def __init__(
        self,
        thinking_mode: str,
        *,
        drop_thinking: bool = True,
        add_default_bos_token: bool = True,
        reasoning_effort: str | None = None,
        strict: bool = False,
    ) -> None:
        check_options(thinking_mode, reasoning_effort)
        self.thinking_mode = thinking_mode
        self.drop_thinking = drop_thinking
        self.reasoning_effort = reasoning_effort
        self.strict = strict
        self._bos = T.BOS if add_default_bos_token else ""
        self._raw: list[Message] = []  # every message rendered, as given (copied)
        self._merged: list[Message] = []  # tool messages merged into user turns
        self._pending: list[Message] = []  # appended since the last render
        self._pieces: list[str] = []  # the rendering of each merged message
        self._offsets: list[int] = []  # where each piece starts in the text
        self._length = 0
        self._rendered = False
        self._joined: str | None = ""  # the text, joined on demand
        self._has_tools = False
        self._order: dict[str, int] = {}  # call order of the latest assistant with tool calls

    # --- public --------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        return [copy.deepcopy(m) for m in self._raw + self._pending]

    @property
    def text(self) -> str:
        """The prompt as of the last render."""
        if self._joined is None:
            self._joined = self._bos + "".join(self._pieces)
        return self._joined

    def __len__(self) -> int:
        """Length of the text as of the last render."""
        return self._length

    def append(self, *messages: Mapping[str, Any]) -> None:
        """Add messages; nothing is rendered until :meth:`render`."""
        validate(messages, "appended")
        self._pending.extend(copy.deepcopy(dict(m)) for m in messages)

    def render(self) -> Render:
        """Render the messages appended since the last call and return only the new text."""
        new, self._pending = self._pending, []
        if self._dropping() or not self._rendered:
            # Thinking mode that drops earlier reasoning rewrites history by design (and a first
            # tool list then switches dropping off for good): such renders are whole ones.
            return self._render_all(self._raw + new, new)
        old_count = len(self._merged)
        first = max(old_count - 1, 0)  # the previous last turn may change (transition, merge)
        for msg in new:
            self._merge(msg)
        self._raw.extend(new)
        renderer = Renderer(self._merged, self.thinking_mode, self._effective_drop(),
                            self.reasoning_effort)
        base = self._offsets[first] if first < old_count else len(self._bos)
        old_tail = "".join(self._pieces[first:])
        old_length = self._length
        self._set_pieces(first, base,
                         [renderer.render(i) for i in range(first, len(self._merged))])
        new_tail = "".join(self._pieces[first:])
        if new_tail.startswith(old_tail):
            return Render(start=old_length, text=new_tail[len(old_tail):])
        at = common_prefix_len(old_tail, new_tail)
        return self._break(base + at, old_tail[at:], new_tail[at:], new, edited=False)

    def prompt(self) -> str:
        """Render pending messages and return the whole prompt."""
        self.render()
        return self.text

    def reset(self, messages: Sequence[Mapping[str, Any]]) -> Render:
        """Replace the whole conversation (an edit, a changed reminder, a compaction) and
        report where its rendering departs from what was rendered before."""
        validate(messages)
        self._pending = []
        return self._render_all([copy.deepcopy(dict(m)) for m in messages], (), edited=True)

    # --- machinery ----------------------------------------------------------------------

    def _effective_drop(self) -> bool:
        return self.drop_thinking and not self._has_tools

    def _dropping(self) -> bool:
        return self.thinking_mode == "thinking" and self._effective_drop()

    def _merge(self, msg: Message) -> None:
        if msg.get("role") not in ("user", "tool") and msg.get("tools"):
            self._has_tools = True
        merge_one(self._merged, msg)  # already copied by append(); merging never mutates it
        last = self._merged[-1]
        if last.get("role") == "assistant" and last.get("tool_calls"):
            self._order = call_order(last)
        elif last.get("role") == "user" and last.get("content_blocks"):
            sort_blocks(last, self._order)

    def _set_pieces(self, first: int, base: int, pieces: list[str]) -> None:
        self._pieces[first:] = pieces
        self._offsets[first:] = _offsets(pieces, base)
        self._length = base + sum(map(len, pieces))
        self._rendered = True
        self._joined = None

    def _render_all(self, raw: list[Message], new: Sequence[Message], *,
                    edited: bool = False) -> Render:
        old = self.text if self._rendered else ""
        self._merged, self._order, self._has_tools = [], {}, False
        for msg in raw:
            self._merge(msg)
        self._raw = raw
        # A dropping conversation is rendered from its dropped view (prepare() drops).
        full, _, effective_drop = prepare(raw, self.thinking_mode, None, self.drop_thinking)
        renderer = Renderer(full, self.thinking_mode, effective_drop, self.reasoning_effort)
        self._set_pieces(0, len(self._bos), [renderer.render(i) for i in range(len(full))])
        text = self.text
        if text.startswith(old):
            return Render(start=len(old), text=text[len(old):])
        at = common_prefix_len(old, text)
        return self._break(at, old[at:], text[at:], new, edited)

    def _break(self, at: int, old: str, new_text: str, new: Sequence[Message],
               edited: bool) -> Render:
        brk = PrefixBreak(offset=at, message_index=self._message_at(at),
                          cause=self._cause(new, edited), before=old[:40], after=new_text[:40])
        if self.strict:
            raise PrefixBreakError(f"prefix break at offset {at}: {brk.cause}", offset=at,
                                   cause=brk.cause)
        return Render(start=at, text=new_text, prefix_break=brk)

    def _message_at(self, offset: int) -> int:
        """Index of the piece holding ``offset`` (-1 before the first piece)."""
        return bisect.bisect_right(self._offsets, offset) - 1

    def _cause(self, new: Sequence[Message], edited: bool) -> str:
        if edited:
            return "the conversation was edited: an earlier message changed or was removed"
        if self._dropping():
            return ("thinking mode with drop_thinking and no tools: a new user message drops "
                    "the reasoning of earlier turns and closes their <think>")
        if self.drop_thinking and any(
            m.get("tools") for m in new if m.get("role") not in ("user", "tool")
        ):
            return ("a message with tools switched drop_thinking off, so earlier turns now "
                    "render with their reasoning")
        roles = ", ".join(str(m.get("role")) for m in new)
        if new and new[0].get("role") in ("tool", "user"):
            return (f"appended {roles} merged into the user turn already rendered as the last "
                    "one, rewriting its generation prompt (append tool results and user text "
                    "together, before rendering)")
        return (f"the turn before the appended {roles} was rendered as the last one, with a "
                "generation prompt that the new message does not take")


def _offsets(pieces: Sequence[str], base: int) -> list[int]:
    out, at = [], base
    for piece in pieces:
        out.append(at)
        at += len(piece)
    return out


def common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items (characters, token ids) ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case: one is a prefix of the other
        return n
    lo, hi = 0, n
    while lo < hi:  # binary search on slice equality: C-speed, O(n log n) not O(n) Python steps
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
