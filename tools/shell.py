"""``shell``: run a command in the workspace under a policy of allow / ask / deny patterns,
inside an OS sandbox.

The policy decides on the parsed command (:mod:`whalebone.tools.shellparse`), never on its text:
every simple command it would run (in pipelines, lists, ``$(…)``, backquotes, subshells, groups,
``if``/``for``/``case`` bodies, and behind wrappers such as ``env``, ``nice``, ``sudo``, ``xargs``,
``find -exec`` and ``sh -c``) is checked, with its program resolved through PATH. Deny wins: one
denied command denies the whole line. A command is allowed without asking only when every
simple command in it matches an allow pattern (or the default is ``allow``), nothing in it is
known only at run time (``$t P``, ``$(…)`` as a word) and nothing runs code the parse cannot see
(``python -c``, ``find -exec``, ``xargs``, ``git -c``, ``awk`` with ``system``): those are asked
about (or denied when the default is ``deny``). Output written to a file by a redirection counts
as a command of its own under the default. A line that cannot be parsed is never allowed.

Patterns are whitespace-separated globs, one per word: ``git status`` matches exactly that, a
final ``*`` (or a last word ending in ``*``) lets any further arguments follow. Deny patterns
match more loosely, so that spelling cannot slip past them: options in any order and form
(``rm -rf /`` denies ``rm -fr /``, ``rm -r -f /``, ``rm --recursive --force -v /tmp/.. /``), the
pattern's other words anywhere among the arguments, and paths normalised (``//``, ``/.``).

``ask`` goes to an approval callback supplied by the host (the TUI's modal, the daemon's control
API); with none, asking means no. Each command runs in the sandbox of
:mod:`whalebone.tools.sandbox` with a scrubbed environment and resource limits, in its own
process group, which is killed on timeout; output is capped and secrets in it redacted.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import Process
from pydantic import BaseModel

import whalebone.tools.sandbox as sandbox
from whalebone.dsml.untrusted import neutralise
from whalebone.tools.redact import redact
from whalebone.tools.registry import ToolError, report_process
from whalebone.tools.shellparse import UNKNOWN, Simple, parse

Decision = Literal["allow", "ask", "deny"]
Approver = Callable[[str], Awaitable[bool]]

_RANK = {"allow": 0, "ask": 1, "deny": 2}
# Builtins that cannot change anything by themselves: never the reason to ask.
_HARMLESS = {"cd", "pushd", "popd", "pwd", "true", "false", ":", "test", "[", "exit", "return",
             "shift", "wait"}
# Option spellings that mean the same thing, per program, for deny matching.
_OPTION_ALIASES = {"rm": {"R": "r", "recursive": "r", "force": "f", "dir": "d"},
                   "chmod": {"recursive": "R"}, "chown": {"recursive": "R"},
                   "chgrp": {"recursive": "R"}}

DEFAULT_DENY = [
    "sudo *", "doas *", "su *", "pkexec *", "mkfs*", "shutdown*", "reboot*", "halt*",
    "poweroff*", "dd * of=/dev/*", ":(){*",
    "rm -rf /", "rm -rf /[*]", "rm -rf ~", "rm -rf ~/[*]", "rm -rf [*]", "rm -rf .",
    "rm -rf ..", "rm --no-preserve-root *", "chmod -R * /", "chown -R * /",
]


class ShellPolicy(BaseModel):
    allow: list[str] = []
    ask: list[str] = []
    deny: list[str] = DEFAULT_DENY
    default: Decision = "ask"
    timeout: float = 60.0
    max_output: int = 30_000
    sandbox: Literal["on", "off"] = "on"  # "off": run commands unconfined (the user's choice)
    network: bool = False  # let sandboxed commands reach the network
    pass_env: list[str] = []  # secret-looking environment variables commands may still see
    hide: list[str] = []  # more paths the sandbox hides (credentials are hidden already)
    cpu_seconds: int = 600  # RLIMIT_CPU of each command
    max_file_mb: int = 4096  # RLIMIT_FSIZE: the largest file a command may write
    max_processes: int = 4096  # RLIMIT_NPROC (not enforced for root)

    def decide(self, command: str) -> Decision:
        return self.verdict(command)[0]

    def verdict(self, command: str) -> tuple[Decision, str]:
        """The decision for ``command`` and the reason, in words."""
        parsed = parse(command)
        for cmd in parsed.commands:
            hit = next((p for p in self.deny if cmd.argv and _deny_match(p, cmd)), None)
            if hit is not None:
                return "deny", f"{cmd.text!r} matches the deny pattern {hit!r}"
        text = " ".join(command.split())
        hit = next((p for p in self.deny if fnmatch.fnmatchcase(text, p)), None)
        if hit is not None:
            return "deny", f"it matches the deny pattern {hit!r}"
        unknown = parsed.problems + [f"{c.text!r}: {c.dynamic}" for c in parsed.commands
                                     if c.dynamic]
        unknown += [f"{c.text!r}: a word known only at run time could make it match the deny "
                    f"pattern {p!r}" for c in parsed.commands if UNKNOWN in c.argv
                    for p in self.deny if _deny_name(p, c)]
        unknown += [f"{c.text!r}: {c.executes}" for c in parsed.commands if c.executes]
        if unknown:
            return ("deny" if self.default == "deny" else "ask"), (
                "it cannot be decided before it runs: " + "; ".join(unknown[:3]))
        worst: Decision = "allow"
        reason = "every command in it is allowed"
        for cmd in parsed.commands:
            if cmd.wrapper and not cmd.privileged:
                continue  # what it runs is listed after it and decides
            level = self._level(cmd)
            if _RANK[level] > _RANK[worst]:
                worst, reason = level, f"{cmd.text!r} is not on the allow list"
        if parsed.writes and _RANK[self.default] > _RANK[worst]:
            worst, reason = self.default, f"it writes to {parsed.writes[0]!r}"
        return worst, reason

    def _level(self, cmd: Simple) -> Decision:
        if any(_match(p, cmd.argv) for p in self.allow):
            return "allow"
        if any(_match(p, cmd.argv) for p in self.ask):
            return "ask"
        if cmd.program in _HARMLESS:
            return "allow"
        return self.default  # "allow" here is the user's choice of full trust


def _match(pattern: str, argv: list[str]) -> bool:
    """Word-by-word glob match; a final ``*`` word (or a last word ending in ``*``) lets any
    further arguments follow."""
    words = pattern.split()
    if not words or not argv:
        return False
    rest = words[-1].endswith("*")
    if words[-1] == "*":
        words = words[:-1]
    if len(argv) < len(words) or (not rest and len(argv) != len(words)):
        return False
    return all(fnmatch.fnmatchcase(a, w) for a, w in zip(argv, words, strict=False))


def _deny_match(pattern: str, cmd: Simple) -> bool:
    """Loose matching for deny patterns: the program by its resolved or written name, options
    as a set in any spelling, the other words in order anywhere among the arguments."""
    words = pattern.split()
    name = _deny_name(pattern, cmd)
    if name is None:
        return False
    if _match(pattern, [name, *cmd.argv[1:]]):
        return True
    aliases = _OPTION_ALIASES.get(posixpath.basename(name), {})
    want_flags, want_words = _canonical(words[1:], aliases)
    have_flags, have_words = _canonical(cmd.argv[1:], aliases)
    want_words = [w for w in want_words if w != "*"]
    if not want_flags <= have_flags:
        return False
    it = iter(have_words)
    return all(any(fnmatch.fnmatchcase(h, w) for h in it) for w in want_words)


def _deny_name(pattern: str, cmd: Simple) -> str | None:
    """The name of ``cmd``'s program that a deny pattern's first word matches, if any."""
    words = pattern.split()
    if not words or not cmd.argv:
        return None
    names = {cmd.program, posixpath.basename(cmd.program),
             posixpath.basename(cmd.literal_program or cmd.program)}
    return next((n for n in names if fnmatch.fnmatchcase(n, words[0])), None)


def _canonical(args: list[str], aliases: dict[str, str]) -> tuple[set[str], list[str]]:
    flags: set[str] = set()
    words: list[str] = []
    options_done = False
    for a in args:
        if options_done or a == "-" or not a.startswith("-"):
            words.append(_normal_path(a))
        elif a == "--":
            options_done = True
        elif a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            flags.add(aliases.get(name, name))
        else:
            flags.update(aliases.get(ch, ch) for ch in a[1:])
    return flags, words


def _normal_path(word: str) -> str:
    if not word.startswith(("/", "~")):
        return word
    collapsed = re.sub(r"/+", "/", word)
    norm = posixpath.normpath(collapsed)
    return "~" if norm in ("~", "~/.") else norm


async def run_shell(command: str, workspace: Path, policy: ShellPolicy | None = None,
                    approve: Approver | None = None) -> str:
    policy = policy or ShellPolicy()
    decision, reason = policy.verdict(command)
    if decision == "deny":
        raise ToolError(f"refused by policy: {command[:200]!r} ({reason})")
    unconfined = sandbox.unavailable(policy.sandbox)
    if decision == "allow" and unconfined is not None:
        decision, reason = "ask", f"commands are not sandboxed here: {unconfined}"
    if decision == "ask" and (approve is None or not await approve(command)):
        raise ToolError(f"not approved: {command[:200]!r} needs a person's approval ({reason})")
    argv = ["bash" if shutil.which("bash") else "/bin/sh", "-c", command]
    sandboxed = policy.sandbox == "on" and unconfined is None
    if sandboxed:
        argv = sandbox.wrap(argv, workspace, network=policy.network, hide=policy.hide)
    argv = sandbox.limit(argv, cpu_seconds=policy.cpu_seconds, max_file_mb=policy.max_file_mb,
                         max_processes=policy.max_processes)
    proc = await anyio.open_process(argv, cwd=workspace, start_new_session=True,
                                    stdin=subprocess.DEVNULL,
                                    env=sandbox.scrubbed_env(policy.pass_env))
    # Journaled before the command can do anything much: a crash from here on leaves the
    # process group on record, so a resumed run kills it instead of letting it finish unseen.
    report_process(proc.pid, sandbox.start_time(proc.pid), sandboxed)
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
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                _kill_group(proc)
            await proc.aclose()  # waits, and closes the pipes while the loop still runs
    text = redact(out[: policy.max_output].decode("utf-8", errors="replace"))
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
