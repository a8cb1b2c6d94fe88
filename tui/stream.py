"""Streaming text whose cost per delta does not grow with what is already on screen.

A V4 answer in ``max`` mode is tens of thousands of deltas. Textual's ``Markdown.append`` joins
and splits the whole document on every append and its one growing paragraph is re-wrapped on
every frame, so a delta costs time in proportion to the text so far. Here:

- :class:`LiveMarkdown` keeps one small *tail* document, the block still being written; each
  block that is finished (the parser has started the next one) goes into a frozen chunk of a
  few thousand characters, drawn as one widget, and is not parsed again once its chunk is
  full. A block that grows without end (one huge paragraph, code fence or list) is cut at a
  safe point, so the tail stays bounded too.
- :class:`FoldedText` shows a long text (reasoning, a tool's result) as its last lines, with the
  whole of it one key or click away; only the bounded tail is re-rendered as text arrives.

Deltas are coalesced: the screen is brought up to date at most :data:`FLUSH_S` apart.
"""

from __future__ import annotations

import asyncio
import re
from itertools import accumulate
from typing import Any, ClassVar

from markdown_it import MarkdownIt
from rich.markdown import Markdown as RichMarkdown
from rich.text import Text as RichText
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import Static

FLUSH_S = 0.05  # at most 20 screen updates a second for a stream; a terminal shows no more
TAIL_CHARS = 2_000  # a live block longer than this is cut, so its re-parse stays cheap
CHUNK_CHARS = 4_000  # frozen blocks are drawn in widgets of about this much source
CODE_THEME = "ansi_dark"  # terminal colours, so code reads in the light theme too
SHOW_CHARS = 3_000  # a folded text shows about this much of its end
SHOW_LINES = 40

# Where a long paragraph may be cut: after whitespace, before a letter (so the rest cannot start
# a list, heading, quote, fence or code block of its own).
_CUT = re.compile(r"\s+(?=[A-Za-z(\"'])")
_FENCE = re.compile(r"^([ ]{0,3})(`{3,}|~{3,})")


def _parser() -> MarkdownIt:
    # Block boundaries as Rich's renderer sees them (CommonMark with tables and strikethrough).
    return MarkdownIt().enable("strikethrough").enable("table")


def _balanced(text: str) -> bool:
    """Whether a paragraph's head closes every inline span it opens (code, emphasis, links), so
    that cutting it there renders both halves as the whole would have been."""
    return (text.count("`") % 2 == 0 and text.count("**") % 2 == 0
            and text.count("[") == text.count("]") and text.count("(") >= text.count(")"))


