"""Compaction near the context window: system prompt, tools and task keep their bytes, older
turns become a model-written summary, recent turns stay verbatim, and a resume sees the same."""

from __future__ import annotations

from pathlib import Path

import anyio
from agent_kit import agent, call, file_tools, say

from whalebone.agent.compaction import (
    SUMMARY_HEADER,
    SUMMARY_REQUEST,
    cut_point,
    effective_history,
    head_length,
)
from whalebone.agent.events import Compacted, Done, UsageReport, Warning
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
    assert not [e for e in events if isinstance(e, Warning) and e.kind == "prefix_break"]
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
