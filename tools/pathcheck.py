"""The text half of path confinement: what a caller's path may say before it names a file.

:func:`split_path` turns a path from outside into components, or refuses it: NUL and other
control or invisible characters, backslashes, ``..``, absolute paths (other than the root's
alias), a leading ``~``, percent-escapes (``%2e%2e%2f`` must not become ``../`` in anyone's
hands), and Unicode look-alikes of ``.``, ``/`` or ``\\``: anything NFKC folds into one
(fullwidth ``．／＼``, one-dot leader U+2024, small full stop U+FE52…) and the slash-like signs
NFKC leaves alone (division slash U+2215, fraction slash U+2044…). Names are capped at 255
bytes, paths at 4,096 characters and 64 levels. The other half, walking the components
without following links, is :class:`whalebone.tools.confine.Root`.
"""

from __future__ import annotations

import os
import re
import unicodedata

from whalebone.tools.registry import ToolError

Parts = tuple[str, ...]

MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
MAX_DEPTH = 64

_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
# Signs that read as a slash, backslash or dot but that NFKC leaves as they are; a name holding
# one is a trick on the person reading a listing, never a name anyone needs.
_LOOKALIKES = frozenset(
    "\u2215\u2044\u29f8\u29f9\u29f5\u2216\u2571\u2572"  # slashes and backslashes
    "\u3002\uff61\u2027"  # full stops and dots
)
_SEPARATORS = frozenset("/\\.%\x00")


class PathError(ToolError):
    """A confined file operation failed: not found, already exists, not a directory, too big."""


class PathRefused(PathError):
    """The path would leave the root, or names something a confined operation may not touch."""


def display(parts: Parts) -> str:
    """The components as one relative path ("" for the root itself)."""
    return "/".join(parts)


def split_path(user_path: str | Parts, alias: str | None = None) -> Parts:
    """The components of ``user_path``, checked as text only, or :class:`PathRefused`.

    ``""``, ``"."`` and ``alias`` (an absolute prefix standing for the root, e.g.
    ``/memories``) give ``()``; every other absolute path is refused. Already-split parts
    pass through unchanged after the same per-name checks.
    """
    if isinstance(user_path, tuple):
        for name in user_path:
            _check_name(name, display(user_path))
        return user_path
    if not isinstance(user_path, str):
        raise PathRefused(f"a path must be text, not {type(user_path).__name__}")
    shown = _shown(user_path)
    if len(user_path) > MAX_PATH_CHARS:
        raise PathRefused(f"path {shown} is longer than {MAX_PATH_CHARS} characters")
    text = user_path
    if text.startswith("/"):
        if alias and (text == alias or text.startswith(alias + "/")):
            text = text[len(alias):]
        else:
            where = f" under {alias}" if alias else " relative to the root"
            raise PathRefused(f"path {shown} is absolute; give a path{where}")
    if text.startswith("~"):
        raise PathRefused(f"path {shown}: '~' is not expanded; give a path inside the root")
    if "\\" in text:
        raise PathRefused(f"path {shown} holds a backslash")
    if _PERCENT.search(text):
        raise PathRefused(f"path {shown} holds a percent-escape; write the character itself")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if len(parts) > MAX_DEPTH:
        raise PathRefused(f"path {shown} is deeper than {MAX_DEPTH} directories")
    for name in parts:
        _check_name(name, shown)
    return parts


def _check_name(name: str, shown: str) -> None:
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise PathRefused(f"path {shown} leaves the root or names no file ({name!r})")
    if "/" in name or "\\" in name:
        raise PathRefused(f"path {shown}: a component holds a separator")
    for ch in name:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise PathRefused(f"path {shown} holds the control or invisible character "
                              f"U+{ord(ch):04X}")
        if ch in _LOOKALIKES:
            raise PathRefused(f"path {shown} holds U+{ord(ch):04X}, which looks like "
                              "a separator or a dot")
        if ord(ch) > 127 and _SEPARATORS & set(unicodedata.normalize("NFKC", ch)):
            raise PathRefused(f"path {shown} holds U+{ord(ch):04X}, a look-alike of "
                              f"{unicodedata.normalize('NFKC', ch)!r}")
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        raise PathRefused(f"path {shown} cannot be encoded as a file name") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise PathRefused(f"path {shown}: a name is longer than {MAX_NAME_BYTES} bytes")


def _shown(user_path: str) -> str:
    return repr(user_path if len(user_path) <= 120 else user_path[:117] + "...")
