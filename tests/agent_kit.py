"""Helpers for the agent tests: scripted completions and small real tools."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from whalebone.agent import Agent, AgentConfig
from whalebone.dsml import emit_completion
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.registry import ToolRegistry


def say(text: str, reasoning: str | None = "Done thinking.") -> str:
    return emit_completion(text, reasoning=reasoning)


def call(*calls: tuple[str, Mapping[str, Any]], reasoning: str | None = "I will call a tool.",
         content: str = "") -> str:
    return emit_completion(content, reasoning=reasoning, tool_calls=list(calls))


def file_tools(root: Path) -> ToolRegistry:
    """append_line (side effects, not idempotent) and count_lines (idempotent)."""
    reg = ToolRegistry()
    log = root / "log.txt"

    @reg.tool
    def append_line(line: str) -> str:
        """Append a line to the log."""
        with log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        return f"appended {line}"

    @reg.tool(idempotent=True)
    def count_lines() -> int:
        """Count the log's lines."""
        return len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0

    return reg


def events_of(a: Agent, task: str | None = None, **options: Any) -> list[Any]:
    """Run ``a`` to the end and return every event it yielded."""
    async def collect() -> list[Any]:
        return [e async for e in a.stream(task, **options)]

    return anyio.run(collect)


def agent(engine: ScriptedEngine, tmp_path: Path, tools: ToolRegistry | None = None,
          **config: Any) -> Agent:
    config.setdefault("date_in_task", False)
    return Agent(engine, tools=tools, store=tmp_path / "sessions.db",
                 config=AgentConfig(**config))


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``whalebone ARGS`` through its entry point, without a process start (cheap checks):
    (exit code, stdout, stderr)."""
    from whalebone.agent.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def script(tmp_path: Path, name: str, completions: list[str]) -> str:
    """An engine spec replaying ``completions`` from a JSON file under ``tmp_path``."""
    path = tmp_path / name
    path.write_text(json.dumps(completions), encoding="utf-8")
    return f"scripted:{path}"
