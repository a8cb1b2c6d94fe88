"""The chat's non-visual half: the shell tool's approvals, engines and modes, memory, and the
budget scopes it shows. Real subprocesses, real SQLite, a real scripted engine."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from tui_support import answer, make_runner

from whalebone.agent import AgentConfig
from whalebone.budget.ledger import Actual, Ledger, Limit, day_scope
from whalebone.core.errors import WhaleboneError
from whalebone.memory import MemoryHome
from whalebone.tools.registry import ToolError
from whalebone.tui.approvals import Decision
from whalebone.tui.engines import ChatEngineError


def test_an_approved_command_runs_and_the_decision_is_logged_first(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    asked: list[str] = []

    async def person(command: str) -> Decision:
        asked.append(command)
        assert runner.approvals.records() == []  # nothing logged before the answer
        return Decision(approved=True, reason="fine")

    runner.ask_person = person
    out = anyio.run(runner.shell, "echo hello; echo again")
    assert out.startswith("exit code 0") and "hello\nagain" in out
    assert asked == ["echo hello; echo again"]
    (record,) = runner.approvals.records()
    assert (record.kind, record.approved, record.reason) == ("shell", True, "fine")


def test_a_denial_reaches_the_model_with_its_reason_and_nothing_runs(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    marker = tmp_path / "ran"

    async def person(command: str) -> Decision:
        return Decision(approved=False, reason="use the build dir")

    runner.ask_person = person
    with pytest.raises(ToolError, match=r"a person denied the command .*: use the build dir"):
        anyio.run(runner.shell, f"touch {marker}")
    assert not marker.exists()


def test_with_no_one_to_ask_the_answer_is_no(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    with pytest.raises(ToolError, match="no one is there to approve it"):
        anyio.run(runner.shell, "echo hi")
    assert [r.approved for r in runner.approvals.records()] == [False]


def test_the_tools_are_whalebone_runs_with_the_same_schemas(tmp_path: Path) -> None:
    from whalebone.agent.tools import default_tools

    runner = make_runner(tmp_path, [])
    assert runner.tools.schemas() == default_tools(tmp_path).schemas()


def test_allowed_commands_run_without_asking_and_denied_ones_never_ask(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [], allow=["echo *"])
    assert anyio.run(runner.shell, "echo free").startswith("exit code 0")
    with pytest.raises(ToolError, match="refused by policy"):
        anyio.run(runner.shell, "sudo reboot")
    assert runner.approvals.records() == []


def test_engines_switch_and_thinking_modes_are_checked(tmp_path: Path) -> None:
    script = tmp_path / "other.jsonl"
    script.write_text(json.dumps(answer("From the other engine.", reasoning=None)) + "\n")
    runner = make_runner(tmp_path, [answer("first")])
    anyio.run(runner.switch_engine, f"scripted:{script}?model=deepseek-v4-flash")
    assert runner.engine.model == "deepseek-v4-flash"
    assert runner.engine_spec in runner.engine_specs
    with pytest.raises(ChatEngineError, match="cannot read"):
        anyio.run(runner.switch_engine, f"scripted:{tmp_path / 'missing.jsonl'}")
    assert runner.engine.model == "deepseek-v4-flash"  # a failed switch keeps the engine
    runner.set_thinking("chat")
    assert runner.config.thinking == "chat"
    with pytest.raises(ChatEngineError, match="unknown thinking mode"):
        runner.set_thinking("deep")

    async def turn() -> list[str]:
        return [type(e).__name__ async for e in runner.turn("hello")]

    kinds = anyio.run(turn)
    assert kinds[-1] == "Done"
    assert runner.store.messages(runner.session_id)[-1]["content"] == "From the other engine."
    assert runner.store.info(runner.session_id).title == "hello"


def test_an_attached_memory_scope_gives_new_sessions_the_memory_tool(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("noted")],
                         memory_home=MemoryHome(tmp_path / "home"))
    before = [t.name for t in runner.tools]
    runner.attach_memory("project-x")
    assert [t.name for t in runner.tools] == [*before, "memory"]
    assert (tmp_path / "home" / "memory" / "project-x").is_dir()

    async def turn() -> None:
        async for _ in runner.turn("remember this"):
            pass

    anyio.run(turn)
    system = runner.store.messages(runner.session_id)[0]
    assert [t["function"]["name"] for t in system["tools"]] == [*before, "memory"]
    with pytest.raises(WhaleboneError):
        runner.attach_memory("../escape")


def test_the_scopes_shown_are_this_chats_capped_ones(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    runner = make_runner(tmp_path, [], ledger=ledger)
    runner.session_id = "mine"
    for scope in ("session:mine", "session:other", "run:r1", day_scope("global"),
                  "global:2001-01-01", "project:x"):
        ledger.set_limit(Limit(scope=scope, max_usd=1.0))
    ledger.record(["agent:uncapped"], Actual(usd=0.5))
    shown = [s.scope for s in runner.scope_states()]
    assert shown == sorted(["session:mine", day_scope("global"), "project:x"])
    named = make_runner(tmp_path / "n", [], ledger=ledger, scopes=["agent:uncapped"])
    (state,) = named.scope_states()
    assert state.spent_usd == 0.5


def test_compacting_on_demand_needs_a_session_and_reports_what_it_saved(
        tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [answer("One."), answer("Two."), answer("SUMMARY: two.")],
                         config=AgentConfig(keep_recent=1))
    with pytest.raises(ChatEngineError, match="no session"):
        anyio.run(runner.compact)

    async def two_turns() -> None:
        for text in ("first", "second"):
            async for _ in runner.turn(text):
                pass

    anyio.run(two_turns)
    report = anyio.run(runner.compact)
    assert (report.messages_before, report.messages_after) == (5, 4)
    assert runner.store.messages(runner.session_id)[-1]["role"] == "compaction"
    with pytest.raises(WhaleboneError, match="too few turns"):
        anyio.run(runner.compact)  # what is left is the head, the summary and one turn
