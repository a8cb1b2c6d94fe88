"""The input box: Enter sends, Ctrl+J breaks the line, Up and Down walk what was sent."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from whalebone.tui.prompt import PromptInput

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class PromptOnly(App[None]):
    def __init__(self, history: Path | None = None) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.history = history

    def compose(self) -> ComposeResult:
        yield PromptInput(self.history)

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        self.sent.append(message.text)


async def test_enter_sends_and_ctrl_j_starts_a_new_line() -> None:
    app = PromptOnly()
    async with app.run_test() as pilot:
        box = app.query_one(PromptInput)
        box.focus()
        await pilot.press(*"first", "ctrl+j", *"second")
        assert box.text == "first\nsecond" and app.sent == []
        await pilot.press("enter")
        assert app.sent == ["first\nsecond"] and box.text == ""


async def test_blank_input_is_not_sent() -> None:
    app = PromptOnly()
    async with app.run_test() as pilot:
        app.query_one(PromptInput).focus()
        await pilot.press("space", "ctrl+j", "enter")
        assert app.sent == []


async def test_up_and_down_walk_the_history_and_restore_the_draft() -> None:
    app = PromptOnly()
    async with app.run_test() as pilot:
        box = app.query_one(PromptInput)
        box.focus()
        for text in ("one", "two"):
            await pilot.press(*text, "enter")
        await pilot.press(*"draft")
        await pilot.press("up")
        assert box.text == "two"
        await pilot.press("up", "up")
        assert box.text == "one"  # the oldest stays
        await pilot.press("down")
        assert box.text == "two"
        await pilot.press("down")
        assert box.text == "draft"
        await pilot.press("enter", "up")
        assert box.text == "draft" and box.sent == ["one", "two", "draft"]


async def test_up_inside_a_multi_line_message_moves_the_cursor_not_the_history() -> None:
    app = PromptOnly()
    async with app.run_test() as pilot:
        box = app.query_one(PromptInput)
        box.focus()
        await pilot.press(*"old", "enter", *"a", "ctrl+j", *"b")
        await pilot.press("up")
        assert box.text == "a\nb" and box.cursor_location[0] == 0


async def test_the_history_outlives_the_app_in_a_private_file(tmp_path: Path) -> None:
    history = tmp_path / "home" / "chat_history.jsonl"
    app = PromptOnly(history)
    async with app.run_test() as pilot:
        app.query_one(PromptInput).focus()
        await pilot.press(*"first", "ctrl+j", *"two lines", "enter", *"second", "enter")
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    with history.open("a") as f:
        f.write("not json\n")  # a damaged line is skipped, not fatal
    again = PromptOnly(history)
    async with again.run_test() as pilot:
        box = again.query_one(PromptInput)
        box.focus()
        assert box.sent == ["first\ntwo lines", "second"]
        await pilot.press("up", "up")
        assert box.text == "first\ntwo lines"
