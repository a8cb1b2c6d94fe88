"""``whalebone memory …``: what agents remembered, and what they did to it, for a person.

    whalebone memory scopes                         the scopes under $WHALEBONE_HOME/memory
    whalebone memory view SCOPE [PATH] [--range A B] a scope's files, or one file's text
    whalebone memory search SCOPE QUERY [--phrase]  ranked matches with file and line
    whalebone memory put SCOPE PATH [TEXT|-]        create or replace a file (- or no TEXT:
                                                    read stdin); creates the scope
    whalebone memory edit SCOPE PATH                edit a file in $VISUAL/$EDITOR (new if absent)
    whalebone memory rm SCOPE PATH [-r]             delete a file (-r: a directory)
    whalebone memory log [--scope S] [--who W] [--limit N]   the audit log, oldest first
    whalebone memory reindex SCOPE                  rebuild the search index from the files

A scope is named ``KIND:NAME`` (``user:alice``, ``project:whalebone``, ``agent:triage``); PATH
is relative to the scope (``notes.md``) or under ``/memories`` as agents write it. Reads and
writes through the CLI are audited too (as ``cli:<user>``). Memory may hold anything, including
terminal escape sequences: control characters are shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from whalebone.core.errors import WhaleboneError

if TYPE_CHECKING:
    from whalebone.memory.home import MemoryHome
    from whalebone.memory.scope import MemoryScope, Outcome

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


def _scope(args: argparse.Namespace, command: str, *, read_only: bool) -> MemoryScope:
    """The scope named on the command line, with a hint for a name that is not KIND:NAME; a
    refusal is audited like any other."""
    home = _home(args)
    try:
        return home.scope(args.scope, read_only=read_only)
    except WhaleboneError as e:
        home.audit.append(who=_who(), scope=args.scope[:200], command=command,
                          result="refused", detail="no such scope or a bad scope name")
        if ":" not in args.scope:
            raise WhaleboneError(f"{e}; scopes are named KIND:NAME, e.g. project:{args.scope} "
                                 f"(see: whalebone memory scopes)") from None
        raise


def _audited(args: argparse.Namespace, scope: MemoryScope, command: str, path: str,
             do: Callable[[], Outcome]) -> Outcome:
    """Run one operation on ``scope`` and append it to the audit log, refusals included."""
    from whalebone.tools.confine import PathRefused

    home = _home(args)
    try:
        outcome = do()
    except WhaleboneError as e:
        home.audit.append(who=_who(), scope=scope.name, command=command, path=path[:1000],
                          result="refused" if isinstance(e, PathRefused) else "error",
                          detail=str(e))
        raise
    home.audit.append(who=_who(), scope=scope.name, command=command, path=outcome.path,
                      bytes=outcome.bytes)
    return outcome


def _on_scope(args: argparse.Namespace, command: str, do: Callable[[MemoryScope], Outcome],
              *, read_only: bool) -> int:
    """Open the named scope, run ``do`` on it audited, close it, print the outcome."""
    scope = _scope(args, command, read_only=read_only)
    try:
        outcome = _audited(args, scope, command, args.path, lambda: do(scope))
    finally:
        scope.close()
    print(printable(outcome.text))
    return 0


def _view(args: argparse.Namespace) -> int:
    """A person's view: a listing with sizes and dates, or a file's text as it is."""
    return _on_scope(args, "view", lambda scope: _shown(scope, args), read_only=True)


def _shown(scope: MemoryScope, args: argparse.Namespace) -> Outcome:
    from whalebone.memory.scope import Outcome
    from whalebone.memory.view import human_size

    parts = scope.resolve(args.path)
    if scope.root.is_dir(parts):
        if args.range:
            raise WhaleboneError("--range applies to files, not directories")
        files = [(p, st) for p, st in scope.root.walk(parts)
                 if not any(name.startswith(".") for name in p)]
        lines = [f"{scope.name}{' ' + scope.shown(parts) if parts else ''}: "
                 f"{len(files)} file{'' if len(files) == 1 else 's'}, "
                 f"{sum(st.st_size for _, st in files):,} bytes"]
        for p, st in sorted(files):
            when = datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M")
            lines.append(f"  {human_size(st.st_size):>6}  {when}  {'/'.join(p[len(parts):])}")
        text = "\n".join(lines)
    else:
        text = scope.root.read_text(parts, max_bytes=scope.index.max_file_bytes)
        if args.range:
            start, end = args.range
            rows = text.splitlines()
            end = len(rows) if end == -1 else min(end, len(rows))
            if not 1 <= start <= max(end, 1):
                raise WhaleboneError(f"--range {start} {end}: the file has {len(rows)} lines")
            text = "\n".join(f"{n:6}  {rows[n - 1]}" for n in range(start, end + 1))
        text = text.removesuffix("\n")
    return Outcome(text, scope.shown(parts), len(text.encode()))


def _put(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text in (None, "-") else args.text
    return _on_scope(args, "put", lambda scope: scope.write(args.path, text), read_only=False)


def _edit(args: argparse.Namespace) -> int:
    """$VISUAL/$EDITOR on a private copy; written back only if it changed, and only if nobody
    changed the file meanwhile."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    scope = _scope(args, "edit", read_only=False)
    try:
        parts = scope.resolve(args.path)
        before = scope.root.stat(parts) if scope.root.exists(parts) else None
        old = scope.root.read_text(parts, max_bytes=scope.index.max_file_bytes) if before else ""
        with tempfile.TemporaryDirectory(prefix="whalebone-memory-") as tmp:
            draft = Path(tmp) / (parts[-1] if parts else "memory.md")
            draft.write_text(old, encoding="utf-8")  # the folder is 0700: private
            try:
                done = subprocess.run([*shlex.split(editor), str(draft)], check=False)
            except OSError as e:
                raise WhaleboneError(f"cannot start the editor {editor!r}: {e.strerror}") from None
            if done.returncode != 0:
                raise WhaleboneError(f"the editor exited with {done.returncode}; nothing written")
            new = draft.read_text(encoding="utf-8")
        if new == old:
            print(f"{scope.shown(parts)} unchanged")
            return 0
        outcome = _audited(args, scope, "edit", args.path, lambda: scope.write(
            args.path, new, unchanged_since=before, must_be_new=before is None))
    finally:
        scope.close()
    print(outcome.text)
    return 0


