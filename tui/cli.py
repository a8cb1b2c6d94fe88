"""``whalebone chat``: open the terminal app.

The engine comes from ``--engine SPEC`` (default ``bundled``); give it more than once to offer
the others in the command palette. ``scripted:FILE.jsonl`` replays completions from a file (see
:mod:`whalebone.tui.engines`), which is how the app is demonstrated and smoke-tested without a
model. Textual is imported only when the command runs, so ``whalebone --help`` stays light.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from whalebone.engine.factory import SPEC_HELP

if TYPE_CHECKING:  # textual is imported only when the command runs
    from whalebone.tui.app import ChatApp

THINKING = ("chat", "thinking", "max")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat", help="the terminal app: live agent sessions",
        description="Open the terminal app: sessions, a streaming transcript, approvals, and a "
                    "status bar of context, cache hits and spend. Settings come from the same "
                    "config file as 'whalebone run'; flags override them.")
    p.add_argument("--config", metavar="FILE", help="settings TOML (default: "
                   "$WHALEBONE_HOME/config.toml or ~/.whalebone/config.toml)")
    p.add_argument("--engine", action="append", metavar="SPEC",
                   help=f"{SPEC_HELP} (default: the config's, else bundled); repeat to "
                        "offer several in the palette")
    p.add_argument("--sessions", "--store", metavar="DB", type=Path,
                   help="session database (default: the config's store, else "
                        "$WHALEBONE_HOME/sessions.db)")
    p.add_argument("--session", metavar="ID", help="open this session")
    p.add_argument("--workspace", metavar="DIR", type=Path,
                   help="where the file and shell tools work (default: the current directory)")
    p.add_argument("--allow", action="append", default=[], metavar="GLOB",
                   help="shell commands that run without asking (e.g. 'ls *'), added to the "
                        "config's; chained commands are always asked about")
    p.add_argument("--thinking", choices=THINKING, help="thinking mode")
    p.add_argument("--theme", choices=("dark", "light"), default="dark")
    p.add_argument("--budget", metavar="LEDGER", type=Path,
                   help="the budget ledger (default: the config's, else "
                        "$WHALEBONE_HOME/budget.db): every model call is reserved in it first, "
                        "its scopes show in the status bar, and extension requests that wait "
                        "for a person open as modals")
    p.add_argument("--on-cap", choices=("auditor", "human", "deny"), default=None,
                   help="at a cap: the auditor decides while you may decide first (default), "
                        "only a person decides, or deny at once")
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                   help="a budget scope to show (default: this chat's capped scopes)")
    p.add_argument("--memory", metavar="SCOPE",
                   help="give new sessions the memory tool over this scope")
    p.add_argument("--mcp", action="append", metavar="FILE", help="MCP servers from this "
                   "mcpServers file, beside those of the config, mcp.json and a trusted "
                   "project .mcp.json (whalebone mcp list)")
    p.add_argument("--approvals", metavar="FILE", type=Path,
                   help="where approval decisions are logged (default: approvals.jsonl "
                        "beside the session database)")
    p.set_defaults(handler=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from whalebone.core.errors import WhaleboneError

    try:
        app = build_app(args)
    except (WhaleboneError, ValueError) as e:  # ValueError: pydantic's, for bad settings
        print(f"whalebone chat: {e}", file=sys.stderr)
        return 2
    setup = app.runner.mcp_setup
    if not setup.servers:
        app.run()
    else:
        import anyio

        from whalebone.agent.build import mcp_servers

        async def main() -> None:  # the servers run as long as the app
            async with mcp_servers(setup, app.runner.attach_mcp, lambda line: print(
                    f"whalebone chat: {line}", file=sys.stderr)):
                await app.run_async()

        try:
            anyio.run(main)
        except WhaleboneError as e:  # a required MCP server that cannot start
            print(f"whalebone chat: {e}", file=sys.stderr)
            return 2
    if app.runner.session_id is not None:  # how to come back to it
        print(f"Resume this session with: whalebone chat --session {app.runner.session_id}")
    return 0


def build_app(args: argparse.Namespace) -> ChatApp:
    """The app, its runner holding the MCP servers to run beside it (``runner.mcp_setup``)."""
    from whalebone.agent.build import Overrides, resolve
    from whalebone.agent.settings import load_settings, open_budget
    from whalebone.tui.app import ChatApp
    from whalebone.tui.approvals import ApprovalLog
    from whalebone.tui.engines import open_chat_engine
    from whalebone.tui.permissions import Permissions
    from whalebone.tui.runner import ChatRunner

    settings = load_settings(args.config)
    # The runner keeps the engine (to switch it) and the tools (its shell asks a person).
    overrides = Overrides(
        store=args.sessions, workspace=args.workspace, tools="none", allow=args.allow,
        agent={"thinking": args.thinking} if args.thinking else {}, memory=args.memory,
        budget=None, session_id=args.session, mcp=args.mcp or ())  # budget: opened below
    parts = resolve(settings, overrides)  # an unknown session: a clear error now
    args.session = overrides.session_id  # the full id, when a prefix was typed
    for note in parts.notes:
        print(f"whalebone chat: {note}", file=sys.stderr)
    store = parts.store
    options = parts.engine_options
    runner = ChatRunner(
        store,
        engine_specs=args.engine or [parts.engine_spec],
        config=parts.config,
        workspace=parts.workspace,
        shell_policy=parts.shell_policy,
        approvals=ApprovalLog(args.approvals or store.path.with_name("approvals.jsonl")),
        permissions=Permissions(store.path.with_name("permissions.json")),
        jobs_db=settings.home_path / "jobs.db",  # the daemon's default queue
        scopes=args.scope,
        open_engine=lambda spec: open_chat_engine(spec, options),
    )
    table = settings.budget.model_dump(exclude_defaults=True)
    if args.budget is not None:
        table["ledger"] = str(args.budget)
    if args.on_cap is not None:
        table["on_cap"] = args.on_cap
    # The same guard as every front end's, with a person watching who can decide at a cap.
    runner.guard = open_budget(
        settings.model_copy(update={"budget": type(settings.budget).model_validate(table)}),
        runner.engine, person=True)
    runner.ledger = runner.guard.ledger
    if parts.memory_scope:
        runner.attach_memory(parts.memory_scope)
    runner.mcp_setup = parts.mcp  # started around the app by run_chat
    return ChatApp(runner, session_id=args.session, theme=args.theme,
                   history_file=store.path.with_name("chat_history.jsonl"))
