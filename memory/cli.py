"""``whalebone memory …``: what agents remembered, and what they did to it, for a person.

    whalebone memory scopes                         the scopes under $WHALEBONE_HOME/memory
    whalebone memory view SCOPE [PATH] [--range A B] a directory tree or a file's lines
    whalebone memory search SCOPE QUERY [--phrase]  ranked matches with file and line
    whalebone memory log [--scope S] [--who W] [--limit N]   the audit log, oldest first
    whalebone memory reindex SCOPE                  rebuild the search index from the files

Reads through the CLI are audited too (as ``cli:<user>``). Memory may hold anything, including
terminal escape sequences: control characters are shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from whalebone.core.errors import WhaleboneError

if TYPE_CHECKING:
    from whalebone.memory.home import MemoryHome

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text safe for a terminal: control characters (escape sequences, bidi overrides)
    shown as ``\\xNN``/``\\uNNNN`` instead of acted on."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _home(args: argparse.Namespace) -> MemoryHome:
    from whalebone.memory.home import MemoryHome

    return MemoryHome(Path(args.home) if args.home else None)


def _run_on_scope(args: argparse.Namespace, command: str, **fields: object) -> int:
    from whalebone.memory.tool import MemoryCall, call_path, run_command
    from whalebone.tools.confine import PathRefused

    home = _home(args)
    try:
        scope = home.scope(args.scope, read_only=True)
    except WhaleboneError:
        home.audit.append(who=_who(), scope=args.scope[:200], command=command,
                          result="refused", detail="no such scope or a bad scope name")
        raise
    call = MemoryCall(command=command, **fields)  # type: ignore[arg-type]
    try:
        outcome = run_command(scope, call)
    except WhaleboneError as e:
        home.audit.append(who=_who(), scope=scope.name, command=command, path=call_path(call),
                          result="refused" if isinstance(e, PathRefused) else "error",
                          detail=str(e))
        raise
    finally:
        scope.close()
    home.audit.append(who=_who(), scope=scope.name, command=command, path=outcome.path,
                      bytes=outcome.bytes)
    print(printable(outcome.text))
    return 0


def _view(args: argparse.Namespace) -> int:
    return _run_on_scope(args, "view", path=args.path, view_range=args.range)


def _search(args: argparse.Namespace) -> int:
    return _run_on_scope(args, "search", query=args.query, path=args.path, phrase=args.phrase)


def _scopes(args: argparse.Namespace) -> int:
    home = _home(args)
    names = home.scopes()
    if not names:
        print(f"no memory scopes in {home.memory_dir}", file=sys.stderr)
    for name in names:
        print(printable(name))
    return 0


def _reindex(args: argparse.Namespace) -> int:
    home = _home(args)
    scope = home.scope(args.scope, read_only=True)
    try:
        report = scope.index.sync(force=True)
        files, entries = scope.index.stats()
    finally:
        scope.close()
    print(f"{scope.name}: {files} files, {entries} entries indexed "
          f"(+{report.added} new, {report.changed} changed, -{report.removed} gone)")
    return 0


def _log(args: argparse.Namespace) -> int:
    home = _home(args)
    if not home.audit_path.exists():
        print(f"no memory audit log at {home.audit_path}", file=sys.stderr)
        return 0
    rows = home.audit.entries(scope=args.scope, who=args.who, limit=args.limit)
    for e in rows:
        when = e.at.strftime("%Y-%m-%d %H:%M:%S")
        detail = f"  {e.detail}" if e.detail else ""
        print(printable(f"{when}  {e.who}  {e.scope}  {e.command}  {e.path}  {e.bytes}B  "
                        f"{e.result}{detail}"))
    return 0


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except WhaleboneError as e:
            print(f"whalebone memory: {printable(str(e))}", file=sys.stderr)
            return 1

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    memory = sub.add_parser("memory", help="inspect scoped memory and its audit log")
    memory.add_argument("--home", help="whalebone home (default $WHALEBONE_HOME or ~/.whalebone)")
    msub = memory.add_subparsers(dest="memory_command", metavar="SUBCOMMAND")
    memory.set_defaults(handler=lambda _args: (memory.print_help(), 2)[1])

    scopes = msub.add_parser("scopes", help="list the memory scopes")
    scopes.set_defaults(handler=_guard(_scopes))

    view = msub.add_parser("view", help="a scope's files two levels deep, or one file's lines")
    view.add_argument("scope")
    view.add_argument("path", nargs="?", default="/memories")
    view.add_argument("--range", nargs=2, type=int, metavar=("START", "END"),
                      help="lines START..END of a file (END -1 = the last)")
    view.set_defaults(handler=_guard(_view))

    search = msub.add_parser("search", help="ranked search of a scope (file:line: text)")
    search.add_argument("scope")
    search.add_argument("query")
    search.add_argument("--path", default="/memories", help="search under this directory")
    search.add_argument("--phrase", action="store_true", help="the exact phrase")
    search.set_defaults(handler=_guard(_search))

    log = msub.add_parser("log", help="the audit log of memory operations")
    log.add_argument("--scope", help="only this scope")
    log.add_argument("--who", help="only this actor (e.g. agent:triage, cli:alice)")
    log.add_argument("--limit", type=int, default=50, help="the latest N entries (default 50)")
    log.set_defaults(handler=_guard(_log))

    reindex = msub.add_parser("reindex", help="bring a scope's search index in step now")
    reindex.add_argument("scope")
    reindex.set_defaults(handler=_guard(_reindex))
