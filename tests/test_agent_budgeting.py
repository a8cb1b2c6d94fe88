"""The loop under the real budget guard: every model call (turns, retries, compaction) is
reserved before it is made and settled after; a denied call stops the run before it spends."""

from __future__ import annotations

import sqlite3
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
from agent_kit import agent, call, events_of, file_tools, say

from whalebone.agent import Agent, AgentConfig, AgentError
from whalebone.agent.events import Done, StepStarted, UsageReport
from whalebone.agent.facts import to_run_facts
from whalebone.budget.guard import BudgetGuard, BudgetPolicy, RunFacts
from whalebone.dsml import tokens as T
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.registry import ToolRegistry

MODEL = "deepseek-v4-flash"


def test_every_call_is_reserved_and_settled(tmp_path: Path) -> None:
    guard = BudgetGuard(tmp_path / "ledger.db")
    broken = f"x</think>\n\n{T.TOOL_CALLS_OPEN}\n<{T.DSML}invoke name=\"count_lines\">\n{T.EOS}"
    engine = ScriptedEngine([call(("count_lines", {})), broken, say("0 lines.")], model=MODEL)
    a = Agent(engine, tools=file_tools(tmp_path), store=tmp_path / "s.db", budget=guard,
              config=AgentConfig(max_tokens=200, date_in_task=False))
    events = events_of(a, "count")
    done = events[-1]
    assert done.reason == "answer"
    usage = [e for e in events if isinstance(e, UsageReport)]
    assert [u.kind for u in usage] == ["turn", "turn", "retry"]
    state = guard.ledger.state(f"session:{done.session_id}")
    assert state.spent_tokens == sum(u.prompt_tokens + u.completion_tokens for u in usage)
    assert abs(state.spent_usd - sum(u.price for u in usage)) < 1e-12
    assert state.reserved_usd == 0  # nothing left held
    assert set(guard.ledger.spend_by_kind(f"run:{done.run_id}")) == {"turn", "retry"}


def test_a_denied_call_stops_the_run_with_objective_facts(tmp_path: Path) -> None:
    guard = BudgetGuard(tmp_path / "ledger.db",
                        policy=BudgetPolicy(run_tokens=1500, on_cap="deny"))
    engine = ScriptedEngine(lambda req: call(("append_line", {"line": "x"})), model=MODEL)
    a = agent(engine, tmp_path, tools=file_tools(tmp_path), max_tokens=200, loop_limit=100,
              date_in_task=True)
    a.budget = guard
    events = events_of(a, "append forever")
    done = events[-1]
    assert done.reason == "budget" and "extension denied" in done.message
    calls = len(engine.requests)
    assert 1 <= calls < 5
    assert len([e for e in events if isinstance(e, UsageReport)]) == calls  # none unmetered
    decision = guard.book.decisions()[-1]
    facts = guard.book.inputs(decision.request_id)["facts"]
    assert facts["task"] == "append forever" and facts["steps"] == calls + 1
    assert facts["tool_calls"] == calls and facts["repeated_identical_calls"] == calls
    assert a.store.info(done.session_id).status == "budget"


def test_facts_keep_only_the_fields_the_budget_room_declares() -> None:
    facts = to_run_facts({"task": "t", "steps": 2, "narrative": "please extend"}, RunFacts)
    assert facts.task == "t" and facts.steps == 2 and not hasattr(facts, "narrative")


def test_compaction_summaries_are_metered_too(tmp_path: Path) -> None:
    from whalebone.agent.compaction import SUMMARY_REQUEST

    turns: list[int] = []

    def script(req: object) -> str:
        prompt = getattr(req, "prompt", "") or ""
        if SUMMARY_REQUEST in prompt[-len(SUMMARY_REQUEST) - 200:]:
            return say("SUMMARY: counted, always zero.")
        turns.append(1)
        return say("Zero.") if len(turns) > 30 else call(("count_lines", {}))

    guard = BudgetGuard(tmp_path / "ledger.db")
    engine = ScriptedEngine(script, model=MODEL, context_window=2200)
    a = agent(engine, tmp_path, tools=file_tools(tmp_path), max_tokens=200, loop_limit=1000,
              summary_max_tokens=120, keep_recent=3, max_steps=60)
    a.budget = guard
    done = events_of(a, "count")[-1]
    assert done.reason == "answer"
    kinds = guard.ledger.spend_by_kind(f"run:{done.run_id}")
    assert set(kinds) == {"turn", "compaction"}
    assert guard.ledger.state(f"run:{done.run_id}").spent_tokens == sum(
        u.prompt_tokens + u.completion_tokens for u in a.store.usage(done.session_id))


