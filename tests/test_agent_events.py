"""Run events are typed and survive a JSON round trip (``whalebone run --json`` prints them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_kit import agent, call, events_of, file_tools, say
from pydantic import TypeAdapter

from whalebone.agent.events import AgentEvent, Compacted, Done, UsageReport
from whalebone.engine.scripted import ScriptedEngine


def test_every_event_of_a_run_round_trips_through_json(tmp_path: Path) -> None:
    engine = ScriptedEngine([call(("count_lines", {})), say("Zero.")])
    events = events_of(agent(engine, tmp_path, tools=file_tools(tmp_path)), "count")
    adapter = TypeAdapter(AgentEvent)
    assert {e.type for e in events} == {"step", "reasoning", "text", "usage", "tool_call",
                                        "tool_result", "done"}
    for event in events:
        assert adapter.validate_json(event.model_dump_json()) == event


def test_rates_and_savings() -> None:
    u = UsageReport(prompt_tokens=200, cache_hit_tokens=150, cache_miss_tokens=50,
                    completion_tokens=10, price=0.0, run_prompt_tokens=400,
                    run_cache_hit_tokens=390)
    assert u.hit_rate == 0.75 and u.run_hit_rate == 0.975
    assert UsageReport(prompt_tokens=0, cache_hit_tokens=0, cache_miss_tokens=0,
                       completion_tokens=0, price=0, run_prompt_tokens=0,
                       run_cache_hit_tokens=0).hit_rate == 0.0
    c = Compacted(messages_before=40, messages_after=9, tokens_before=9000, tokens_after=2500,
                  hit_rate_before=0.99, hit_rate_after=0.4, summary_hit_rate=0.99,
                  kept_prefix_chars=3000)
    assert c.tokens_saved == 6500
    assert Done(reason="answer", prompt_tokens=100, cache_hit_tokens=97).hit_rate == 0.97


def test_renamed_events_keep_their_old_names_with_a_deprecation_warning() -> None:
    import whalebone
    import whalebone.agent as agent_room
    from whalebone.agent import events

    for module in (events, agent_room, whalebone):
        with pytest.warns(DeprecationWarning, match="AnswerText"):
            assert module.Text is events.AnswerText
        with pytest.warns(DeprecationWarning, match="RunWarning"):
            assert module.Warning is events.RunWarning
    u = events.UsageReport.model_validate({"cache_hit_tokens": 3, "cache_miss_tokens": 1,
                                           "price": 0, "session_prompt_tokens": 4,
                                           "session_cache_hit_tokens": 3})
    assert u.run_prompt_tokens == 4 and u.run_hit_rate == 0.75
    dumped = u.model_dump()  # readers of the old names still find them
    assert dumped["session_prompt_tokens"] == dumped["run_prompt_tokens"] == 4
    with pytest.warns(DeprecationWarning):
        assert u.session_hit_rate == 0.75


def test_budget_stopped_is_the_guards_budget_stop_under_its_old_name() -> None:
    import whalebone
    import whalebone.agent as agent_room
    from whalebone.agent import budgeting
    from whalebone.budget.guard import BudgetStop

    for module in (budgeting, agent_room, whalebone):
        with pytest.warns(DeprecationWarning, match="BudgetStop"):
            assert module.BudgetStopped is BudgetStop
