"""``whalebone run`` and ``whalebone sessions``: agents from the command line.

    whalebone run "TASK" [--engine SPEC] [--workspace DIR] [--thinking MODE] [--json]
    whalebone sessions list
    whalebone sessions show ID
    whalebone sessions resume ID ["TASK"]
    whalebone sessions compact ID [--keep-recent N] [--engine SPEC] [--json]

``run`` streams a readable transcript (reasoning, text, tool calls and results, warnings) and
ends with a usage line: tokens, cache hit rate, price and the session id. ``--json`` prints the
events as JSON lines instead. Settings come from flags, the environment and a TOML file (see
:mod:`whalebone.agent.settings`); the default engine is the bundled one.

Exit codes (also in ``whalebone run --help``):
    0  the agent answered
    1  the run failed (an engine error mid-run; the session can be resumed)
    2  bad usage: arguments, config file or unknown session
    3  stopped by a limit: max steps, a doom loop, or malformed output past the retry limit
    4  stopped by the budget guard
    5  no engine: the engine cannot be opened (no checkpoint, missing extra, bad spec, no key)
    6  the session is being written by another process
    7  storage: the disk is full or read-only (what was saved before is intact)
    130  interrupted (Ctrl-C); the session can be resumed

``sessions compact``: see :mod:`whalebone.agent.compact_command`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any, TextIO

from whalebone.core.errors import WhaleboneError
from whalebone.engine.factory import SPEC_HELP
from whalebone.memory.cli import printable

EXIT_CODES = {"answer": 0, "error": 1, "usage": 2, "max_steps": 3, "loop": 3,
              "parse_retries": 3, "budget": 4, "no_engine": 5, "busy": 6, "storage": 7,
              "cancelled": 130}

EXIT_HELP = """exit codes:
  0    the agent answered
  1    the run failed (engine error mid-run; resume the session)
  2    bad usage: arguments, config file or unknown session
  3    stopped by a limit: max steps, a doom loop, malformed output past the retries
  4    stopped by the budget guard
  5    no engine: it cannot be opened (no checkpoint, missing extra, bad spec, no key)
  6    the session is being written by another process
  7    storage: the disk is full or read-only (what was saved before is intact)
  130  interrupted (Ctrl-C); resume the session"""

# Model and tool text for a terminal: control characters (escape sequences, bidi overrides)
# shown escaped instead of acted on; one definition, memory's.
safe = printable


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run an agent on a task",
                         description="Run an agent on TASK in a new session, streaming what it "
                         "does, and end with a usage line.\n\nProject instructions: AGENTS.md "
                         "and WHALEBONE.md at the workspace root go into a new session's system "
                         "prompt, once (a line on stderr names the files); an edit applies to "
                         "new sessions. MCP servers: see --mcp and 'whalebone mcp list'.",
                         epilog=EXIT_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("task", help="what the agent should do")
    _run_options(run)
    run.set_defaults(handler=cmd_run)

    sessions = sub.add_parser("sessions", help="list, show or resume agent sessions",
                              epilog=EXIT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = sessions.add_subparsers(dest="sessions_command", metavar="ACTION")
    ls = ssub.add_parser("list", help="sessions, most recent first")
    store_options(ls)
    ls.set_defaults(handler=cmd_list)
    show = ssub.add_parser("show", help="a session's messages and usage")
    show.add_argument("session", help="session id (a unique prefix will do)")
    store_options(show)
    show.set_defaults(handler=cmd_show)
    resume = ssub.add_parser("resume", help="continue a session (after a stop or a crash)",
                             epilog=EXIT_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    resume.add_argument("session", help="session id (a unique prefix will do)")
    resume.add_argument("task", nargs="?", help="a new message for the agent (optional)")
    _run_options(resume)
    resume.set_defaults(handler=cmd_resume)
    from whalebone.agent.compact_command import register_compact

    register_compact(ssub)


def store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings TOML (default: "
                   "$WHALEBONE_HOME/config.toml or ~/.whalebone/config.toml)")
    p.add_argument("--store", metavar="DB", help="session database (default: "
                   "~/.whalebone/sessions.db)")


def engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", metavar="SPEC", help=f"{SPEC_HELP} (default: "
                   "$WHALEBONE_ENGINE, or engine = … in the config, else bundled)")
    p.add_argument("--model", help="model name, for engines that need one (openai:URL)")


def _run_options(p: argparse.ArgumentParser) -> None:
    store_options(p)
    engine_options(p)
    p.add_argument("--workspace", metavar="DIR", help="the directory the file and shell tools "
                   "work in (default: the current one)")
    p.add_argument("--thinking", choices=["chat", "thinking", "max"], help="thinking mode")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N model turns")
    p.add_argument("--max-tokens", type=int, metavar="N", help="output tokens per turn")
    p.add_argument("--no-tools", action="store_true", help="give the agent no tools")
    p.add_argument("--memory", metavar="SCOPE", help="give the agent the memory tool over "
                   "SCOPE (e.g. project:NAME) under $WHALEBONE_HOME/memory")
    p.add_argument("--mcp", action="append", metavar="FILE", help="MCP servers from this "
                   "mcpServers file (JSON or TOML), beside those of $WHALEBONE_HOME/config.toml, "
                   "$WHALEBONE_HOME/mcp.json and a trusted project .mcp.json (whalebone mcp)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    p.add_argument("--quiet", action="store_true", help="print only the answer and usage line")


def fail(message: str, code: int) -> int:
    from whalebone.tools.redact import redact

    print(f"whalebone: {redact(message)}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, args.task, session_id=None)


def cmd_resume(args: argparse.Namespace) -> int:
    return _run(args, args.task, session_id=args.session)


def _run(args: argparse.Namespace, task: str | None, session_id: str | None) -> int:
    import anyio

    from whalebone.agent.build import Overrides, mcp_servers
    from whalebone.agent.store import SessionBusy, SessionError
    from whalebone.engine.base import EngineError
    from whalebone.tools.mcp import McpUnavailable
    from whalebone.tools.mcp_config import McpSetup

    overrides = Overrides(
        engine=args.engine, model=args.model, store=args.store, workspace=args.workspace,
        session_id=session_id, tools="none" if args.no_tools else "builtin",
        approve=_approver(), memory=args.memory, mcp=args.mcp or (),
        agent={k: getattr(args, k) for k in ("thinking", "max_steps", "max_tokens")
               if getattr(args, k) is not None})
    built = build_or_exit(args.config, overrides)
    if isinstance(built, int):
        return built
    agent, parts = built
    session_id = overrides.session_id  # the full id, when a prefix was typed
    for note in parts.notes:
        print(f"whalebone: {safe(note)}", file=sys.stderr)
    engine, store, config = agent.engine, agent.store, agent.config
    if session_id is None:  # made here so that an interrupted run can name it
        title = (task or "").strip().splitlines()[0][:80] if (task or "").strip() else ""
        session_id = store.create(title=title, agent=config.name,
                                  config=config.model_dump(mode="json"), task=task)
    printer = _Printer(sys.stdout, json_lines=args.json, quiet=args.quiet)

    async def main() -> Any:
        try:
            mcp = parts.mcp if not args.no_tools else McpSetup()
            async with mcp_servers(mcp, agent.tools.add_many, lambda line: fail(line, 0)):
                async for event in agent.stream(task, session_id=session_id):
                    printer.show(event)
        finally:
            await engine.aclose()
        return printer.done

    try:
        done = anyio.run(main)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return fail("interrupted; resume with: whalebone sessions resume "
                     f"{session_id}", EXIT_CODES["cancelled"])
    except SessionBusy as e:
        return fail(str(e), EXIT_CODES["busy"])
    except SessionError as e:
        return fail(str(e), EXIT_CODES["usage"])
    except EngineError as e:
        return fail(str(e), EXIT_CODES["no_engine"])
    except McpUnavailable as e:  # a server marked required = true
        return fail(f"{e}; resume with: whalebone sessions resume {session_id}",
                    EXIT_CODES["usage"])
    except Exception as e:
        from whalebone.core.errors import storage_failure

        problem = storage_failure(e)
        if problem is None:
            raise
        return fail(f"cannot save the session: {problem}; its saved steps are intact: make "
                    f"room and resume with: whalebone sessions resume {session_id}",
                    EXIT_CODES["storage"])
    if done is None:
        return EXIT_CODES["error"]
    return EXIT_CODES.get(done.reason, 1)


def build_or_exit(config_file: str | None, overrides: Any) -> Any:
    """``build`` for a command: the agent and its parts, or the exit code of a one-line error
    (2 for settings, 5 for an engine that cannot be opened)."""
    from whalebone.agent.build import build
    from whalebone.agent.settings import load_settings
    from whalebone.engine.base import EngineError

    spec = overrides.engine
    try:
        settings = load_settings(config_file)
        spec = spec or settings.engine
        return build(settings, overrides)
    except EngineError as e:
        return fail(f"cannot open the engine {spec!r}: {e}", EXIT_CODES["no_engine"])
    except (WhaleboneError, ValueError) as e:
        return fail(str(e), EXIT_CODES["usage"])


def _approver() -> Any:
    """Ask a person at the terminal about shell commands the policy marks "ask"; with no
    terminal, asking means no."""
    if not sys.stdin.isatty():
        return None
    import anyio

    async def approve(command: str) -> bool:
        answer = await anyio.to_thread.run_sync(
            lambda: input(f"\nallow shell command {safe(command)!r}? [y/N] "))
        return answer.strip().lower() in ("y", "yes")

    return approve


class _Printer:
    """Events as a readable transcript (or JSON lines)."""

    def __init__(self, out: TextIO, *, json_lines: bool, quiet: bool) -> None:
        self.out = out
        self.json_lines = json_lines
        self.quiet = quiet
        self.done: Any = None
        self.session_id = ""
        self.mode = ""  # what the last delta was: reasoning or text
        self.prompt = self.hits = self.completion = 0

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def show(self, event: Any) -> None:
        kind = event.type
        if kind == "usage":
            self.prompt += event.prompt_tokens
            self.hits += event.cache_hit_tokens
            self.completion += event.completion_tokens
        if kind == "done":
            self.done, self.session_id = event, event.session_id
        if self.json_lines:
            self._write(event.model_dump_json() + "\n")
            return
        if kind == "done":
            self._end(event)
        elif self.quiet:
            return
        elif kind in ("reasoning", "text"):
            if self.mode != kind:
                self._write("\n[thinking] " if kind == "reasoning" else "\n")
                self.mode = kind
            self._write(safe(event.text))
        elif kind == "tool_call":
            self.mode = ""
            args = json.dumps(event.arguments, ensure_ascii=False)
            self._write(f"\n→ {event.name}({safe(_clip(args, 300))})\n")
        elif kind == "tool_result":
            lines = event.content.splitlines() or [""]
            more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
            flag = "error: " if event.is_error else ""
            self._write(f"← {event.name}: {flag}{safe(_clip(lines[0], 200))}{more}\n")
        elif kind == "warning":
            print(f"\n! {event.kind}: {safe(event.message)}", file=sys.stderr)
        elif kind == "compacted":
            after = "?" if event.hit_rate_after is None else f"{event.hit_rate_after:.0%}"
            self._write(f"\n[compacted: {event.tokens_before} → {event.tokens_after} prompt "
                        f"tokens, cache hits {event.hit_rate_before:.0%} → {after}]\n")

    def _end(self, done: Any) -> None:
        if self.quiet and done.answer:
            self._write(safe(done.answer))
        rate = self.hits / self.prompt if self.prompt else 0.0
        stop = "" if done.reason == "answer" else f"stopped ({done.reason}): "
        if done.message and done.reason != "answer":
            self._write(f"\n{stop}{safe(done.message)}")
        steps = f"{done.steps} step" + ("" if done.steps == 1 else "s")
        self._write(f"\n— {steps} · {self.prompt:,} prompt tokens, {rate:.1%} "
                    f"cached · {self.completion:,} completion tokens · ${done.price:.6f} · "
                    f"session {done.session_id}\n")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return EXIT_CODES["usage"]
    for info in store.list():
        when = dt.datetime.fromtimestamp(info.updated).strftime("%Y-%m-%d %H:%M")
        print(f"{info.id}  {when}  {info.status:<10} {info.messages:>5} msgs  "
              f"{safe(info.title)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from whalebone.agent.compaction import effective_history
    from whalebone.agent.store import SessionError

    store = _store(args)
    if store is None:
        return EXIT_CODES["usage"]
    try:
        info = store.info(store.resolve(args.session))
    except SessionError as e:
        return fail(str(e), EXIT_CODES["usage"])
    print(f"session {info.id} · {safe(info.title)} · {info.status} · agent {info.agent}")
    for _, msg in effective_history(store.messages(info.id)):
        role = msg.get("role")
        if role == "system":
            continue
        if msg.get("reasoning_content"):
            print(f"[thinking] {safe(_clip(msg['reasoning_content'], 500))}")
        if msg.get("content"):
            print(f"{role}: {safe(_clip(str(msg['content']), 2000))}")
        for tc in msg.get("tool_calls") or ():
            print(f"→ {tc['function']['name']}({safe(_clip(tc['function']['arguments'], 300))})")
    usage = store.usage(info.id)
    prompt = sum(u.prompt_tokens for u in usage)
    hits = sum(u.cache_hit_tokens for u in usage)
    rate = hits / prompt if prompt else 0.0
    print(f"— {len(usage)} model calls · {prompt:,} prompt tokens, {rate:.1%} cached · "
          f"{sum(u.completion_tokens for u in usage):,} completion tokens · "
          f"${sum(u.price for u in usage):.6f}")
    return 0


def _store(args: argparse.Namespace) -> Any:
    from whalebone.agent.settings import load_settings
    from whalebone.agent.store import SessionStore

    try:
        settings = load_settings(args.config)
        return SessionStore(args.store or settings.store_path)
    except WhaleboneError as e:
        fail(str(e), EXIT_CODES["usage"])
        return None
