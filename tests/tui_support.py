"""Helpers shared by the tui tests: a runner on a real session store and a scripted engine, the
text of the screen as a person sees it, and waiting for the app to get somewhere."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.app import App, ComposeResult

from whalebone.agent.store import SessionStore
from whalebone.dsml import emit_completion
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.shell import ShellPolicy
from whalebone.tui.approvals import ApprovalLog
from whalebone.tui.runner import ChatRunner
from whalebone.tui.transcript import TranscriptView

__all__ = ["answer", "asking", "make_runner", "screen_text", "shell_call", "wait_for"]


def answer(text: str, reasoning: str | None = "Let me think.") -> str:
    return emit_completion(text, reasoning=reasoning)


def shell_call(command: str, reasoning: str = "I will run it.") -> str:
    return emit_completion("", reasoning=reasoning, tool_calls=[("shell", {"command": command})])


def make_runner(tmp_path: Path, completions: Sequence[str], *, delay: float = 0.0,
                allow: Sequence[str] = (), **options: Any) -> ChatRunner:
    engine = ScriptedEngine(list(completions), delay=delay)
    return ChatRunner(SessionStore(tmp_path / "sessions.db"), engine=engine,
                      workspace=tmp_path, shell_policy=ShellPolicy(allow=list(allow)),
                      approvals=ApprovalLog(tmp_path / "approvals.jsonl"), **options)


def screen_text(app: Any) -> str:
    """The current screen (modals over their background) as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()


async def wait_for(pilot: Any, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``condition`` holds; fail with the screen if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out; the screen was:\n" + screen_text(pilot.app))
        await pilot.pause(0.05)


def asking(app: Any, modal: type) -> bool:
    """An approval modal of this type is up and its reason box has the keyboard."""
    focused = app.focused
    return isinstance(app.screen, modal) and focused is not None and focused.id == "reason"


class TranscriptOnly(App[None]):
    """The transcript alone in an app, for tests of what it draws."""

    def compose(self) -> ComposeResult:
        yield TranscriptView()
