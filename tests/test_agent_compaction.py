"""Compaction near the context window: system prompt, tools and task keep their bytes, older
turns become a model-written summary, recent turns stay verbatim, and a resume sees the same."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from agent_kit import agent, call, events_of, file_tools, say

from whalebone.agent import AgentError, SessionBusy, SessionError
from whalebone.agent.compaction import (
    SUMMARY_HEADER,
    SUMMARY_REQUEST,
    CompactionFailed,
    NothingToCompact,
    cut_point,
    effective_history,
    head_length,
)
from whalebone.agent.events import Compacted, Done, RunWarning, UsageReport
from whalebone.budget.guard import BudgetStop
from whalebone.core.errors import WhaleboneError
from whalebone.dsml import tokens as T
from whalebone.engine.base import GenerationRequest
from whalebone.engine.scripted import ScriptedEngine

TASK = "Count the lines of the log, many times."


def script(turns: int):
    done: list[int] = []

    def reply(req: GenerationRequest) -> str:
        assert req.prompt is not None
        if SUMMARY_REQUEST in req.prompt[-len(SUMMARY_REQUEST) - 200:]:
            return say("SUMMARY: I counted the lines of the log over and over; it is empty.")
        done.append(1)
        if len(done) > turns:
            return say("The log is empty.")
        return call(("count_lines", {}), reasoning=f"Counting, pass {len(done)}.")

    return reply


def run_compacting(tmp_path: Path, turns: int = 30) -> tuple[ScriptedEngine, list, object]:
    engine = ScriptedEngine(script(turns), context_window=2200)
    a = agent(engine, tmp_path, tools=file_tools(tmp_path), max_steps=100, loop_limit=1000,
              max_tokens=200, summary_max_tokens=120, keep_recent=3)
    events = anyio.run(lambda: _collect(a))
    return engine, events, a


async def _collect(a) -> list:
    return [e async for e in a.stream(TASK)]


def test_compaction_keeps_the_head_bytes_and_saves_tokens(tmp_path: Path) -> None:
    engine, events, _ = run_compacting(tmp_path)
    assert isinstance(events[-1], Done) and events[-1].reason == "answer"
    compactions = [e for e in events if isinstance(e, Compacted)]
    assert compactions, "the session never reached the compaction threshold"
    c = compactions[0]
    assert c.tokens_saved > 500 and c.messages_after < c.messages_before
    assert c.summary_hit_rate > 0.95  # the summary call reuses the cached conversation
    assert c.hit_rate_before > 0.95
    first = engine.requests[0].prompt
    head = first[:first.index(TASK) + len(TASK)]  # BOS, system prompt, tool list, task
    summary_at = next(i for i, r in enumerate(engine.requests)
                      if SUMMARY_REQUEST in (r.prompt or ""))
    after = engine.requests[summary_at + 1].prompt
    assert after.startswith(head) and c.kept_prefix_chars >= len(head)
    assert SUMMARY_HEADER in after and "SUMMARY: I counted" in after
    assert after.count("Counting, pass") == 3  # the recent turns, verbatim
    usage = [e for e in events if isinstance(e, UsageReport)]
    assert [u.kind for u in usage].count("compaction") == len(compactions)
    assert not [e for e in events if isinstance(e, RunWarning) and e.kind == "prefix_break"]
    # The first turn after a compaction is served from the cache up to the kept head.
    turn_after = usage[[u.kind for u in usage].index("compaction") + 1]
    assert c.hit_rate_after == turn_after.hit_rate > 0.3


def test_a_resumed_session_continues_from_the_compacted_conversation(tmp_path: Path) -> None:
    engine, events, a = run_compacting(tmp_path)
    sid = events[-1].session_id
    raw = a.store.messages(sid)
    view = [m for _, m in effective_history(raw)]
    assert any(m.get("role") == "compaction" for m in raw)
    assert len(view) < len(raw)
    engine2 = ScriptedEngine([say("Still empty.")], context_window=2200)
    again = agent(engine2, tmp_path, tools=file_tools(tmp_path), max_tokens=200)
    done = again.run_sync("Once more?", session_id=sid)
    assert done.answer == "Still empty.", done
    last = engine.requests[-1].prompt
    resumed = engine2.requests[0].prompt
    assert resumed.startswith(last)  # byte for byte the conversation the last run had
    assert SUMMARY_HEADER in resumed


def test_cut_point_keeps_recent_turns_and_needs_old_ones() -> None:
    sys_ = {"role": "system", "content": "s"}
    task = {"role": "user", "content": "t"}
    turns = []
    for i in range(5):
        turns += [{"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": f"c{i}", "content": str(i)}]
    history = [sys_, task, *turns]
    assert head_length(history) == 2
    cut = cut_point(history, keep_recent=2)
    assert cut is not None and history[cut]["tool_calls"][0]["id"] == "c3"
    assert cut_point(history, keep_recent=5) is None
    assert T.EOS not in SUMMARY_REQUEST


# --- on demand: Agent.compact ----------------------------------------------------------------

SUMMARY = "SUMMARY: I counted the lines of the log four times; it is empty."


def on_demand_agent(tmp_path: Path, turns: int = 4, **config: object):
    """A finished session of ``turns`` tool turns and an answer, on an engine that writes
    summaries and then answers whatever comes next."""
    done_turns: list[int] = []

    def reply(req: GenerationRequest) -> str:
        assert req.prompt is not None
        if SUMMARY_REQUEST in req.prompt[-len(SUMMARY_REQUEST) - 200:]:
            return say(SUMMARY)
        done_turns.append(1)
        if len(done_turns) > turns:
            return say(f"Answer {len(done_turns) - turns}: the log is empty.")
        return call(("count_lines", {}), reasoning=f"Counting, pass {len(done_turns)}.")

    engine = ScriptedEngine(reply)
    a = agent(engine, tmp_path, tools=file_tools(tmp_path), loop_limit=1000, max_tokens=200,
              keep_recent=2, **config)
    done = a.run_sync(TASK)
    assert done.reason == "answer"
    return engine, a, done.session_id


def test_compacting_on_demand_keeps_the_head_bytes_and_summarises_on_the_cached_prompt(
        tmp_path: Path) -> None:
    engine, a, sid = on_demand_agent(tmp_path)
    last_prompt = engine.requests[-1].prompt
    raw_before = a.store.messages(sid)
    c = a.compact_sync(sid)
    assert isinstance(c, Compacted) and c.hit_rate_after is None  # no turn has followed yet
    summary_req = engine.requests[-1].prompt
    # The summary is asked for at the end of the last turn's prompt (its completion included).
    assert summary_req.startswith(last_prompt) and SUMMARY_REQUEST in summary_req[
        len(last_prompt):]
    # A cache hit on everything the last turn read and wrote; only the request itself is new.
    *_, last_turn, summary_call = a.store.usage(sid)
    assert summary_call.kind == "compaction" and last_turn.kind == "turn"
    assert summary_call.cache_hit_tokens >= last_turn.prompt_tokens + last_turn.completion_tokens \
        - 1  # the end-of-sentence token an engine stops on without returning
    assert summary_call.cache_miss_tokens < engine.count_tokens(SUMMARY_REQUEST) + 10
    assert c.summary_hit_rate == summary_call.cache_hit_tokens / summary_call.prompt_tokens
    assert c.hit_rate_before == last_turn.cache_hit_tokens / last_turn.prompt_tokens > 0.9
    assert c.messages_after < c.messages_before and 0 < c.tokens_after < c.tokens_before
    raw = a.store.messages(sid)
    assert raw[:len(raw_before)] == raw_before  # append-only: one marker added, nothing edited
    (mark,) = raw[len(raw_before):]
    assert mark["role"] == "compaction" and SUMMARY in mark["summary"]["content"]

    engine.requests.clear()
    events = events_of(a, "Once more?", session_id=sid)
    done = events[-1]
    assert done.answer == "Answer 2: the log is empty.", done
    assert not [e for e in events if isinstance(e, RunWarning)]  # no prefix break, no mode change
    resumed = engine.requests[0].prompt
    head = last_prompt[:last_prompt.index(TASK) + len(TASK)]  # BOS, system, tools, task
    assert resumed.startswith(head) and c.kept_prefix_chars >= len(head)
    assert SUMMARY_HEADER + SUMMARY in resumed
    # The recent turns verbatim (pass 4, then the answer), the older ones gone.
    assert "Counting, pass 4." in resumed and "Counting, pass 3." not in resumed
    assert "Answer 1: the log is empty." in resumed
    view = [m for _, m in effective_history(a.store.messages(sid))]
    assert view[-1] == {"role": "assistant", "content": "Answer 2: the log is empty.",
                        "reasoning_content": "Done thinking."}


def test_compact_on_demand_goes_through_the_budget_guard(tmp_path: Path) -> None:
    from whalebone.budget.guard import BudgetGuard, BudgetPolicy

    _, a, sid = on_demand_agent(tmp_path)
    a.budget = BudgetGuard(tmp_path / "ledger.db")
    c = a.compact_sync(sid)
    state = a.budget.ledger.state(f"session:{sid}")
    (record,) = [u for u in a.store.usage(sid) if u.kind == "compaction"]
    assert state.spent_tokens == record.prompt_tokens + record.completion_tokens > 0
    assert state.reserved_usd == 0 and c.tokens_before == record.prompt_tokens

    engine2, b, sid2 = on_demand_agent(tmp_path / "denied")
    b.budget = BudgetGuard(tmp_path / "denied" / "ledger.db",
                           policy=BudgetPolicy(session_tokens=100, on_cap="deny"))
    raw, calls = b.store.messages(sid2), len(engine2.requests)
    with pytest.raises(BudgetStop):
        b.compact_sync(sid2)
    assert b.store.messages(sid2) == raw and len(engine2.requests) == calls  # nothing spent


def test_compact_on_demand_refuses_unknown_busy_short_and_interrupted_sessions(
        tmp_path: Path) -> None:
    engine, a, sid = on_demand_agent(tmp_path, turns=2)
    calls = len(engine.requests)
    with pytest.raises(SessionError, match="no session"):
        a.compact_sync("nosuchsession")
    with a.store.open(sid), pytest.raises(SessionBusy):
        a.compact_sync(sid)
    with pytest.raises(NothingToCompact, match="too few turns"):
        a.compact_sync(sid, keep_recent=3)  # three assistant turns: none old enough
    for bad in (0, -1, 2.5, True):
        with pytest.raises(AgentError, match="keep_recent"):
            a.compact_sync(sid, keep_recent=bad)  # type: ignore[arg-type]
    assert len(engine.requests) == calls  # no refusal asked the model anything
    assert not any(m.get("role") == "compaction" for m in a.store.messages(sid))

    # A session killed while a call was running: its results are the next run's to settle.
    with a.store.open(sid) as session:
        session.append({"role": "user", "content": "count again"},
                       {"role": "assistant", "content": "", "tool_calls": [
                           {"id": "call_x", "type": "function",
                            "function": {"name": "count_lines", "arguments": "{}"}}]})
    with pytest.raises(NothingToCompact, match="interrupted"):
        a.compact_sync(sid, keep_recent=1)
    assert isinstance(NothingToCompact("x"), WhaleboneError)


def test_a_failed_summary_leaves_the_session_as_it_was(tmp_path: Path) -> None:
    _, a, sid = on_demand_agent(tmp_path)
    raw = a.store.messages(sid)
    a.engine = ScriptedEngine(["I will not stop writing"])  # no EOS: cut off, not a summary
    with pytest.raises(CompactionFailed, match="no usable summary"):
        a.compact_sync(sid)
    a.engine = ScriptedEngine([])  # the engine fails outright
    with pytest.raises(CompactionFailed, match="no summary"):
        a.compact_sync(sid)
    assert a.store.messages(sid) == raw


def test_a_cancelled_compaction_leaves_the_session_whole_and_free(tmp_path: Path) -> None:
    from whalebone.budget.guard import BudgetGuard

    _, a, sid = on_demand_agent(tmp_path)
    raw, usage = a.store.messages(sid), a.store.usage(sid)
    a.budget = BudgetGuard(tmp_path / "ledger.db")
    a.engine = ScriptedEngine([say(SUMMARY)], delay=0.05)  # slow: cancelled mid-summary

    async def cancel_midway() -> bool:
        with anyio.move_on_after(0.3) as scope:
            await a.compact(sid)
        return scope.cancelled_caught

    assert anyio.run(cancel_midway)
    assert a.store.messages(sid) == raw and a.store.usage(sid) == usage
    state = a.budget.ledger.state(f"session:{sid}")
    assert state.reserved_usd == 0 and state.reserved_tokens == 0  # the reservation released
    a.engine = ScriptedEngine([say(SUMMARY)])
    assert a.compact_sync(sid).messages_after < len(raw)  # the session was not left locked
