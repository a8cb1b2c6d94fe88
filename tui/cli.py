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
                   help="engine spec (default: the config's, else bundled); repeat to offer "
                        "several in the palette; scripted:FILE.jsonl[?delay=S] replays "
                        "completions from a file")
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
                   help="a budget ledger (default: the config's [budget]): every model call "
                        "is reserved in it first, its scopes show in the status bar, and "
                        "extension requests that wait for a person open as modals")
    p.add_argument("--on-cap", choices=("human", "deny"), default="human",
                   help="with --budget: at a cap, ask a person (default) or deny at once")
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                   help="a budget scope to show (default: this chat's capped scopes)")
    p.add_argument("--memory", metavar="SCOPE",
                   help="give new sessions the memory tool over this scope")
    p.add_argument("--approvals", metavar="FILE", type=Path,
                   help="where approval decisions are logged (default: approvals.jsonl "
                        "beside the session database)")
    p.set_defaults(handler=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from whalebone.dsml.errors import WhaleboneError

    try:
        app = build_app(args)
    except (WhaleboneError, ValueError) as e:  # ValueError: pydantic's, for bad settings
        print(f"whalebone chat: {e}", file=sys.stderr)
        return 2
    app.run()
    if app.runner.session_id is not None:  # how to come back to it
        print(f"Resume this session with: whalebone chat --session {app.runner.session_id}")
    return 0


def build_app(args: argparse.Namespace) -> ChatApp:
    from whalebone.agent import AgentConfig, SessionStore
    from whalebone.agent.settings import home, load_settings, open_budget
    from whalebone.tools.shell import ShellPolicy
    from whalebone.tui.app import ChatApp
    from whalebone.tui.approvals import ApprovalLog
    from whalebone.tui.engines import open_chat_engine
    from whalebone.tui.permissions import Permissions
    from whalebone.tui.runner import ChatRunner

    settings = load_settings(args.config)
    sessions = args.sessions or settings.store_path
    store = SessionStore(sessions)
    if args.session is not None:
        store.info(args.session)  # a clear error now, not an empty screen later
    fields = dict(settings.agent)
    if args.thinking:
        fields["thinking"] = args.thinking
    policy = ShellPolicy.model_validate(settings.shell)
    if args.allow:
        policy = policy.model_copy(update={"allow": [*policy.allow, *args.allow]})
    if args.budget is not None:
        from whalebone.budget.guard import BudgetGuard, BudgetPolicy

        guard = BudgetGuard(args.budget, policy=BudgetPolicy(on_cap=args.on_cap))
    else:
        guard = open_budget(settings)
    options = dict(settings.engine_options)
    runner = ChatRunner(
        store,
        engine_specs=args.engine or [settings.engine],
        config=AgentConfig.model_validate(fields),
        workspace=args.workspace or Path(settings.workspace),
        shell_policy=policy,
        approvals=ApprovalLog(args.approvals or Path(sessions).with_name("approvals.jsonl")),
        permissions=Permissions(Path(sessions).with_name("permissions.json")),
        jobs_db=home() / "jobs.db",  # the daemon's default queue, beside the sessions
        guard=guard,
        scopes=args.scope,
        open_engine=lambda spec: open_chat_engine(spec, options),
    )
    if args.memory:
        runner.attach_memory(args.memory)
    return ChatApp(runner, session_id=args.session, theme=args.theme,
                   history_file=Path(sessions).with_name("chat_history.jsonl"))
