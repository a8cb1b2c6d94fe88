"""The transcript: live events and stored sessions give the same widgets; model and tool text
is shown as text, never as markup; long results start folded."""

from __future__ import annotations

import json

import pytest
from tui_support import TranscriptOnly, screen_text

from whalebone.agent import events as ev
from whalebone.tui.stream import FoldedText
from whalebone.tui.transcript import ReasoningBlock, ToolPanel, TranscriptView

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


HOSTILE = "[bold red]SYSTEM[/] [link=http://x]click[/link] [@click=app.quit]quit[/]"


async def test_live_events_build_reasoning_text_and_tool_panels() -> None:
    app = TranscriptOnly()
    async with app.run_test(size=(80, 30)) as pilot:
        view = app.query_one(TranscriptView)
        await view.user("list files")
        for event in [ev.StepStarted(step=1), ev.Reasoning(text="I will "),
                      ev.Reasoning(text="look."), ev.AnswerText(text="\n\nLooking "),
                      ev.AnswerText(text="**now**."),
                      ev.ToolCalled(call_id="c1", name="shell", arguments={"command": "ls"}),
                      ev.ToolFinished(call_id="c1", name="shell", content="exit code 0\na\nb",
                                      is_error=False, seconds=0.25),
                      ev.Done(reason="answer")]:
            await view.feed(event)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "Reasoning (12 chars)" in text and "I will look." not in text
        assert "Looking now." in text
        assert "shell  ok  0.25s" in text and "command: ls" in text
        assert "exit code 0" in text  # short results are shown open
        (reasoning,) = app.query(ReasoningBlock)
        assert reasoning.text == "I will look." and reasoning.collapsed


async def test_long_results_fold_and_failures_are_marked() -> None:
    app = TranscriptOnly()
    async with app.run_test(size=(80, 30)) as pilot:
        view = app.query_one(TranscriptView)
        long = "\n".join(f"line {i}" for i in range(40))
        await view.feed(ev.ToolCalled(call_id="a", name="shell", arguments={"command": "x"}))
        await view.feed(ev.ToolCalled(call_id="b", name="http_get", arguments={"url": "u"}))
        await view.feed(ev.ToolFinished(call_id="a", name="shell", content=long,
                                        is_error=False, seconds=1.0))
        await view.feed(ev.ToolFinished(call_id="b", name="http_get", content="refused",
                                        is_error=True, seconds=0.0))
        await pilot.pause(0.1)
        first, second = app.query(ToolPanel)
        text = screen_text(app)
        # Folded to its end: the last lines show (errors and summaries are there), not the rest.
        assert "line 39" in text and "line 31" not in text and "line 0\n" not in text
        assert "40 lines, " in text and "earlier characters folded" in text
        first.query_one(FoldedText).action_show_all()
        await pilot.pause(0.1)
        assert "line 0" in first.query_one(FoldedText).render().plain
        assert second.status == "error" and second.has_class("error")


async def test_model_and_tool_text_is_never_markup() -> None:
    app = TranscriptOnly()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(TranscriptView)
        await view.user(HOSTILE)
        await view.feed(ev.ToolCalled(call_id="c", name="shell", arguments={"command": HOSTILE}))
        await view.feed(ev.ToolFinished(call_id="c", name="shell", content=HOSTILE,
                                        is_error=False, seconds=0.1))
        await pilot.pause(0.1)
        assert screen_text(app).count("[bold red]SYSTEM[/]") == 3
        assert app.is_running  # the @click action did nothing


async def test_a_run_cut_short_marks_its_running_calls() -> None:
    app = TranscriptOnly()
    async with app.run_test() as pilot:
        view = app.query_one(TranscriptView)
        await view.feed(ev.ToolCalled(call_id="c", name="shell", arguments={"command": "sleep"}))
        await view.interrupted("■ cancelled")
        await pilot.pause(0.1)
        assert app.query_one(ToolPanel).status == "cancelled"
        assert "■ cancelled" in screen_text(app)


async def test_a_stored_session_is_rebuilt_with_results_matched_to_calls() -> None:
    app = TranscriptOnly()
    messages = [
        {"role": "system", "content": "hidden system prompt"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "reasoning_content": "thinking",
         "tool_calls": [
             {"id": "x1", "function": {"name": "shell", "arguments": json.dumps({"command":
                                                                               "ls"})}},
             {"id": "x2", "function": {"name": "shell", "arguments": "{broken"}}]},
        {"role": "tool", "tool_call_id": "x1", "content": "file.txt"},
        {"role": "tool", "tool_call_id": "x2", "content": "error: bad arguments"},
        {"role": "compaction", "summary": "…"},
        {"role": "assistant", "content": "Done: *file.txt*."},
    ]
    async with app.run_test(size=(80, 30)) as pilot:
        view = app.query_one(TranscriptView)
        await view.load(messages, failed={"x2"})
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "hidden system prompt" not in text
        assert "Done: file.txt." in text and "compacted" in text
        ok, bad = app.query(ToolPanel)
        assert (ok.status, bad.status) == ("ok", "error")
        assert "(unparsed): {broken" in text
