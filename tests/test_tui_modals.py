"""Approval modals in the running app: a budget extension that waits for a person (the real
guard, ledger and decision book), and the session questions (rename, delete)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import answer, asking, make_runner, screen_text, wait_for

from whalebone.budget.guard import BudgetGuard, BudgetPolicy
from whalebone.budget.records import DecisionBook
from whalebone.tui.app import ChatApp
from whalebone.tui.modals import BudgetApproval, ConfirmQuestion, TextQuestion

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def guarded_app(tmp_path: Path, completions: list[str]) -> ChatApp:
    # 100 tokens for the session: the first call's worst case (prompt + max_tokens) is over it,
    # so the guard freezes the run and asks for an extension.
    guard = BudgetGuard(tmp_path / "ledger.db",
                        policy=BudgetPolicy(session_tokens=100, on_cap="human",
                                            max_step_tokens=50_000, poll_s=0.02))
    runner = make_runner(tmp_path, completions, guard=guard)
    app = ChatApp(runner)
    app.budget_poll_s = 0.05
    return app


async def send(pilot, text: str) -> None:
    await pilot.press(*text)
    pilot.app.prompt.submit()
    await pilot.pause(0.05)


async def test_an_approved_extension_unfreezes_the_run(tmp_path: Path) -> None:
    app = guarded_app(tmp_path, [answer("Paid for.")])
    runner = app.runner
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "spend")
        await wait_for(pilot, lambda: asking(app, BudgetApproval)
                       and f"session:{runner.session_id}" in screen_text(app)
                       and "this call needs" in screen_text(app))
        await pilot.press(*"worth it")
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: not app.running and "Paid for." in screen_text(app))
        book = DecisionBook(runner.ledger)
        (decision,) = book.decisions()
        assert (decision.decider, decision.decision, decision.amount, decision.reason) == (
            "human", "approve", 50_000, "worth it")
        assert runner.ledger.state(f"session:{runner.session_id}").max_tokens == 50_100
        (logged,) = runner.approvals.records()
        assert logged.kind == "budget" and logged.approved and logged.amount == 50_000
        await wait_for(pilot, lambda: "/50.1k tok" in screen_text(app))  # the status bar


async def test_a_denied_extension_stops_the_run_with_the_reason(tmp_path: Path) -> None:
    app = guarded_app(tmp_path, [answer("Never sent.")])
    runner = app.runner
    async with app.run_test(size=(100, 24)) as pilot:  # the stop notice's reason on one line
        await send(pilot, "spend")
        await wait_for(pilot, lambda: asking(app, BudgetApproval))
        await pilot.press(*"too much")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.running)
        text = screen_text(app)
        assert "too much" in text and "Never sent." not in text
        assert [m["role"] for m in runner.store.messages(runner.session_id)] == [
            "system", "user"]
        assert [r.approved for r in runner.approvals.records()] == [False]


async def test_rename_and_delete_ask_first(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    keep = runner.store.create(title="keep me")
    doomed = runner.store.create(title="doomed")
    app = ChatApp(runner)
    async with app.run_test(size=(80, 24)) as pilot:
        app.ask_rename(keep)
        await wait_for(pilot, lambda: isinstance(app.screen, TextQuestion))
        await pilot.press("ctrl+a", "ctrl+k", *"kept", "enter")
        await wait_for(pilot, lambda: runner.store.info(keep).title == "kept")
        app.ask_delete(doomed)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuestion))
        await pilot.press("n")
        await pilot.pause(0.1)
        assert doomed in [s.id for s in runner.store.list()]
        app.ask_delete(doomed)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuestion))
        await pilot.press("y")
        await wait_for(pilot, lambda: doomed not in [s.id for s in runner.store.list()])
        await wait_for(pilot, lambda: "doomed" not in screen_text(app)
                       and "kept" in screen_text(app))
