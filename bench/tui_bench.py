"""How the chat keeps up with a fast stream: the transcript's buffered reasoning and batched
Markdown stream against the naive way (re-render on every delta), side by side in one run.

    .venv/bin/python bench/tui_bench.py [DELTAS]

A model streams 3-character deltas; a V4 turn with long reasoning is thousands of them. The
naive widget re-renders the whole reasoning text and appends to the Markdown document on every
delta, so a turn costs O(n^2); the transcript buffers reasoning (shown ten times a second) and
lets Textual's MarkdownStream coalesce text deltas. Both runs see the same deltas and yield to
the event loop after each, as a real engine stream does; each ends when the screen is idle.
"""

from __future__ import annotations

import asyncio
import sys
import time

from textual.app import App, ComposeResult
from textual.widgets import Markdown, Static

from whalebone.agent import events as ev
from whalebone.tui.transcript import TranscriptView

WORDS = "the model considers the failing test and the parser state before it answers ".split()


def deltas(n: int) -> list[str]:
    text = " ".join(WORDS[i % len(WORDS)] for i in range(n))
    return [text[i:i + 3] for i in range(0, 3 * n, 3)]


class Transcript(App[None]):
    def compose(self) -> ComposeResult:
        yield TranscriptView()


class Naive(App[None]):
    def compose(self) -> ComposeResult:
        yield Static(id="reasoning")
        yield Markdown(id="text")


async def run_transcript(parts: list[str]) -> float:
    app = Transcript()
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(TranscriptView)
        start = time.perf_counter()
        await view.feed(ev.StepStarted(step=1))
        for part in parts:
            await view.feed(ev.Reasoning(text=part))
            await asyncio.sleep(0)
        for part in parts:
            await view.feed(ev.AnswerText(text=part))
            await asyncio.sleep(0)
        await view.feed(ev.Done(reason="answer"))
        await pilot.pause()
        return time.perf_counter() - start


async def run_naive(parts: list[str]) -> float:
    app = Naive()
    async with app.run_test(size=(100, 40)) as pilot:
        reasoning = app.query_one("#reasoning", Static)
        text = app.query_one("#text", Markdown)
        start = time.perf_counter()
        shown = ""
        for part in parts:
            shown += part
            reasoning.update(shown)
            await asyncio.sleep(0)
        for part in parts:
            await text.append(part)
            await asyncio.sleep(0)
        await pilot.pause()
        return time.perf_counter() - start


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [500, 2000]
    print(f"{'deltas':>7} {'transcript s':>13} {'naive s':>9} {'speed-up':>9}")
    for n in sizes:
        parts = deltas(n)
        ours = asyncio.run(run_transcript(parts))
        naive = asyncio.run(run_naive(parts))
        print(f"{n:>7} {ours:>13.2f} {naive:>9.2f} {naive / ours:>8.1f}x")


if __name__ == "__main__":
    main()
