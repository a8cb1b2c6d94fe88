"""The loop under the real budget guard: every model call (turns, retries, compaction) is
reserved before it is made and settled after; a denied call stops the run before it spends."""

from __future__ import annotations

from pathlib import Path

from agent_kit import agent, call, events_of, file_tools, say

from whalebone.agent import Agent, AgentConfig
from whalebone.agent.events import UsageReport
from whalebone.agent.facts import to_run_facts
from whalebone.budget.guard import BudgetGuard, BudgetPolicy, RunFacts
from whalebone.dsml import tokens as T
from whalebone.engine.scripted import ScriptedEngine

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
