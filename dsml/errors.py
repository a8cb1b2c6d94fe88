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


def storage_problem(exc: BaseException) -> str | None:
    """What is wrong with the storage under a failed write, in a few words, when it is the
    disk's fault (full, read-only, failing) rather than a bug; None otherwise. SQLite says
    "database or disk is full", "attempt to write a readonly database" or "disk I/O error"
    (its result code tells them apart); the OS says ENOSPC, EROFS, EDQUOT or EIO."""
    import errno
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        text = str(exc).lower()
        if code == sqlite3.SQLITE_FULL or "disk is full" in text:
            return "the disk is full"
        if code == sqlite3.SQLITE_READONLY or "readonly database" in text:
            return "the storage is read-only"
        if code == sqlite3.SQLITE_IOERR or "disk i/o error" in text:
            return "a disk I/O error (the disk may be full or failing)"
        if code == sqlite3.SQLITE_CANTOPEN or "unable to open database" in text:
            return "the database file cannot be opened (a read-only or missing folder?)"
        return None
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "the disk is full"
        if exc.errno == errno.EROFS:
            return "the storage is read-only"
        if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is not None:
            return "no permission to write there"
        if exc.errno == errno.EIO:
            return "a disk I/O error"
    return None


def storage_failure(exc: BaseException) -> str | None:
    """One line for an error that a full or read-only disk caused (wherever it surfaced:
    wrapped in another error, or in a task group's exception group), else None."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        problem = storage_problem(e)
        if problem is not None:
            where = getattr(e, "filename", None)
            return problem + (f" ({where})" if where else "")
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return None
