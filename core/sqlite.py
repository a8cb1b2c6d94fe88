"""SQLite for every room: one way to open a database and one way to write to it.

:func:`connect` opens a database file with the PRAGMAs every whalebone database uses:

- ``journal_mode=WAL`` — readers never block the one writer, and a crash loses nothing
  committed;
- ``synchronous=NORMAL`` — with WAL, durable across a process crash (a power cut may lose the
  last transactions, never corrupt the file);
- ``busy_timeout`` — a writer waits for another process's write instead of failing at once;
- ``foreign_keys=ON`` — the schemas' references are enforced.

The file is created 0600 in a 0700 folder (see :mod:`whalebone.core.home`); SQLite gives its
``-wal`` and ``-shm`` files the database file's mode. The connection is in autocommit mode
(``isolation_level=None``): a write that must be atomic goes through :func:`transaction`, a
``BEGIN IMMEDIATE`` that takes the write lock up front, so two processes writing at once
serialise instead of one failing halfway through.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whalebone.core.home import private_file

MEMORY = ":memory:"


def connect(path: str | os.PathLike[str], *, timeout: float = 30.0,
            isolation_level: str | None = None) -> sqlite3.Connection:
    """A connection to the database at ``path`` (``":memory:"`` for one in this process
    only), usable from any thread (callers serialise their own use of it). ``timeout`` is how
    long a write waits for another process's (seconds). ``isolation_level`` is left to
    callers that drive transactions through another library (sqlite-utils); the default,
    autocommit, is what :func:`transaction` expects."""
    if str(path) != MEMORY:
        private_file(Path(path))
    db = sqlite3.connect(path, timeout=timeout, isolation_level=isolation_level,
                         check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE … COMMIT``, rolled back on any exception (a cancellation
    included), on a connection from :func:`connect`."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failure that got us here (a full disk, say) may have ended it already
        raise
    db.execute("COMMIT")


def unique_prefix(db: sqlite3.Connection, table: str, ref: str,
                  error: type[Exception], what: str) -> str:
    """The ``id`` in ``table`` equal to ``ref``, else the only one starting with it (what a
    person types, as git takes short hashes); ``error`` naming the candidates when there are
    none or several. ``table`` is the caller's own name, never input."""
    exact = db.execute(f"SELECT id FROM {table} WHERE id = ?", (ref,)).fetchone()
    if exact is not None:
        return str(exact[0])
    rows = [str(r[0]) for r in db.execute(
        f"SELECT id FROM {table} WHERE length(?) > 0 AND substr(id, 1, length(?)) = ? "
        "ORDER BY id LIMIT 6", (ref, ref, ref))]
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise error(f"no {what} {ref!r}")
    shown = ", ".join(rows[:5]) + (", …" if len(rows) > 5 else "")
    raise error(f"{what} id {ref!r} is ambiguous: it starts {shown}; type more of it")
