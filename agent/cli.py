"""The ``whalebone`` command line.

Each room that has commands contributes a ``register(subparsers)`` function in its own module;
this module only assembles them, so a room's commands live beside the code they drive. A room's
module is imported only to register its parser: heavy imports (torch, textual) belong inside the
handlers, so `whalebone --help` stays fast.

Every command answers an error in one line on stderr. Handlers map the errors they expect to
their documented exit codes; what escapes them still gets one line here, never a traceback:
a :class:`WhaleboneError` exits 2 (bad input), anything else 1 (``WHALEBONE_DEBUG=1`` shows the
traceback), Ctrl-C 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from whalebone.core.errors import WhaleboneError

# In the order `whalebone --help` lists them.
COMMAND_MODULES = [
    "whalebone.agent.commands",  # run, sessions
    "whalebone.tui.cli",  # chat
    "whalebone.engine.serve.cli",  # serve, engine checks
    "whalebone.memory.cli",  # memory
    "whalebone.agent.mcp_command",  # mcp
    "whalebone.budget.cli",  # budget
    "whalebone.agent.daemon.cli",  # daemon, submit, jobs
    "whalebone.dsml.cli",  # render, parse
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whalebone", description="An agent runtime for DeepSeek V4."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not (name + ".").startswith(e.name + "."):
                raise  # a real missing dependency inside the module: say so
            continue  # a room whose commands are not built yet
        module.register(sub)
    return parser


def _one_line_warnings() -> None:
    """whalebone's own warnings (a damaged cache, a full disk) as one line each, not Python's
    two-line "file:line: Category: message" form with the source line under it."""
    plain = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], filename: str, lineno: int,
            line: str | None = None) -> str:
        if category.__module__.startswith("whalebone."):
            return f"whalebone: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = fmt  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    _one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print(f"whalebone {args.command}: interrupted", file=sys.stderr)
        return 130
    except WhaleboneError as e:
        print(f"whalebone {args.command}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # every command: a full or read-only disk is one line, not a trace
        from whalebone.agent.commands import EXIT_CODES
        from whalebone.core.errors import storage_failure

        problem = storage_failure(e)
        if problem is not None:
            print(f"whalebone: storage: {problem}; nothing saved before was lost: make room (or "
                  "make it writable) and run the command again", file=sys.stderr)
            return EXIT_CODES["storage"]
        if os.environ.get("WHALEBONE_DEBUG"):
            raise
        print(f"whalebone {args.command}: internal error: {type(e).__name__}: {e} "
              "(WHALEBONE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
