"""The root of every error whalebone raises on purpose, and the map of its hierarchy.

It lives in the bottom room so that every room can raise and catch it without importing the
codec (or anything else above it). Each room defines its own errors beside the code that raises
them and roots them here; ``whalebone`` re-exports the names programs catch most::

    WhaleboneError
    ├── EncodeError, ParseError, PrefixBreakError        dsml/errors.py  (also ValueError)
    ├── TokenizerUnavailable                             dsml/tokenizer.py (also ImportError)
    ├── EngineError                                      engine/base.py
    │   ├── EngineUnavailable
    │   ├── EngineRequestError ── EngineAuthError, EngineSpecError
    │   └── PrefixCacheError, VocabError, SamplingError, ScriptExhausted
    ├── ModelConfigError, CheckpointError, StateError,   engine/…        (also ValueError)
    │   ModelInputError, FidelityError
    ├── UnknownPrice                                     engine/prices.py (also KeyError)
    ├── ApiError ── QueueFull                            engine/serve/http.py
    ├── ToolError ── PathError ── PathRefused;           tools/
    │   CalculatorError; McpUnavailable, McpConfigError
    ├── BudgetStop (a run stops: no extension granted;   budget/
    │   BudgetStopped before), TicketError,
    │   ReservationRefused (a reservation over a limit, the guard's), NoPendingRequest
    ├── AgentError ── CompactionError ── NothingToCompact, CompactionFailed
    ├── SessionError ── SessionBusy                      agent/store.py
    ├── SettingsError                                    agent/settings.py
    ├── DaemonConfigError, JobError, DaemonBusy          agent/daemon/
    └── ChatEngineError                                  tui/engines.py

A front end turns any of them into one line and a documented exit code; anything that is not a
WhaleboneError is a bug, not a refusal.
"""

from __future__ import annotations


class WhaleboneError(Exception):
    """Base class of every error whalebone raises on purpose."""


# Storage faults: the disk's fault, not a bug (a full or read-only disk, an I/O error).

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
