"""Snapshots of the main screens at 80x24 (pytest-textual-snapshot: SVGs under
tests/__snapshots__/; after a deliberate change, look at them and run
``pytest tests/test_tui_snapshots.py --snapshot-update``).

The screens are built from a stored session, so nothing in them depends on the clock: a tool
call's duration is shown only live, never for a stored one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tui_support import make_runner

from whalebone.agent.store import UsageRecord
from whalebone.tui.app import ChatApp
from whalebone.tui.modals import ShellApproval

LONG_RESULT = "\n".join(f"tests/test_{i:02d}.py ....... ok" for i in range(30))


def stored_app(tmp_path: Path, theme: str = "dark") -> ChatApp:
    runner = make_runner(tmp_path, [])
    store = runner.store
    store.create(title="an older session about the parser")
    sid = store.create(title="run the tests")
    with store.open(sid) as session:
        session.append(
            {"role": "system", "content": "You are whalebone."},
            {"role": "user", "content": "Run the tests and tell me what fails."},
            {"role": "assistant", "content": "", "reasoning_content": "I should run pytest.",
             "tool_calls": [{"id": "call_2_0", "type": "function", "function": {
                 "name": "shell", "arguments": json.dumps({"command": "pytest -q"})}}]},
            {"role": "tool", "tool_call_id": "call_2_0", "content": LONG_RESULT},
            {"role": "assistant", "content": "All **30** test files pass:\n\n- parser\n- "
             "encoder", "reasoning_content": "Everything passed."},
        )
        session.record_usage(UsageRecord(prompt_tokens=12_000, cache_hit_tokens=0,
                                         completion_tokens=40, price=0.0))
        session.record_usage(UsageRecord(prompt_tokens=13_500, cache_hit_tokens=12_032,
                                         completion_tokens=60, price=0.0))
    return ChatApp(runner, session_id=sid, theme=theme)


def test_the_main_screen_in_the_dark_theme(tmp_path: Path, snap_compare: Any) -> None:
    assert snap_compare(stored_app(tmp_path), terminal_size=(80, 24))


def test_the_main_screen_in_the_light_theme(tmp_path: Path, snap_compare: Any) -> None:
    assert snap_compare(stored_app(tmp_path, theme="light"), terminal_size=(80, 24))


def test_a_shell_approval_over_the_transcript(tmp_path: Path, snap_compare: Any) -> None:
    async def ask(pilot: Any) -> None:
        pilot.app.push_screen(ShellApproval("rm -rf build && make", "/home/me/project"))
        await pilot.pause()

    assert snap_compare(stored_app(tmp_path), terminal_size=(80, 24), run_before=ask)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_the_screen_holds_together_at_small_and_large_sizes(tmp_path: Path, snap_compare: Any,
                                                             size: tuple[int, int]) -> None:
    async def expand(pilot: Any) -> None:
        # Ctrl+B gives the session list the keyboard; again, it hides the list and the
        # transcript takes the width.
        await pilot.press("ctrl+b", "ctrl+b")
        await pilot.pause()

    assert snap_compare(stored_app(tmp_path), terminal_size=size, run_before=expand)
