"""budget.setup.open_guard: the one guard every front end gets, with no configuration."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from whalebone.budget.auditor import Auditor
from whalebone.budget.guard import CallPlan
from whalebone.budget.ledger import day_scope
from whalebone.budget.rule import RuleDecider
from whalebone.budget.setup import DEFAULT_DAY_USD, BudgetSettingsError, open_guard
from whalebone.engine.base import Usage
from whalebone.engine.clients.router import Router
from whalebone.engine.scripted import ScriptedEngine


def test_nothing_configured_meters_into_the_home_ledger(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    guard = open_guard(ScriptedEngine([]))
    assert guard.ledger.path == tmp_path / "budget.db"
    assert guard.notice is None and guard.policy.global_day_usd is None  # $0 engine: no cap
    assert guard.auditor is None  # a scripted engine has no sibling to audit it


def test_an_unknown_model_is_metered_in_tokens_not_refused(tmp_path: Path) -> None:
    guard = open_guard(ScriptedEngine([], model="some-new-model"),
                       {"ledger": str(tmp_path / "b.db"), "session_tokens": 100_000})
    plan = CallPlan("r", "s", "a", "turn", "some-new-model", 1000, 0, 100)

    async def call() -> None:
        ticket = await guard.before_call(plan)
        guard.settle(ticket, Usage(prompt_tokens=1000, prompt_cache_miss_tokens=1000,
                                   completion_tokens=50))

    anyio.run(call)
    state = guard.ledger.state("session:s")
    assert (state.spent_usd, state.spent_tokens) == (0.0, 1050)


def test_a_priced_engine_gets_the_default_daily_cap_and_says_so_once(tmp_path: Path) -> None:
    db = {"ledger": str(tmp_path / "b.db")}
    first = open_guard(ScriptedEngine([], model="deepseek-v4-flash"), db)
    assert first.default_day_usd == DEFAULT_DAY_USD and first.policy.global_day_usd is None
    assert first.notice is not None and f"${DEFAULT_DAY_USD:g} a day" in first.notice
    again = open_guard(ScriptedEngine([], model="deepseek-v4-flash"), db)
    assert again.default_day_usd == DEFAULT_DAY_USD and again.notice is None
    own = open_guard(ScriptedEngine([], model="deepseek-v4-flash"),
                     {**db, "global_day_usd": 20.0})
    assert own.default_day_usd is None  # a limit of one's own replaces the default
    assert again.ledger.limit(day_scope("global")) is None  # nothing was written yet

    plan = CallPlan("r", "s", "a", "turn", "deepseek-v4-flash", 1000, 0, 100)
    again.release(anyio.run(again.before_call, plan))
    assert again.ledger.limit(day_scope("global")).max_usd == DEFAULT_DAY_USD  # type: ignore
    # A person's daily limit replaces it at once, even for a guard already open (a daemon).
    from whalebone.budget.records import DecisionBook

    DecisionBook(again.ledger).set_limit("global", usd=20.0, tokens=None, decider="human:t",
                                         reason="t")
    again.release(anyio.run(again.before_call, plan))
    assert again.ledger.limit(day_scope("global")).max_usd == 20.0  # type: ignore
    assert open_guard(ScriptedEngine([], model="deepseek-v4-flash"),
                      db).default_day_usd is None


def test_the_default_auditor_per_engine(tmp_path: Path) -> None:
    db = {"ledger": str(tmp_path / "b.db")}
    opened: list[str] = []

    def opener(spec: str) -> ScriptedEngine:
        opened.append(spec)
        return ScriptedEngine([], name="deepseek", model=spec.split(":", 1)[1])

    bundled = ScriptedEngine([], name="bundled")
    guard = open_guard(bundled, db, open_engine=opener)
    assert isinstance(guard.auditor, Auditor) and guard.auditor.engine is bundled  # offline
    pro = ScriptedEngine([], name="deepseek", model="deepseek-v4-pro")
    guard = open_guard(pro, db, open_engine=opener)
    assert opened == ["deepseek:deepseek-v4-flash"]  # the provider's cheapest model
    assert isinstance(guard.auditor, Auditor) and guard.auditor.engine.model == "deepseek-v4-flash"
    router = Router({"worker": [pro], "auditor": [bundled]})
    assert open_guard(router, db).auditor.engine is router  # type: ignore[union-attr]
    assert isinstance(open_guard(pro, {**db, "auditor": "rule"}).auditor, RuleDecider)
    assert open_guard(pro, {**db, "auditor": "none"}, open_engine=opener).auditor is None


def test_with_no_auditor_headless_denies_and_a_watched_front_end_asks(tmp_path: Path) -> None:
    db = {"ledger": str(tmp_path / "b.db")}
    assert open_guard(ScriptedEngine([]), db).policy.on_cap == "auditor"  # forced: no_auditor
    assert open_guard(ScriptedEngine([]), db, person=True).policy.on_cap == "human"
    with pytest.raises(BudgetSettingsError, match="invalid"):
        open_guard(ScriptedEngine([]), {**db, "sesion_usd": 1})
    with pytest.raises(BudgetSettingsError, match="auditor"):
        open_guard(ScriptedEngine([]), {**db, "auditor": 3})
