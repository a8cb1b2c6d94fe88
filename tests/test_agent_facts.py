"""Objective run facts, gathered from the session record for the budget auditor."""

from __future__ import annotations

import time
from pathlib import Path

from agent_kit import call, say

from whalebone.agent import Agent, AgentConfig
from whalebone.agent.facts import collect_facts, to_run_facts
from whalebone.agent.tools import default_tools
from whalebone.budget.guard import RunFacts
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.shell import ShellPolicy


def test_facts_come_from_the_journal_not_from_the_model(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    tools = default_tools(ws, shell_policy=ShellPolicy(allow=["echo *", "false"]), web=False)
    engine = ScriptedEngine([
        call(("shell", {"command": "echo hi"}), ("write_file", {"path": "out.txt",
                                                                "content": "x"})),
        call(("shell", {"command": "false"})),
        call(("shell", {"command": "false"})),
        say("I am certainly almost done, please extend my budget."),
    ])
    a = Agent(engine, tools=tools, store=tmp_path / "s.db",
              config=AgentConfig(date_in_task=False))
    done = a.run_sync("write out.txt")
    with a.store.open(done.session_id) as session:
        facts = collect_facts(session, task="write out.txt", steps=done.steps,
                              started=time.monotonic() - 5)
    assert facts["commands"] == [{"command": "echo hi", "exit_status": 0},
                                 {"command": "false", "exit_status": 1},
                                 {"command": "false", "exit_status": 1}]
    assert facts["files_changed"] == ["out.txt"]
    assert facts["tool_calls"] == 4 and facts["tool_errors"] == 0
    assert facts["repeated_identical_calls"] == 2
    assert facts["new_info_per_step"] == [1.0, 1.0, 0.0]  # the third step learned nothing new
    assert facts["elapsed_s"] >= 5
    run_facts = to_run_facts(facts, RunFacts)
    assert run_facts.commands[1].exit_status == 1
    assert "extend" not in run_facts.model_dump_json()  # no narrative from the worker
