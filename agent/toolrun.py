"""Running a turn's tool calls: in parallel, journaled, timed out, capped and neutralised.

Each call is journaled as ``started`` (committed) before it runs and ``finished`` after, keyed by
its call id, so a call id can never run twice: a second start is refused by the journal. After a
crash the journal tells which calls were cut short: a non-idempotent one is reported to the model
as interrupted (it may have had its effect), an idempotent one is simply run again.

A tool that starts a process group (the shell) reports it while the call runs, and the journal
keeps it: after a crash the resumed run kills a group that is still running, so no orphaned
command goes on writing behind the model's back, and tells the model exactly that.

Tool output is untrusted: credentials in it are redacted before it is journaled or shown, and it
is neutralised (no forged special tokens, no forged tool calls) and capped before it becomes a
message.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from whalebone.agent.config import AgentConfig
from whalebone.agent.store import Session
from whalebone.dsml.models import ToolCall, loads_object
from whalebone.dsml.untrusted import neutralise
from whalebone.tools.redact import redact
from whalebone.tools.registry import ToolRegistry, ToolResult, process_hook
from whalebone.tools.sandbox import group_running


@dataclass
class Outcome:
    """One finished call, ready to become a ``tool`` message."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result: ToolResult
    seconds: float
    content: str  # neutralised and capped: what the model will read
    ran: bool  # False when the call was refused before running (bad arguments, no such tool)

    def message(self) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": self.call_id, "content": self.content}


def cap(text: str, limit: int) -> str:
    """Neutralise untrusted text, then cap it (the note says how much was cut)."""
    text = neutralise(text)
    if len(text) > limit:
        return text[:limit] + f"\n[output truncated: {len(text) - limit} more characters]"
    return text


