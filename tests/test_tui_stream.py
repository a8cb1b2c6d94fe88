"""Streaming text at a cost per delta that does not grow: finished Markdown blocks are frozen,
the live tail stays small, long texts show their end. Driven through the real transcript."""

from __future__ import annotations

import pytest
from tui_support import TranscriptOnly, screen_text

from whalebone.agent import events as ev
from whalebone.tui.stream import (
    CHUNK_CHARS,
    TAIL_CHARS,
    FoldedText,
    LiveMarkdown,
    MarkdownText,
    _parser,
    split_finished,
)
from whalebone.tui.transcript import ReasoningBlock, TranscriptView

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def drain(source: str) -> list[tuple[str, bool]]:
    """Split ``source`` the way a stream is frozen, block by block, until nothing is left."""
    parser, out = _parser(), []
    while True:
        head, source, continues = split_finished(source, parser)
        if not head:
            return [*out, (source, False)]
        out.append((head, continues))


def test_finished_blocks_are_split_off_and_nothing_is_lost() -> None:
    text = "# Title\n\nA paragraph.\n\n- one\n- two\n\n```py\nx = 1\n```\n\nthe live tail"
    pieces = drain(text)
    assert "".join(p for p, _ in pieces) == text
    assert pieces[-1][0] == "the live tail"
    assert not any(cont for _, cont in pieces)


def test_an_endless_paragraph_is_cut_at_words_and_stays_small() -> None:
    text = " ".join(f"word{i}" for i in range(5_000)) + " and **bold** end"
    pieces = drain(text)
    assert all(len(p) <= 4 * TAIL_CHARS for p, _ in pieces)
    assert pieces[-1][0].endswith("**bold** end")
    # The cut is at whitespace and the rest starts with a letter: rejoined, the words are whole.
    assert " ".join(p.strip() for p, _ in pieces).split() == text.split()
    assert all(cont for _, cont in pieces[:-1])


def test_an_unclosed_code_span_is_not_cut_in_the_middle() -> None:
    text = "start `" + "code " * (TAIL_CHARS // 5) + "` after"
    head, _, _ = split_finished(text, _parser())
    assert head == "" or head.count("`") % 2 == 0


def test_an_endless_code_fence_is_closed_and_reopened() -> None:
    text = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(1_000))
    pieces = drain(text)
    assert len(pieces) > 2
    for piece, cont in pieces[:-1]:
        assert piece.startswith("```python\n") and piece.endswith("```\n") and cont
    lines = [line for p, _ in pieces for line in p.splitlines() if not line.startswith("```")]
    assert lines == [f"x{i} = {i}" for i in range(1_000)]


async def test_a_long_streamed_answer_is_drawn_in_few_widgets_and_shown_whole() -> None:
    para = "Some **prose** about the parser, long enough to wrap on a terminal.\n\n"
    listing = "- an item\n- another item\n\n"
    text = (para + listing) * 200 + "THE END"
    app = TranscriptOnly()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        await view.feed(ev.StepStarted(step=1))
        for i in range(0, len(text), 3):
            await view.feed(ev.AnswerText(text=text[i:i + 3]))
        await view.feed(ev.Done(reason="answer"))
        await pilot.pause(0.1)
        live = app.query_one(LiveMarkdown)
        chunks = list(live.query(MarkdownText))
        # 200 paragraphs and 200 lists, in a handful of widgets (one per few thousand chars).
        assert len(chunks) <= len(text) // (CHUNK_CHARS // 2) + 2
        assert "".join(c.source for c in chunks) == text == live.source
        assert "THE END" in screen_text(app)


async def test_a_long_reasoning_shows_its_end_and_the_whole_on_demand() -> None:
    app = TranscriptOnly()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(TranscriptView)
        await view.feed(ev.StepStarted(step=1))
        words = [f"thought{i} " for i in range(4_000)]
        for word in words:
            await view.feed(ev.Reasoning(text=word))
        await view.feed(ev.Done(reason="answer"))
        block = app.query_one(ReasoningBlock)
        block.collapsed = False
        await pilot.pause(0.2)
        body = block.query_one(FoldedText)
        shown = body.render().plain  # type: ignore[attr-defined]
        assert "thought3999" in shown and "thought0 " not in shown
        assert "earlier characters folded" in shown and len(shown) < 4_000
        assert block.text == "".join(words)
        body.action_show_all()
        await pilot.pause(0.1)
        assert "thought0 " in body.render().plain  # type: ignore[attr-defined]