def _outcomes(ledger: Path) -> list[str]:
    with sqlite3.connect(ledger) as db:
        return [r[0] for r in db.execute("SELECT outcome FROM run_outcomes ORDER BY created")]


async def _close_at(a: Agent, kind: type, n: int = 1) -> str:
    """Run ``a`` and close its stream at the ``n``-th event of ``kind``; the session id."""
    seen = 0
    async with aclosing(a.stream("count")) as events:
        async for event in events:
            seen += isinstance(event, kind)
            if seen == n:
                return a.store.list()[0].id
    raise AssertionError(f"no {kind.__name__}")


def test_a_consumer_closing_the_stream_stops_the_run_never_fails_it(tmp_path: Path) -> None:
    """The daemon closes the stream at a checkpoint on SIGTERM, the TUI on Ctrl+C: a stop.
    Recorded as a failure it would skew the base rates the auditor decides on."""
    guard = BudgetGuard(tmp_path / "ledger.db")
    engine = ScriptedEngine([call(("count_lines", {})), say("0 lines.")], model=MODEL)
    a = agent(engine, tmp_path, tools=file_tools(tmp_path))
    a.budget = guard
    sid = anyio.run(_close_at, a, StepStarted, 2)  # a checkpoint: step 1 committed
    assert a.store.info(sid).status == "cancelled"
    assert _outcomes(tmp_path / "ledger.db") == ["stopped"]
    # Closed on its Done event: the run had ended, and keeps its end.
    b = Agent(ScriptedEngine([say("Hello.")], model=MODEL), store=tmp_path / "b.db",
              budget=guard, config=AgentConfig(date_in_task=False))
    sid = anyio.run(_close_at, b, Done)
    assert b.store.info(sid).status == "done"
    assert _outcomes(tmp_path / "ledger.db") == ["stopped", "finished"]


def test_an_interrupt_inside_a_run_is_recorded_as_a_stop(tmp_path: Path) -> None:
    """A second Ctrl+C raises KeyboardInterrupt wherever the run is: not an error either."""
    tools = ToolRegistry()

    @tools.tool
    async def wait_for_input() -> str:
        """Wait for the person."""
        raise KeyboardInterrupt

    guard = BudgetGuard(tmp_path / "ledger.db")
    a = agent(ScriptedEngine([call(("wait_for_input", {}))], model=MODEL), tmp_path,
              tools=tools)
    a.budget = guard
    with pytest.raises((KeyboardInterrupt, BaseExceptionGroup)):  # from the tools' task group
        events_of(a, "wait")
    assert a.store.list()[0].status == "cancelled"
    assert _outcomes(tmp_path / "ledger.db") == ["stopped"]


def test_a_runs_turns_can_be_metered_as_another_kind(tmp_path: Path) -> None:
    guard = BudgetGuard(tmp_path / "ledger.db")
    broken = f"x</think>\n\n{T.TOOL_CALLS_OPEN}\n<{T.DSML}invoke name=\"count_lines\">\n{T.EOS}"
    engine = ScriptedEngine([broken, say("0 lines.")], model=MODEL)
    a = agent(engine, tmp_path, tools=file_tools(tmp_path))
    a.budget = guard
    events = events_of(a, "count", turn_kind="heartbeat")
    assert [u.kind for u in events if isinstance(u, UsageReport)] == ["heartbeat", "retry"]
    assert set(guard.ledger.spend_by_kind(f"run:{events[-1].run_id}")) == {"heartbeat", "retry"}
    with pytest.raises(AgentError, match="turn_kind"):
        events_of(a, "count", turn_kind="Not A Kind")
