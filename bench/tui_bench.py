"""How the chat keeps up with a fast stream, and how fast a long session opens.

    .venv/bin/python bench/tui_bench.py [DELTAS ...] [--naive] [--turns N]

A model streams 3-character deltas; a V4 turn with long reasoning in ``max`` mode is tens of
thousands of them. For each size the transcript is fed DELTAS reasoning deltas, then DELTAS
text deltas (one turn of 2*DELTAS deltas), yielding to the event loop after each as a real
engine stream does; the run ends when the screen is idle. Printed per size: seconds, µs per
delta, deltas per second of wall time, and the growth of the per-delta cost over the first
size (flat is 1.0x; the goal is at most 1.5x from 500 to 30,000 deltas). The text is one long
paragraph (the worst case for a Markdown re-parse); a second column feeds a Markdown answer of
paragraphs, lists and code at the same size.

``--naive`` adds the naive widget (re-render everything on every delta) for comparison; it is
quadratic, so keep it to small sizes. Last, a stored session of ``--turns`` turns (default
1,000) is opened in the transcript and timed until the screen is painted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from textual.app import App, ComposeResult
from textual.widgets import Markdown, Static

from whalebone.agent import events as ev
from whalebone.tui.transcript import TranscriptView

WORDS = "the model considers the failing test and the parser state before it answers ".split()
MARKDOWN = ("Some **prose** about the `parser` and its state, long enough to wrap once or "
            "twice on a normal terminal, with a [link](http://example.com) in it.\n\n"
            "- a first item\n- a second item with `code`\n\n"
            "```python\ndef f(x):\n    return x + 1\n```\n\n")


def deltas(n: int) -> list[str]:
    text = " ".join(WORDS[i % len(WORDS)] for i in range(n))
    return [text[i:i + 3] for i in range(0, 3 * n, 3)]


def markdown_deltas(n: int) -> list[str]:
    text = MARKDOWN * (3 * n // len(MARKDOWN) + 1)
    return [text[i:i + 3] for i in range(0, 3 * n, 3)]


class Transcript(App[None]):
    def compose(self) -> ComposeResult:
        yield TranscriptView()


class Naive(App[None]):
    def compose(self) -> ComposeResult:
        yield Static(id="reasoning")
        yield Markdown(id="text")


async def run_transcript(reasoning: list[str], text: list[str]) -> float:
    app = Transcript()
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(TranscriptView)
        start = time.perf_counter()
        await view.feed(ev.StepStarted(step=1))
        for part in reasoning:
            await view.feed(ev.Reasoning(text=part))
            await asyncio.sleep(0)
        for part in text:
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


def session(turns: int) -> list[dict[str, object]]:
    """A stored session as the store returns it: each turn a question, reasoning, a tool call
    with its result, and a Markdown answer."""
    messages: list[dict[str, object]] = [{"role": "system", "content": "system prompt"}]
    for i in range(turns):
        call = f"call{i}"
        messages += [
            {"role": "user", "content": f"question {i}: what does the parser do here?"},
            {"role": "assistant", "content": "", "reasoning_content": "I should look. " * 20,
             "tool_calls": [{"id": call, "function": {
                 "name": "shell", "arguments": json.dumps({"command": f"grep -n x{i} f.py"})}}]},
            {"role": "tool", "tool_call_id": call, "content": "\n".join(
                f"{n}: line" for n in range(12))},
            {"role": "assistant", "content": MARKDOWN + f"Answer {i}."},
        ]
    return messages


async def open_session(messages: list[dict[str, object]]) -> tuple[float, bool]:
    app = Transcript()
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(TranscriptView)
        start = time.perf_counter()
        await view.load(messages)
        await pilot.pause()
        seconds = time.perf_counter() - start
        last = messages[-1]["content"]
        shown = isinstance(last, str) and last.rsplit(" ", 1)[-1] in _screen(app)
        return seconds, shown


def _screen(app: App[None]) -> str:
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[500, 2000, 8000, 30000])
    parser.add_argument("--naive", action="store_true", help="also time the naive widget")
    parser.add_argument("--turns", type=int, default=1000, help="turns in the stored session")
    args = parser.parse_args()
    print(f"{'deltas':>7} {'s':>7} {'µs/delta':>9} {'deltas/s':>9} {'growth':>7} "
          f"{'md µs/delta':>12} {'md growth':>10}" + (f" {'naive s':>8}" if args.naive else ""))
    asyncio.run(run_transcript(deltas(50), markdown_deltas(50)))  # imports, parser tables
    first: tuple[float, float] | None = None
    for n in args.sizes:
        parts = deltas(n)
        ours = asyncio.run(run_transcript(parts, parts))
        md = asyncio.run(run_transcript(parts, markdown_deltas(n)))
        per, md_per = ours / (2 * n) * 1e6, md / (2 * n) * 1e6
        first = first or (per, md_per)
        line = (f"{n:>7} {ours:>7.2f} {per:>9.0f} {2 * n / ours:>9.0f} {per / first[0]:>6.2f}x "
                f"{md_per:>12.0f} {md_per / first[1]:>9.2f}x")
        if args.naive:
            line += f" {asyncio.run(run_naive(parts)):>8.2f}"
        print(line, flush=True)
    if args.turns:
        seconds, shown = asyncio.run(open_session(session(args.turns)))
        print(f"a stored session of {args.turns} turns opens in {seconds:.2f} s"
              f"{'' if shown else ' (its last answer is NOT on screen)'}")


if __name__ == "__main__":
    main()