class ToolRunner:
    def __init__(self, tools: ToolRegistry, session: Session, config: AgentConfig) -> None:
        self.tools = tools
        self.session = session
        self.config = config

    async def _call(self, name: str, arguments: Mapping[str, Any], call_id: str) -> ToolResult:
        """Run one tool under its own timeout, or the agent's default one; its output with
        credentials redacted."""
        token = process_hook.set(
            lambda pgid, started, boxed: self.session.call_process(call_id, pgid, started, boxed))
        try:
            result = await self._timed(name, arguments)
        finally:
            process_hook.reset(token)
        return ToolResult(content=redact(result.content), is_error=result.is_error)

    async def _timed(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        tool = self.tools[name]
        limit = None if tool.timeout is not None else self.config.tool_timeout
        if limit is None:
            return await tool.call(arguments)
        with anyio.move_on_after(limit) as scope:
            return await tool.call(arguments)
        assert scope.cancelled_caught
        return ToolResult(content=f"{name} timed out after {limit:g} s", is_error=True)

    def _outcome(self, call_id: str, name: str, arguments: dict[str, Any], result: ToolResult,
                 seconds: float, ran: bool) -> Outcome:
        return Outcome(call_id=call_id, name=name, arguments=arguments, result=result,
                       seconds=seconds, content=cap(result.content, self.config.tool_output_cap),
                       ran=ran)

    async def run(self, calls: list[ToolCall], ids: list[str]) -> list[Outcome]:
        """Run a turn's calls concurrently; outcomes come back in call order."""
        outcomes: dict[str, Outcome] = {}

        async def run_one(call_id: str, call: ToolCall) -> None:
            args = call.parsed_arguments or {}
            tool = self.tools[call.name]
            if not self.session.call_started(call_id, call.name, args, tool.idempotent):
                # Journaled before (a replayed turn): never run one call id twice.
                entry = next(e for e in self.session.store.journal(self.session.id)
                             if e.call_id == call_id)
                result = ToolResult(content=entry.result or "", is_error=bool(entry.is_error))
                outcomes[call_id] = self._outcome(call_id, call.name, args, result, 0.0, False)
                return
            start = time.monotonic()
            result = await self._call(call.name, args, call_id)
            self.session.call_finished(call_id, result.content, result.is_error)
            outcomes[call_id] = self._outcome(call_id, call.name, args, result,
                                              time.monotonic() - start, True)

        async with anyio.create_task_group() as tg:
            for call, call_id in zip(calls, ids, strict=True):
                refusal = self._refusal(call)
                if refusal is not None:
                    outcomes[call_id] = self._outcome(
                        call_id, call.name, call.parsed_arguments or {},
                        ToolResult(content=refusal, is_error=True), 0.0, False)
                else:
                    tg.start_soon(run_one, call_id, call)
        return [outcomes[i] for i in ids]

    def _refusal(self, call: ToolCall) -> str | None:
        if not call.ok:
            return "error: " + "; ".join(e.message for e in call.errors)
        if call.name not in self.tools:
            known = ", ".join(t.name for t in self.tools) or "none"
            return f"error: there is no tool named {call.name!r} (tools: {known})"
        return None

    async def recover(self, history: list[dict[str, Any]]) -> tuple[list[Outcome], list[str]]:
        """Close the last assistant turn's calls that have no result: (outcomes, warnings)."""
        last = next((i for i in range(len(history) - 1, -1, -1)
                     if history[i].get("role") == "assistant"), None)
        if last is None or not history[last].get("tool_calls"):
            return [], []
        answered = {m.get("tool_call_id") for m in history[last + 1:] if m.get("role") == "tool"}
        journal = {e.call_id: e for e in self.session.store.journal(self.session.id)}
        outcomes, warnings = [], []
        for tc in history[last]["tool_calls"]:
            call_id, name = tc["id"], tc["function"]["name"]
            if call_id in answered:
                continue
            args = loads_object(tc["function"]["arguments"]) or {}
            entry = journal.get(call_id)
            tool = self.tools[name] if name in self.tools else None
            ran = False
            if entry is not None and entry.status in ("finished", "interrupted"):
                result = ToolResult(content=entry.result or "", is_error=bool(entry.is_error))
            elif entry is not None and not (tool and tool.idempotent):
                fate = _end_group(entry.process)
                result = ToolResult(
                    content=f"interrupted: the call {name} was cut short (the run crashed or was"
                            f" cancelled).{fate} It was not run again, because it may have side "
                            "effects, and it may have partly happened: check its effect before "
                            "repeating it", is_error=True)
                self.session.call_finished(call_id, result.content, True, status="interrupted")
                warnings.append(f"{name} ({call_id}) was interrupted.{fate} Reported to the "
                                "model, not re-run")
            elif tool is None:
                result = ToolResult(content=f"error: there is no tool named {name!r}",
                                    is_error=True)
            else:  # never started, or idempotent: (re)run it now
                if entry is not None:
                    self.session.restart_call(call_id)
                    warnings.append(f"{name} ({call_id}) was interrupted; it is idempotent, so "
                                    "it ran again")
                else:
                    self.session.call_started(call_id, name, args, tool.idempotent)
                _end_group(entry.process if entry else None)
                result = await self._call(name, args, call_id)
                self.session.call_finished(call_id, result.content, result.is_error)
                ran = True
            outcomes.append(self._outcome(call_id, name, args, result, 0.0, ran))
        return outcomes, warnings


def _end_group(process: dict[str, int] | None) -> str:
    """Kill a journaled process group that outlived its run; what happened, as a sentence (for
    the model and the log), or "" when the call started none."""
    if not process:
        return ""
    pgid, started = int(process.get("pgid", 0)), int(process.get("started", 0))
    if group_running(pgid, started):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            return f" Its process group {pgid} is still running and could not be killed."
        else:
            return (f" Its process group {pgid} was still running after the crash and was "
                    "killed (SIGKILL) on resume.")
    if process.get("sandboxed"):
        return (f" Its sandbox (process group {pgid}) was killed together with the crashed "
                "run.")
    return f" Its process group {pgid} had already ended."
