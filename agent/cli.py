"""The ``whalebone`` command line.

Each room that has commands contributes a ``register(subparsers)`` function; this module only
assembles them, so a room's commands live beside the code they drive.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Register]:
    # Imported lazily: `whalebone --help` must not pay for torch or textual.
    from whalebone.dsml.cli import register as codec
    from whalebone.memory.cli import register as memory

    return [codec, memory]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whalebone", description="An agent runtime for DeepSeek V4."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