def split_finished(source: str, parser: MarkdownIt, limit: int = TAIL_CHARS
                   ) -> tuple[str, str, bool]:
    """Split ``source`` into a finished head (to be frozen) and the live tail.

    Returns ``(head, tail, continues)``; ``head`` is empty when nothing can be frozen yet, and
    ``continues`` says the head was cut inside a block that the tail carries on (so the two are
    drawn without a gap)."""
    tokens = parser.parse(source)
    starts = sorted({t.map[0] for t in tokens if t.level == 0 and t.map is not None})
    lines = source.splitlines(keepends=True)
    if len(starts) >= 2:  # every block before the last one is finished
        cut = starts[-1]
        return "".join(lines[:cut]), "".join(lines[cut:]), False
    if len(source) <= limit or not tokens:
        return "", source, False
    first = tokens[0]
    if first.type == "paragraph_open":
        return _cut_paragraph(source, limit)
    if first.type == "fence" and len(lines) > 2:
        return _cut_fence(lines)
    if first.type in ("bullet_list_open", "ordered_list_open", "blockquote_open"):
        inner = [t.map[0] for t in tokens if t.level == 1 and t.nesting == 1 and t.map]
        inner = [i for i in inner if i > (first.map or [0])[0]]
        # The first item that ends a head of about ``limit`` characters, else the last one.
        offsets = list(accumulate((len(line) for line in lines), initial=0))
        sizes = [offsets[i] for i in inner]
        cut = next((i for i, n in zip(inner, sizes, strict=True) if n >= limit // 2),
                   inner[-1] if inner else 0)
        if cut:
            return "".join(lines[:cut]), "".join(lines[cut:]), True
    return "", source, False  # tables and the rest grow in place (rarely this long)


def _cut_paragraph(source: str, limit: int) -> tuple[str, str, bool]:
    """Cut a long paragraph at a word near ``limit`` whose head closes its inline spans (or,
    past four times the limit, at any word), keeping a little of the end live."""
    keep = limit // 4
    best = fallback = None
    for match in _CUT.finditer(source, 0, len(source) - keep):
        if match.start() <= limit:
            fallback = match
        if _balanced(source[:match.start()]):
            best = match
            if match.start() >= limit // 2:
                break
    found = best or (fallback if len(source) > 4 * limit else None)
    if found is None:
        return "", source, False
    return source[:found.start()] + "\n", source[found.end():], True


def _cut_fence(lines: list[str]) -> tuple[str, str, bool]:
    opening = lines[0]
    found = _FENCE.match(opening)
    if found is None:
        return "", "".join(lines), False
    indent, markup = found.groups()
    body = lines[1:]
    if body and _FENCE.match(body[-1]) and body[-1].strip().startswith(markup):
        return "", "".join(lines), False  # closed: the block is whole and stops growing
    size, cut = len(opening), 0
    while cut < len(body) - 3 and size < TAIL_CHARS:  # the last lines stay live
        size += len(body[cut])
        cut += 1
    if cut == 0:
        return "", "".join(lines), False
    head = opening + "".join(body[:cut])
    if not head.endswith("\n"):
        head += "\n"
    return head + indent + markup + "\n", opening + "".join(body[cut:]), True


class MarkdownText(Static):
    """Markdown drawn as one widget (Rich's renderer), however many blocks it holds.

    Textual lays out every widget on the screen at every layout change, scrolled out of view or
    not, so a Markdown widget per block (with its child widgets) would make each delta's layout
    cost grow with the blocks above it. One widget per few thousand characters keeps that small.
    Rich's Markdown shows text as text: console markup in it is not interpreted."""

    def __init__(self, source: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self._draw()

    def set_source(self, source: str) -> None:
        self.source = source
        self._draw()

    def _draw(self) -> None:
        self.update(RichMarkdown(self.source, code_theme=CODE_THEME, hyperlinks=False)
                    if self.source.strip() else "")


class LiveMarkdown(Vertical):
    """Markdown fed in fragments: frozen chunks of finished blocks and one live tail."""

    DEFAULT_CSS = """
    LiveMarkdown { height: auto; }
    LiveMarkdown > MarkdownText { height: auto; margin: 0 0 1 0; }
    LiveMarkdown > MarkdownText.continues { margin: 0; }
    LiveMarkdown > MarkdownText.live-tail { margin: 0; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parser = _parser()
        self._parts: list[str] = []  # the whole source, for the store-equivalent text
        self._pending: list[str] = []
        self._tail = MarkdownText(classes="live-tail")
        self._chunk: MarkdownText | None = None  # the frozen chunk that still takes blocks
        self._timer: Timer | None = None
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def compose(self) -> Any:
        yield self._tail

    def write(self, text: str) -> None:
        """Add a fragment; it reaches the screen within :data:`FLUSH_S`."""
        self._parts.append(text)
        self._pending.append(text)
        if len(self._parts) > 4_096:
            self._parts = ["".join(self._parts)]
        if self._timer is None:
            self._timer = self.set_timer(FLUSH_S, self._flush_soon)

    async def _flush_soon(self) -> None:
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        """Bring the screen up to date: freeze what is finished, re-render the tail."""
        async with self._lock:
            if not self._pending:
                return
            source = self._tail.source + "".join(self._pending)
            self._pending.clear()
            with self.app.batch_update():
                while True:
                    head, source, continues = split_finished(source, self._parser)
                    if not head:
                        break
                    await self._freeze(head, continues)
                self._tail.set_source(source)

    async def _freeze(self, head: str, continues: bool) -> None:
        chunk = self._chunk
        if chunk is not None and len(chunk.source) + len(head) <= CHUNK_CHARS:
            chunk.set_source(chunk.source + head)  # a cut paragraph joins up again here
        else:
            chunk = self._chunk = MarkdownText(head, classes="frozen")
            await self.mount(chunk, before=self._tail)
        chunk.set_class(continues, "continues")

    async def stop(self) -> None:
        """The stream is over: show everything that is left."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        await self.flush()


def tail_of(parts: list[str], total: int, chars: int = SHOW_CHARS, lines: int = SHOW_LINES
            ) -> tuple[str, int]:
    """The end of the text ``parts`` make (about ``chars`` characters, at most ``lines`` lines,
    starting at a line or word boundary) and how many of the ``total`` come before it. It walks
    back from the end, so its cost does not depend on the length of the text."""
    taken: list[str] = []
    size = 0
    for part in reversed(parts):
        taken.append(part)
        size += len(part)
        if size > chars:
            break
    text = "".join(reversed(taken))
    if len(text) <= chars and text.count("\n") < lines:
        return text, total - len(text)
    text = text[-chars:]
    kept = text.split("\n")[-lines:]
    text = "\n".join(kept)
    if len(kept) < lines and (space := text.find(" ")) != -1 and space < 80:
        text = text[space + 1:]  # start at a word, not half-way through one
    return text, total - len(text)


class FoldedText(Static):
    """A long plain text shown as its end; ``show_all`` (click, or Enter when focused) shows
    the whole. Text appended while folded costs the tail's length, not the text's."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "show_all", "Show all")]

    def __init__(self, text: str = "", *, chars: int = SHOW_CHARS, lines: int = SHOW_LINES,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parts = [text] if text else []
        self._length = len(text)
        self.chars, self.lines = chars, lines
        self.whole = False
        self.can_focus = False

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def __len__(self) -> int:
        return self._length

    def append(self, text: str) -> None:
        """Add text; call :meth:`show` to bring the screen up to date."""
        self._parts.append(text)
        self._length += len(text)
        if len(self._parts) > 4_096:  # keep the walk back from the end short
            self._parts = ["".join(self._parts)]

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        if self.whole:
            self.update(RichText(self.text))
            return
        tail, hidden = tail_of(self._parts, self._length, self.chars, self.lines)
        self.can_focus = hidden > 0
        if not hidden:
            self.update(RichText(tail))
            return
        note = RichText(f"⋯ {hidden:,} earlier characters folded (click or Enter: show all)\n",
                        style="dim")
        self.update(RichText.assemble(note, tail))

    def on_click(self) -> None:
        self.action_show_all()

    def action_show_all(self) -> None:
        if not self.whole:
            self.whole = True
            self.can_focus = False
            self.show()
