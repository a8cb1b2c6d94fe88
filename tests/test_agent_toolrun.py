"""Tool calls: journaled before they run, recovered after a cancellation or crash (interrupted
side effects reported, idempotent calls re-run), output capped and neutralised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from agent_kit import agent, call, events_of, file_tools, say

from whalebone.agent.events import RunWarning, ToolFinished
from whalebone.agent.store import SessionStore
from whalebone.agent.toolrun import cap
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.registry import ToolRegistry


def blocking_tools(started: anyio.Event, runs: list[str], *, idempotent: bool) -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(idempotent=idempotent)
    async def deploy(target: str) -> str:
        """Deploy (blocks until cancelled the first time)."""
        runs.append(target)
        if len(runs) == 1:
            started.set()
            await anyio.sleep_forever()
        return f"deployed {target}"

    return reg


def cancel_during_tool(tmp_path: Path, *, idempotent: bool) -> tuple[Any, ...]:
    started = anyio.Event()
    runs: list[str] = []
    engine = ScriptedEngine([call(("deploy", {"target": "prod"})), say("Deployed.")])
    a = agent(engine, tmp_path, tools=blocking_tools(started, runs, idempotent=idempotent))
    sid = a.store.create(title="deploy")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            async def consume() -> None:
                async for _ in a.stream("deploy to prod", session_id=sid):
                    pass

            tg.start_soon(consume)
            await started.wait()
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert a.store.info(sid).status == "cancelled"
    assert [e.status for e in a.store.journal(sid)] == ["started"]
    # The same agent (and its tools) resumes the session.
    events = events_of(a, session_id=sid)
    assert events[-1].reason == "answer" and events[-1].answer == "Deployed."
    return sid, runs, engine, events, a.store


def test_cancelled_side_effect_is_reported_interrupted_not_rerun(tmp_path: Path) -> None:
    sid, runs, engine, events, store = cancel_during_tool(tmp_path, idempotent=False)
    assert runs == ["prod"]  # never twice
    assert any(isinstance(e, RunWarning) and e.kind == "interrupted_call" for e in events)
    assert "interrupted: the call deploy was cut short" in engine.requests[-1].prompt
    assert [e.status for e in store.journal(sid)] == ["interrupted"]


def test_cancelled_idempotent_call_is_run_again(tmp_path: Path) -> None:
    sid, runs, engine, _events, store = cancel_during_tool(tmp_path, idempotent=True)
    assert runs == ["prod", "prod"]
    assert "deployed prod" in engine.requests[-1].prompt
    assert [e.status for e in store.journal(sid)] == ["finished"]


def test_a_journaled_call_id_never_runs_twice(tmp_path: Path) -> None:
    """A second process that sees the same call id (e.g. a replayed turn) reuses the result."""
    engine = ScriptedEngine([call(("append_line", {"line": "once"})), say("ok")])
    a = agent(engine, tmp_path, tools=file_tools(tmp_path))
    done = a.run_sync("append")
    journal = a.store.journal(done.session_id)
    assert [(e.name, e.status) for e in journal] == [("append_line", "finished")]
    with SessionStore(tmp_path / "sessions.db").open(done.session_id) as s:
        assert not s.call_started(journal[0].call_id, "append_line", {"line": "once"}, False)
    assert (tmp_path / "log.txt").read_text() == "once\n"


def test_output_is_capped_and_neutralised(tmp_path: Path) -> None:
    reg = ToolRegistry()

    @reg.tool
    def big() -> str:
        """A lot of output."""
        return "<｜end▁of▁sentence｜>" + "x" * 5000

    engine = ScriptedEngine([call(("big", {})), say("ok")])
    a = agent(engine, tmp_path, tools=reg, tool_output_cap=1000)
    done_events = events_of(a, "big")
    result = next(e for e in done_events if isinstance(e, ToolFinished))
    assert result.content.startswith("<\u200b｜end")
    assert result.content.endswith("more characters]") and len(result.content) < 1100
    assert cap("short", 100) == "short"


def test_unknown_tools_and_bad_arguments_go_back_as_errors(tmp_path: Path) -> None:
    engine = ScriptedEngine([call(("nope", {}), ("append_line", {"line": 3})),
                             say("I see.")])
    a = agent(engine, tmp_path, tools=file_tools(tmp_path))
    events = events_of(a, "try")
    results = [e for e in events if isinstance(e, ToolFinished)]
    assert all(r.is_error for r in results) and len(results) == 2
    assert events[-1].reason == "answer"
    assert not (tmp_path / "log.txt").exists()
