"""The chat app driven by Textual's pilot against a real scripted engine and a real session
store: typing, streaming, cancelling, approving, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import answer, asking, make_runner, screen_text, shell_call, wait_for

from whalebone.tui.app import ChatApp
from whalebone.tui.modals import ShellApproval
from whalebone.tui.transcript import ToolPanel

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


async def send(pilot, text: str) -> None:
    """Type ``text`` and send it without waiting for the run (pilot.press("enter") waits until
    the CPU is idle, which a streaming run does not leave it)."""
    await pilot.press(*text)
    pilot.app.prompt.submit()
    await pilot.pause(0.02)


async def test_a_typed_message_is_answered_and_stored(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("Hello **there**, friend.")])
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"hi", "enter")
        # The folded reasoning header may paint a frame after the answer on a loaded machine.
        await wait_for(pilot, lambda: not app.running and "friend." in screen_text(app)
                       and "Reasoning (13 chars)" in screen_text(app))
        text = screen_text(app)
        assert "Hello there, friend." in text and "[idle]" in text
        assert "Reasoning (13 chars)" in text  # folded, not shown
        assert "Let me think." not in text
        sid = runner.session_id
        assert sid is not None
        stored = runner.store.messages(sid)
        assert [m["role"] for m in stored] == ["system", "user", "assistant"]
        assert stored[-1]["content"].startswith("Hello **there**")
        assert runner.store.info(sid).title == "hi"


async def test_the_answer_streams_onto_the_screen_while_running(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("First part. " + "more " * 60 + "THE END")],
                         delay=0.01)
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "stream please")
        await wait_for(pilot, lambda: "First part." in screen_text(app))
        partial = screen_text(app)
        assert app.running and "[running]" in partial and "THE END" not in partial
        await wait_for(pilot, lambda: not app.running)
        assert "[idle]" in screen_text(app)
        stored = runner.store.messages(runner.session_id)[-1]["content"]
        assert stored.endswith("THE END")
        assert app.figures.tokens_per_s is not None and app.figures.tokens_per_s > 0


async def test_ctrl_c_cancels_the_step_and_keeps_the_session(tmp_path: Path) -> None:
    slow = answer("Start " + "and on " * 300)
    runner = make_runner(tmp_path, [slow, answer("Second answer.")], delay=0.01)
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "first")
        await wait_for(pilot, lambda: "Start" in screen_text(app))
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.running)
        text = screen_text(app)
        assert "cancelled" in text
        sid = runner.session_id
        assert [m["role"] for m in runner.store.messages(sid)] == ["system", "user"]
        await send(pilot, "again")
        await wait_for(pilot, lambda: not app.running and "Second answer." in screen_text(app))
        assert runner.session_id == sid  # the same session went on
        roles = [m["role"] for m in runner.store.messages(sid)]
        assert roles == ["system", "user", "user", "assistant"]


async def test_a_shell_command_under_ask_opens_a_modal_and_runs_once_approved(
        tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [shell_call("echo approved-output"), answer("Done.")])
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "run it")
        await wait_for(pilot, lambda: asking(app, ShellApproval)
                       and "echo approved-output" in screen_text(app))
        assert app.query_one(ToolPanel).status == "awaiting approval"
        await pilot.press(*"looks safe")
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: not app.running)
        panel = app.query_one(ToolPanel)
        assert panel.status == "ok"
        tool_msg = runner.store.messages(runner.session_id)[-2]
        assert tool_msg["role"] == "tool" and "approved-output" in tool_msg["content"]
        (record,) = runner.approvals.records()
        assert (record.kind, record.subject, record.approved, record.reason) == (
            "shell", "echo approved-output", True, "looks safe")
        assert record.session == runner.session_id


async def test_a_denied_command_does_not_run_and_the_model_hears_the_reason(
        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    runner = make_runner(tmp_path, [shell_call(f"touch {marker}"), answer("Understood.")])
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "do it")
        await wait_for(pilot, lambda: asking(app, ShellApproval))
        await pilot.press(*"not today")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.running)
        assert not marker.exists()
        assert app.query_one(ToolPanel).status == "error"
        tool_msg = runner.store.messages(runner.session_id)[-2]
        assert "a person denied" in tool_msg["content"] and "not today" in tool_msg["content"]
        assert [r.approved for r in runner.approvals.records()] == [False]


async def test_cancelling_while_the_modal_is_open_closes_it(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [shell_call("echo never")])
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "go")
        await wait_for(pilot, lambda: asking(app, ShellApproval))
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.running)
        assert not isinstance(app.screen, ShellApproval)
        assert "cancelled" in screen_text(app)


async def test_sessions_are_listed_resumed_and_started_anew(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("One."), answer("Two.")])
    old = runner.store.create(title="an older session")
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "first session")
        await wait_for(pilot, lambda: not app.running and "One." in screen_text(app))
        first = runner.session_id
        assert "first session" in screen_text(app) and "an older session" in screen_text(app)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: "One." not in screen_text(app))
        await send(pilot, "second session")
        await wait_for(pilot, lambda: not app.running and "Two." in screen_text(app))
        assert runner.session_id not in (first, old)
        await app.open_session(first)
        await pilot.pause()
        assert "One." in screen_text(app) and "Two." not in screen_text(app)
        assert runner.session_id == first


async def test_an_engine_error_is_shown_and_the_app_keeps_going(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])  # the script is exhausted at once
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "hello")
        await wait_for(pilot, lambda: not app.running and "ScriptExhausted" in screen_text(app))
        assert "[error]" in screen_text(app)
        await send(pilot, "still here")
        await wait_for(pilot, lambda: "still here" in screen_text(app))


async def test_quitting_mid_run_leaves_the_session_closed_and_resumable(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("long " * 400), answer("Resumed.")], delay=0.01)
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "start")
        await wait_for(pilot, lambda: "long long" in screen_text(app))
        sid = runner.session_id
        await pilot.press("ctrl+q")
    assert runner.store.info(sid).status == "cancelled"
    with runner.store.open(sid):  # the writer lock was released
        pass
    again = ChatApp(runner, session_id=sid)
    async with again.run_test(size=(80, 24)) as pilot:
        assert "start" in screen_text(again)
        await send(pilot, "go on")
        await wait_for(pilot, lambda: not again.running and "Resumed." in screen_text(again))
