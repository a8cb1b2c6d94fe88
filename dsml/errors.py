"""The codec's error types. The root, ``WhaleboneError``, lives in :mod:`whalebone.core.errors`
(whose docstring draws the whole hierarchy); it is re-exported here so that older imports
(``from whalebone.dsml.errors import WhaleboneError``) keep working.
"""

from __future__ import annotations

from whalebone.core.errors import WhaleboneError

__all__ = ["EncodeError", "ParseError", "PrefixBreakError", "WhaleboneError"]


class EncodeError(WhaleboneError, ValueError):
    """A conversation the V4 format cannot render (the reference encoder would reject it).

    ``index`` is the position of the offending message in the list given, or None when the
    problem is an argument rather than a message.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ParseError(WhaleboneError, ValueError):
    """A completion the strict parser rejects. ``offset`` is the character offset of the fault."""

    def __init__(self, message: str, *, kind: str, offset: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.offset = offset


class PrefixBreakError(WhaleboneError):
    """An append would rewrite prompt bytes already rendered (only raised in strict transcripts)."""

    def __init__(self, message: str, *, offset: int, cause: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.cause = cause
