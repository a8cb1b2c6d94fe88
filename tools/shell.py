"""``shell``: run a command in the workspace under a policy of allow / ask / deny patterns.

Patterns are shell-style globs matched against the whole command. A command that chains or
redirects (``;``, ``&&``, ``|``, backquotes, ``$(``, ``>``…) never qualifies for automatic
allowance, since ``ls; rm -rf ~`` starts with ``ls``: it is asked about (or denied) instead,
and deny patterns are matched against each of its parts as well. ``ask`` goes to an approval
callback supplied by the host (the TUI's modal, the daemon's control API); with none, asking
means no. Output is capped, and on timeout the whole process group is killed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import Process
from pydantic import BaseModel

from whalebone.dsml.untrusted import neutralise
from whalebone.tools.registry import ToolError

Decision = Literal["allow", "ask", "deny"]
Approver = Callable[[str], Awaitable[bool]]

_CHAINING = re.compile(r"[;&|`\n<>]|\$\(")
_SPLIT = re.compile(r"\|\||&&|[;&|\n]")


class ShellPolicy(BaseModel):
    allow: list[str] = []
    ask: list[str] = []
    deny: list[str] = ["sudo *", "rm -rf /*", "rm -rf ~*", "mkfs*", "shutdown*", "reboot*",
                       ":(){*"]
    default: Decision = "ask"
    timeout: float = 60.0
    max_output: int = 30_000

    def decide(self, command: str) -> Decision:
        cmd = command.strip()
        parts = [p.strip() for p in _SPLIT.split(cmd) if p.strip()]
        if any(fnmatch.fnmatchcase(c, pat) for pat in self.deny for c in [cmd, *parts]):
            return "deny"
        chained = bool(_CHAINING.search(cmd))
        if not chained and any(fnmatch.fnmatchcase(cmd, pat) for pat in self.allow):
            return "allow"
        if any(fnmatch.fnmatchcase(cmd, pat) for pat in self.ask):
            return "ask"
        return self.default  # "allow" here is the user's choice of full trust


async def run_shell(command: str, workspace: Path, policy: ShellPolicy | None = None,
                    approve: Approver | None = None) -> str:
    policy = policy or ShellPolicy()
    decision = policy.decide(command)
    if decision == "deny":
        raise ToolError(f"refused by policy: {command[:200]!r}")
    if decision == "ask" and (approve is None or not await approve(command)):
        raise ToolError(f"not approved: {command[:200]!r} needs a person's approval")
    proc = await anyio.open_process(["/bin/sh", "-c", command], cwd=workspace,
                                    start_new_session=True, stdin=None)
    out = bytearray()
    truncated = False
    timed_out = False

    async def read() -> None:
        nonlocal truncated
        assert proc.stdout is not None and proc.stderr is not None
        async with anyio.create_task_group() as tg:
            for stream in (proc.stdout, proc.stderr):
                tg.start_soon(_drain, stream, out, policy.max_output)
        truncated = len(out) >= policy.max_output

    try:
        with anyio.move_on_after(policy.timeout) as scope:
            await read()
            await proc.wait()
        timed_out = scope.cancelled_caught
    finally:
        if proc.returncode is None:
            _kill_group(proc)
            with anyio.CancelScope(shield=True):
                await proc.wait()
    text = out[: policy.max_output].decode("utf-8", errors="replace")
    head = (f"timed out after {policy.timeout:g} s (killed)" if timed_out
            else f"exit code {proc.returncode}")
    note = f"\n[output truncated at {policy.max_output} bytes]" if truncated else ""
    return f"{head}\n{neutralise(text)}{note}"


async def _drain(stream: anyio.abc.ByteReceiveStream, out: bytearray, cap: int) -> None:
    async for chunk in stream:
        if len(out) < cap:
            out += chunk[: cap - len(out)]
        # keep reading past the cap so the process never blocks on a full pipe


def _kill_group(proc: Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
