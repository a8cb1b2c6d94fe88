"""The error types of whalebone. Every error whalebone raises on purpose is a WhaleboneError.

They live in the codec, the bottom room, so that every other room can import them
without cycles; ``whalebone`` re-exports them.
"""

from __future__ import annotations


class WhaleboneError(Exception):
    """Base class of every error whalebone raises on purpose."""


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
