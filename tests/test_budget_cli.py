"""``whalebone budget`` run as a person runs it: a real subprocess on a real ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from whalebone.budget.guard import BudgetGuard, BudgetStop, CallPlan, RunFacts
from whalebone.budget.ledger import Ledger, Limit, day_scope
from whalebone.budget.policy import BudgetPolicy
from whalebone.budget.records import DecisionBook
from whalebone.engine.base import Usage

CMD = [sys.executable, "-m", "whalebone.agent.cli", "budget"]


def whalebone(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=120, env=env)


def in_process(home: Path, *args: str, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """The same command through the same entry point, without a process start (for the
    many small cases; the decisions above go through a real subprocess)."""
    from whalebone.agent.cli import main

    monkeypatch.setenv("WHALEBONE_HOME", str(home))
    code = main(["budget", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def plan() -> CallPlan:
    return CallPlan("run1", "s1", "coder", "turn", "deepseek-v4-flash", 20_000, 15_000, 1000)


USAGE = Usage(prompt_tokens=20_000, prompt_cache_hit_tokens=15_000,
              prompt_cache_miss_tokens=5_000, completion_tokens=400)


def frozen_run_and_person(home: Path, *person_args: str) -> tuple[int, BaseException | None,
                                                                   subprocess.CompletedProcess]:
    """A run capped at $0.006 waits for a person; the person runs ``whalebone budget …``."""
    guard = BudgetGuard(home / "budget.db",
                        policy=BudgetPolicy(session_usd=0.006, on_cap="human", poll_s=0.02,
                                            max_step_usd=0.02))
    made, stopped, ran = 0, None, []

    async def run() -> None:
        nonlocal made, stopped
        try:
            for _ in range(4):
                ticket = await guard.before_call(plan(), facts=RunFacts)
                guard.settle(ticket, USAGE)
                made += 1
        except BudgetStop as e:
            stopped = e

    async def person() -> None:
        while not guard.book.pending("s1"):
            await anyio.sleep(0.02)
        ran.append(await anyio.to_thread.run_sync(lambda: whalebone(home, *person_args)))

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(person)

    anyio.run(both)
    return made, stopped, ran[0]


def test_a_person_approving_from_the_cli_unfreezes_the_waiting_run(tmp_path: Path) -> None:
    made, stopped, cli = frozen_run_and_person(tmp_path, "approve", "s1", "--amount", "0.05",
                                               "--reason", "diff looks right")
    assert cli.returncode == 0, cli.stderr
    assert "approve +0.02 USD on session:s1" in cli.stdout  # clamped to the maximum step
    assert stopped is None and made == 4
    ledger = Ledger(tmp_path / "budget.db")
    assert ledger.limit("session:s1").max_usd == pytest.approx(0.026)  # type: ignore[union-attr]
    [d] = DecisionBook(ledger).decisions()
    assert d.decider.startswith("human:") and d.reason == "diff looks right" and d.applied


def test_a_person_denying_from_the_cli_stops_the_run(tmp_path: Path) -> None:
    made, stopped, cli = frozen_run_and_person(tmp_path, "deny", "s1", "--reason", "too costly")
    assert cli.returncode == 0 and made >= 1
    assert isinstance(stopped, BudgetStop) and "too costly" in str(stopped)
    assert stopped.verdict.decider.startswith("human:")


def test_show_reports_spend_reservations_savings_and_decisions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    guard = BudgetGuard(tmp_path / "budget.db", policy=BudgetPolicy(session_usd=1.0))
    guard.settle(anyio.run(guard.before_call, plan()), USAGE)
    held = anyio.run(guard.before_call, plan())  # in flight while we look
    cli = whalebone(tmp_path, "show", "--json")
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    session = next(s for s in report["scopes"] if s["scope"] == "session:s1")
    assert session["max_usd"] == 1.0 and session["spent_usd"] > 0 and session["saved_usd"] > 0
    assert session["reserved_usd"] == pytest.approx(held.worst_usd)
    assert session["spend_by_kind"] == {"turn": pytest.approx(session["spent_usd"])}
    code, text, _ = in_process(tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "session:s1" in text and "$1.0000" in text


def test_set_limits_exact_scopes_and_families(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        return in_process(tmp_path, *args, capsys=capsys, monkeypatch=monkeypatch)

    assert run("set", "global", "--usd", "5")[0] == 0
    assert run("set", "session", "--tokens", "1000")[0] == 0
    assert run("set", "agent:coder", "--usd", "2")[0] == 0
    assert run("set", "run:r9", "--usd", "0.5")[0] == 0
    assert run("set", "run:r9", "--tokens", "77")[0] == 0  # keeps the USD limit
    ledger = Ledger(tmp_path / "budget.db")
    assert ledger.limit(day_scope("global")) == Limit(scope=day_scope("global"), max_usd=5.0)
    assert ledger.limit(day_scope("agent:coder")).max_usd == 2.0  # type: ignore[union-attr]
    assert ledger.default("session") == Limit(scope="session", max_tokens=1000)
    assert ledger.limit("session:new") is None  # a family default, applied on first use
    assert ledger.limit("run:r9") == Limit(scope="run:r9", max_usd=0.5, max_tokens=77)


def test_bad_input_gets_a_clear_error_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        return in_process(tmp_path, *args, capsys=capsys, monkeypatch=monkeypatch)

    code, _, err = run("approve", "nobody")
    assert code == 1 and "no ledger" in err
    assert run("set", "global", "--usd", "1")[0] == 0
    code, _, err = run("approve", "nobody")
    assert code == 1 and "no pending extension request for session 'nobody'" in err
    code, _, err = run("set", "global", "--usd", "-3")
    assert code == 2 and "non-negative" in err
    code, _, err = run("set", "global")
    assert code == 2 and "--usd and/or --tokens" in err
    assert run("set", "global", "--usd", "nan")[0] == 2
    assert run("set", "bad scope", "--usd", "1")[0] == 2
    ledger = Ledger(tmp_path / "budget.db")
    assert ledger.limit(day_scope("global")).max_usd == 1.0  # type: ignore[union-attr]
    assert ledger.scopes() == [day_scope("global")]
