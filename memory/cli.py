"""``whalebone memory …`` commands (filled in by the memory room)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("memory", help="inspect scoped memory")
