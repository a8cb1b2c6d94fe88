"""Everyday use of the chat under the real app's pilot: slash commands, the welcome screen,
quitting with a draft, finding and switching sessions, allow-always approvals, resuming a
session truthfully, and the palette's order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.widgets import OptionList
from tui_support import answer, asking, make_runner, screen_text, shell_call, wait_for

from whalebone.agent.store import UsageRecord
from whalebone.tui.app import ChatApp
from whalebone.tui.modals import ConfirmQuestion, ShellApproval
from whalebone.tui.permissions import Permissions, suggest_pattern
from whalebone.tui.transcript import EarlierTurns, ToolPanel, UserTurn

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def type_and_send(pilot, text: str) -> None:
    await pilot.press(*text)
    pilot.app.prompt.submit()
    await pilot.pause(0.05)


async def test_slash_commands_act_on_the_chat_and_never_reach_the_model(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])  # any model call would fail: the script is empty
    app = ChatApp(runner)
    async with app.run_test(size=(120, 50)) as pilot:
        await type_and_send(pilot, "/help")
        await wait_for(pilot, lambda: "/permissions" in screen_text(app))
        text = screen_text(app)
        assert "/compact" in text and "/cost" in text and "Ctrl+P" in text and "Ctrl+N" in text
        await type_and_send(pilot, "/thinking max")
        await wait_for(pilot, lambda: runner.config.thinking == "max")
        assert "max" in app.status.figures.lines()[0]
        await type_and_send(pilot, "/model")
        await wait_for(pilot, lambda: "Engine: scripted" in screen_text(app))
        await type_and_send(pilot, "/cost")
        await wait_for(pilot, lambda: "nothing spent" in screen_text(app))
        await type_and_send(pilot, "/memory")
        await wait_for(pilot, lambda: "No memory scope is attached" in screen_text(app))
        await type_and_send(pilot, "/frobnicate")
        await wait_for(pilot, lambda: "Unknown command /frobnicate" in screen_text(app))
        assert runner.session_id is None and runner.store.list() == []
        assert not app.query(UserTurn)  # nothing was sent as a message


async def test_a_double_slash_sends_the_text_to_the_model(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("Paths start with a slash.")])
    app = ChatApp(runner)
    async with app.run_test(size=(100, 30)) as pilot:
        await type_and_send(pilot, "//etc is a directory")
        await wait_for(pilot, lambda: not app.running and "Paths start" in screen_text(app))
        user = [m for m in runner.store.messages(runner.session_id) if m["role"] == "user"]
        assert user[0]["content"].startswith("/etc is a directory")


async def test_new_and_cost_after_a_turn(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("One.")])
    app = ChatApp(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "hello")
        await wait_for(pilot, lambda: not app.running and "One." in screen_text(app))
        first = runner.session_id
        await type_and_send(pilot, "/cost")
        await wait_for(pilot, lambda: "This session: 1 model calls" in screen_text(app))
        await type_and_send(pilot, "/new")
        await wait_for(pilot, lambda: runner.session_id is None
                       and "type a message and press Enter" in screen_text(app))
        assert first in [s.id for s in runner.store.list()]  # kept


async def test_the_welcome_screen_says_where_and_how_and_goes_with_the_first_message(
        tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("Hi.")])
    app = ChatApp(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "type a message" in screen_text(app))
        text = screen_text(app)
        assert "engine" in text and "scripted" in text
        assert str(tmp_path.resolve()) in text  # the full workspace path
        assert "no budget ledger" in text and "memory" in text and "/help" in text
        await type_and_send(pilot, "hi")
        await wait_for(pilot, lambda: not app.running and "Hi." in screen_text(app))
        assert "type a message" not in screen_text(app)


async def test_quitting_with_a_typed_draft_asks_first(tmp_path: Path) -> None:
    app = ChatApp(make_runner(tmp_path, []))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*"half a thought")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuestion))
        assert "has not been sent" in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmQuestion))
        assert app.is_running and app.prompt.text == "half a thought"
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuestion))
        await pilot.press("y")
        await pilot.pause(0.2)
    assert app.return_code == 0 or app.return_code is None
    assert not app.is_running


async def test_allow_always_is_persisted_used_listed_and_revoked(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [shell_call("echo first-run"), answer("Ran it."),
                                    shell_call("echo second-run"), answer("Ran again.")],
                         permissions=Permissions(tmp_path / "permissions.json"))
    app = ChatApp(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "run it")
        await wait_for(pilot, lambda: asking(app, ShellApproval))
        assert str(tmp_path.resolve()) in screen_text(app)  # the full workspace path
        assert "echo *" in screen_text(app)  # the pattern "allow always" would add
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: not app.running and "Ran it." in screen_text(app))
        assert json.loads((tmp_path / "permissions.json").read_text()) == ["echo *"]
        # The next matching command runs without a modal.
        await type_and_send(pilot, "again")
        await wait_for(pilot, lambda: not app.running and "Ran again." in screen_text(app))
        assert [p.status for p in app.query(ToolPanel)] == ["ok", "ok"]
        assert len(runner.approvals.records()) == 1
        await type_and_send(pilot, "/permissions")
        await wait_for(pilot, lambda: "1. echo *" in screen_text(app))
        await type_and_send(pilot, "/permissions revoke 1")
        await wait_for(pilot, lambda: "Revoked" in screen_text(app))
    assert json.loads((tmp_path / "permissions.json").read_text()) == []
    assert runner.shell_policy.decide("echo x") == "ask"
    # A new chat reads the file back: the revoked pattern stays revoked.
    again = make_runner(tmp_path, [], permissions=Permissions(tmp_path / "permissions.json"))
    assert again.shell_policy.decide("echo x") == "ask"


def test_suggested_patterns_keep_the_subcommand() -> None:
    assert suggest_pattern("git status -s") == "git status *"
    assert suggest_pattern("ls -la") == "ls *"
    assert suggest_pattern("echo hello there") == "echo *"
    assert suggest_pattern("git push --force") == "git push *"
    assert suggest_pattern("make") == "make"


async def test_approval_time_is_not_counted_as_the_tools_duration(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [shell_call("echo quick"), answer("Done.")])
    app = ChatApp(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_and_send(pilot, "go")
        await wait_for(pilot, lambda: asking(app, ShellApproval))
        await pilot.pause(0.3)  # the person takes their time
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: not app.running and "Done." in screen_text(app))
        panel = app.query_one(ToolPanel)
        assert panel.waited >= 0.3
        assert panel.seconds is not None and panel.seconds < panel.waited
        assert "awaiting approval)" in screen_text(app)


async def test_a_resumed_session_shows_the_truth(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    store = runner.store
    sid = store.create(title="crashed")
    with store.open(sid) as session:
        session.append(
            {"role": "system", "content": "s"},
            {"role": "user", "content": "list the files\n\n[today is 2026-12-01]"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type":
             "function", "function": {"name": "shell", "arguments": '{"command": "ls"}'}}]})
        session.record_usage(UsageRecord(engine="bundled:nano", prompt_tokens=10))
    app = ChatApp(runner, session_id=sid)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: "list the files" in screen_text(app))
        text = screen_text(app)
        assert "today is" not in text
        assert app.query_one(ToolPanel).status == "interrupted"
        assert "shell  interrupted" in text and "shell  running" not in text
        assert "session ran on bundled:nano" in text


async def test_sessions_are_found_by_fuzzy_search_with_full_titles_and_dates(
        tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    long_title = "a rather long title about the tokenizer's byte fallback"
    target = runner.store.create(title=long_title)
    runner.store.create(title="something else")
    app = ChatApp(runner)
    async with app.run_test(size=(120, 40)) as pilot:
        text = screen_text(app)
        # Past 20 characters: the title wraps onto a second line.
        assert "a rather long title" in text and "about the" in text and "msgs" in text
        assert "● running" in text  # the markers are explained
        await type_and_send(pilot, "/sessions")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"tknzr")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: runner.session_id == target)


async def test_the_palette_lists_our_commands_first_and_no_duplicates(tmp_path: Path) -> None:
    app = ChatApp(make_runner(tmp_path, []))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.pause(0.5)
        options = app.screen.query_one(OptionList)
        names = [str(options.get_option_at_index(i).prompt).split("\n")[0]
                 for i in range(options.option_count)]
        assert names[0].startswith("Session: switch to")
        assert "Quit" in names and "Keys" in names  # Textual's own are still there …
        assert names.index("Quit") > names.index("Help: commands and keys")  # … after ours
        assert not any(n.startswith("Theme: toggle") for n in names)  # one theme command
        assert len(names) == len(set(names))


async def test_a_long_live_session_keeps_only_its_last_turns_built(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer(f"Answer {i}.") for i in range(5)])
    app = ChatApp(runner)
    async with app.run_test(size=(100, 40)) as pilot:
        app.transcript.lazy_turns, app.keep_turns = 2, 3
        for i in range(5):
            await type_and_send(pilot, f"question {i}")
            await wait_for(pilot, lambda i=i: not app.running
                           and f"Answer {i}." in screen_text(app))
        # Past three turns the transcript was rebuilt with the last two; one more came live.
        assert app.transcript.shown_turns == 3
        marker = app.query_one(EarlierTurns)
        assert "2 earlier turns" in marker.render().plain  # type: ignore[attr-defined]
        await app.transcript.show_earlier()  # what scrolling to the top does
        await pilot.pause(0.1)
        assert app.transcript.shown_turns == 5 and not app.query(EarlierTurns)
        assert "question 4" in [t.render().plain for t in app.query(UserTurn)][-1]


async def test_daemon_job_sessions_are_listed_apart(tmp_path: Path) -> None:
    from whalebone.agent.daemon.jobs import JobQueue

    queue = JobQueue(tmp_path / "jobs.db")
    runner = make_runner(tmp_path, [], jobs_db=tmp_path / "jobs.db")
    chat = runner.store.create(title="my chat")
    job_session = runner.store.create(title="nightly report")
    queue.set_session(queue.submit("write the nightly report").id, job_session)
    queue.close()
    app = ChatApp(runner)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        text = screen_text(app)
        lines = text.splitlines()
        at = {name: next(i for i, line in enumerate(lines) if name in line)
              for name in ("my chat", "daemon jobs", "⚙ nightly report")}
        assert at["my chat"] < at["daemon jobs"] < at["⚙ nightly report"]
        assert "⚙ a daemon job" in text  # the marker is explained
        assert {chat, job_session} == {s.id for s in runner.store.list()}


async def test_budget_sets_a_limit_every_front_end_reads(tmp_path: Path) -> None:
    """/budget writes a person's limit into the shared ledger, as `whalebone budget set` does
    (the override for an auditor's deny); a typo'd scope is refused, not silently kept."""
    from whalebone.budget.ledger import Ledger

    ledger = Ledger(tmp_path / "budget.db")
    runner = make_runner(tmp_path, [answer("Hello.")], ledger=ledger)
    app = ChatApp(runner)
    async with app.run_test(size=(120, 50)) as pilot:
        await type_and_send(pilot, "hi")
        await wait_for(pilot, lambda: "Hello." in screen_text(app))
        await type_and_send(pilot, "/budget session usd 2")
        sid = runner.session_id
        await wait_for(pilot, lambda: f"Limit for session:{sid}: $2" in screen_text(app))
        await type_and_send(pilot, "/budget global tokens 5000")
        await wait_for(pilot, lambda: "5,000 tokens" in screen_text(app))
        await type_and_send(pilot, "/budget nope usd 1")
        await wait_for(pilot, lambda: "unknown scope 'nope'" in screen_text(app))
        await type_and_send(pilot, "/budget")
        await wait_for(pilot, lambda: "/budget SCOPE usd|tokens N sets a limit" in
                       screen_text(app))
    other = Ledger(tmp_path / "budget.db")  # what another process reads
    assert other.limit(f"session:{sid}").max_usd == 2
