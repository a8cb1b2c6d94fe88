"""The embedding API: ``from whalebone import Agent`` — run, stream, resume, run_sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from agent_kit import call, file_tools, say

from whalebone import (
    Agent,
    AgentConfig,
    AgentError,
    Done,
    SessionBusy,
    SessionStore,
    WhaleboneError,
)
from whalebone.dsml.errors import EncodeError
from whalebone.engine.scripted import ScriptedEngine


def test_import_whalebone_stays_free_of_torch() -> None:
    code = ("import sys, whalebone; from whalebone import Agent, AgentConfig, SessionStore, "
            "Done, open_engine; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_system_prompt_is_a_jinja2_template_rendered_once(tmp_path: Path) -> None:
    engine = ScriptedEngine([say("one"), say("two")])
    a = Agent(engine, store=tmp_path / "s.db", system="You are {{ name }} for {{ team }}.",
              config=AgentConfig(name="scout", variables={"team": "ops"}, date_in_task=False))
    done = a.run_sync("hi")
    assert "You are scout for ops." in (engine.requests[0].prompt or "")
    a.config = a.config.model_copy(update={"variables": {"team": "changed"}})
    a.run_sync("again", session_id=done.session_id)
    assert "You are scout for ops." in (engine.requests[1].prompt or "")  # frozen per session
    bad = Agent(engine, store=tmp_path / "s.db", system="{{ missing }}")
    with pytest.raises(EncodeError, match="does not render"):
        bad.run_sync("x")


def test_run_resume_and_the_date_in_the_newest_user_turn(tmp_path: Path) -> None:
    engine = ScriptedEngine([call(("count_lines", {})), say("Zero."), say("Still zero.")])
    a = Agent(engine, tools=file_tools(tmp_path), store=tmp_path / "s.db")

    async def main() -> tuple[Done, Done]:
        first = await a.run("count the lines")
        second = await a.resume(first.session_id, "and now?")
        return first, second

    first, second = anyio.run(main)
    assert (first.answer, second.answer) == ("Zero.", "Still zero.")
    assert first.session_id == second.session_id
    system = engine.requests[0].prompt.split("count the lines")[0]
    assert "[today is" not in system  # volatile facts never enter the cached head
    assert "[today is" in engine.requests[-1].prompt.split("and now?")[1]
    assert engine.requests[-1].prompt.startswith(engine.requests[1].prompt)


def test_one_run_per_session_at_a_time(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    sid = store.create()
    a = Agent(ScriptedEngine([say("x")]), store=store)
    with store.open(sid), pytest.raises(SessionBusy):
        a.run_sync("hi", session_id=sid)
    assert issubclass(SessionBusy, WhaleboneError)


def test_memory_joins_as_a_tool_after_the_agents_own(tmp_path: Path) -> None:
    from whalebone.memory import MemoryHome

    home = MemoryHome(tmp_path / "home")
    engine = ScriptedEngine([
        call(("memory", {"command": "create", "path": "/memories/notes.md",
                         "file_text": "the build needs make -j2"})),
        say("Noted."),
    ])
    a = Agent(engine, tools=file_tools(tmp_path), store=tmp_path / "s.db",
              memory=home.attach("project:demo", who="agent:test"))
    assert [t.name for t in a.tools] == ["append_line", "count_lines", "memory"]
    assert a.run_sync("remember how to build").answer == "Noted."
    assert "make -j2" in (home.memory_dir / "project:demo" / "notes.md").read_text()
    system = engine.requests[1].prompt.split("remember how to build")[0]
    assert "make -j2" not in system  # memory never enters the cached head


def test_a_per_run_step_limit(tmp_path: Path) -> None:
    engine = ScriptedEngine(lambda req: call(("append_line", {"line": "x"})))
    a = Agent(engine, tools=file_tools(tmp_path), store=tmp_path / "s.db",
              config=AgentConfig(loop_limit=50))
    done = a.run_sync("go", max_steps=2)
    assert done.reason == "max_steps" and done.steps == 2
    assert (tmp_path / "log.txt").read_text() == "x\nx\n"


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    a = Agent(ScriptedEngine([say("x")]), store=tmp_path / "s.db")
    with pytest.raises(AgentError, match="a task is text"):
        a.run_sync(42)  # type: ignore[arg-type]
    with pytest.raises(AgentError, match="invalid options"):
        a.run_sync("hi", thinking="deep")  # type: ignore[arg-type]
    with pytest.raises(AgentError, match="invalid options"):
        a.run_sync("hi", max_steps=0)
    assert a.store.list() == []
    assert issubclass(AgentError, WhaleboneError)
