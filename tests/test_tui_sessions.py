"""The session list, by keyboard: choose, new, rename, delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import make_runner, screen_text, wait_for

from whalebone.tui.app import ChatApp
from whalebone.tui.modals import ConfirmQuestion, TextQuestion
from whalebone.tui.sessions import SessionList

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_with_sessions(tmp_path: Path) -> tuple[ChatApp, str, str]:
    runner = make_runner(tmp_path, [])
    older = runner.store.create(title="older [b]bold?[/b]")
    with runner.store.open(older) as session:
        session.append({"role": "system", "content": "s"},
                       {"role": "user", "content": "what happened before"})
    newer = runner.store.create(title="newer")
    return ChatApp(runner), older, newer


async def test_a_session_is_chosen_with_the_keyboard(tmp_path: Path) -> None:
    app, older, _ = app_with_sessions(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert "older [b]bold?[/b]" in screen_text(app)  # titles are text, not markup
        await pilot.press("ctrl+b")  # the footer's Sessions key focuses the list
        assert isinstance(app.focused, SessionList)
        await pilot.press("down", "enter")  # newest first: down to the older one
        await wait_for(pilot, lambda: app.runner.session_id == older
                       and "what happened before" in screen_text(app))


async def test_new_rename_and_delete_keys_ask_then_act(tmp_path: Path) -> None:
    app, older, newer = app_with_sessions(tmp_path)
    store = app.runner.store
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+b")  # the footer's Sessions key focuses the list
        await wait_for(pilot, lambda: app.query_one(SessionList).highlighted_id == newer)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, TextQuestion))
        await pilot.press("ctrl+a", "ctrl+k", *"renamed", "enter")
        await wait_for(pilot, lambda: store.info(newer).title == "renamed")
        await wait_for(pilot, lambda: "renamed" in screen_text(app))
        assert isinstance(app.focused, SessionList)  # the list has the keyboard back
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuestion))
        assert "Delete the session 'renamed'?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: [s.id for s in store.list()] == [older])
        assert isinstance(app.focused, SessionList)
        await pilot.press("n")
        await wait_for(pilot, lambda: app.focused is app.prompt)
        assert app.runner.session_id is None  # the next message starts a session