def _rm(args: argparse.Namespace) -> int:
    scope = _scope(args, "delete", read_only=False)
    try:
        parts = scope.resolve(args.path)
        if scope.root.is_dir(parts) and not args.recursive:
            raise WhaleboneError(f"{scope.shown(parts)} is a directory; use -r to delete it "
                                 "and everything in it")
        outcome = _audited(args, scope, "delete", args.path, lambda: scope.delete(args.path))
    finally:
        scope.close()
    print(outcome.text)
    return 0


def _search(args: argparse.Namespace) -> int:
    return _on_scope(args, "search", lambda scope: scope.search(
        args.query, path=args.path, phrase=args.phrase), read_only=True)


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

    view = msub.add_parser("view", help="a scope's files (size, date), or one file's text")
    view.add_argument("scope", help="KIND:NAME, e.g. project:whalebone")
    view.add_argument("path", nargs="?", default="/memories")
    view.add_argument("--range", nargs=2, type=int, metavar=("START", "END"),
                      help="numbered lines START..END of a file (END -1 = the last)")
    view.set_defaults(handler=_guard(_view))

    put = msub.add_parser("put", help="create or replace a file (the scope is created too)")
    put.add_argument("scope", help="KIND:NAME, e.g. project:whalebone")
    put.add_argument("path", help="e.g. notes.md or /memories/notes.md")
    put.add_argument("text", nargs="?", help="the file's text; - or nothing: read stdin")
    put.set_defaults(handler=_guard(_put))

    edit = msub.add_parser("edit", help="edit a file in $VISUAL or $EDITOR (new if absent)")
    edit.add_argument("scope", help="KIND:NAME, e.g. project:whalebone")
    edit.add_argument("path")
    edit.set_defaults(handler=_guard(_edit))

    rm = msub.add_parser("rm", help="delete a file (or, with -r, a directory)")
    rm.add_argument("scope", help="KIND:NAME, e.g. project:whalebone")
    rm.add_argument("path")
    rm.add_argument("-r", "--recursive", action="store_true", help="delete a directory")
    rm.set_defaults(handler=_guard(_rm))

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
