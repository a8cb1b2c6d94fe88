"""Sessions that survive crashes: one SQLite database (WAL) of sessions, messages, a tool-call
journal and usage records.

Every write is its own committed transaction, made before the loop takes its next step, so a
``kill -9`` at any point loses nothing that was written. One process at a time may write a
session: :meth:`SessionStore.open` takes an exclusive ``flock`` on a lock file beside the
database, which the kernel releases when the holder dies, so a crashed run never leaves a
session locked and two live runs never interleave one session's log (a complaint users of other
harnesses have). The journal records each tool call as ``started`` before it runs and
``finished`` after, so a resumed run knows which calls were cut short. A new session's task is
committed with the session row, in one transaction: a run killed before its first message was
written still leaves a session that ``resume`` completes (:meth:`Session.open_task`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import tempfile
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from whalebone.core.errors import WhaleboneError, storage_problem
from whalebone.core.home import private_dir
from whalebone.core.sqlite import connect, transaction, unique_prefix
from whalebone.core.usage import TokenCounts
from whalebone.tools.redact import redact, redact_data

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT 'default',
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'idle',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    task TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (session, seq)
);
CREATE TABLE IF NOT EXISTS tool_calls (
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    call_id TEXT NOT NULL,
    name TEXT NOT NULL,
    arguments TEXT NOT NULL,
    idempotent INTEGER NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    is_error INTEGER,
    started REAL NOT NULL,
    finished REAL,
    process TEXT,
    PRIMARY KEY (session, call_id)
);
CREATE TABLE IF NOT EXISTS usage (
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    engine TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cache_hit_tokens INTEGER NOT NULL,
    cache_miss_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    price REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (session, seq)
);
"""

CallStatus = Literal["started", "finished", "interrupted"]


class SessionError(WhaleboneError):
    """No such session, or it cannot be opened."""


class SessionBusy(SessionError):
    """Another live process is writing this session."""


class SessionInfo(BaseModel):
    id: str
    title: str
    agent: str
    status: str
    created: float
    updated: float
    messages: int = 0


class JournalEntry(BaseModel):
    call_id: str
    name: str
    arguments: dict[str, Any]
    idempotent: bool
    status: CallStatus
    result: str | None = None
    is_error: bool | None = None
    process: dict[str, int] | None = None  # {"pgid", "started"} of a process group it started


class UsageRecord(TokenCounts):
    """One model call of a session, as the store keeps it."""

    kind: str = "turn"  # turn, retry, compaction, auditor, heartbeat, …
    engine: str = ""
    price: float = 0.0


class SessionStore:
    """All sessions of one database file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            # An in-memory database lives in this process only, and so do its locks.
            self._lock_dir = Path(tempfile.mkdtemp(prefix="whalebone-locks-"))
        else:
            private_dir(self.path.parent)
            self._lock_dir = self.path.with_name(self.path.name + ".locks")
        self._unwritable: str | None = None  # why writes are refused (the disk's fault)
        try:
            self.db = connect(self.path)
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            if storage_problem(e) is None or not self.path.is_file():
                raise
            # A full or read-only disk: the sessions can still be read; a write fails with
            # what the disk said, which front ends report as a storage problem.
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True,
                                      check_same_thread=False)
            self._unwritable = str(e)
            return
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(tool_calls)")}
        if "process" not in columns:  # a database from before process groups were journaled
            self.db.execute("ALTER TABLE tool_calls ADD COLUMN process TEXT")
        if "task" not in {r[1] for r in self.db.execute("PRAGMA table_info(sessions)")}:
            self.db.execute("ALTER TABLE sessions ADD COLUMN task TEXT")  # an older database

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        if self._unwritable is not None:  # say what the disk said, not "readonly database"
            raise sqlite3.OperationalError(self._unwritable)
        return transaction(self.db)

    def create(self, *, title: str = "", agent: str = "default",
               config: dict[str, Any] | None = None, task: str | None = None) -> str:
        """A new session; ``task``, its first request, is committed with it (a run killed
        before it wrote any message must leave the task to be resumed, not an empty session
        that has "nothing to do")."""
        sid = uuid.uuid4().hex[:12]
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO sessions (id, title, agent, config, created, updated, task) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (sid, redact(title), agent, json.dumps(config or {}), now, now,
                        None if task is None else redact(task)))
        return sid

    def resolve(self, ref: str) -> str:
        """The full id of the one session whose id is ``ref`` or starts with it (a unique
        prefix, as git takes short hashes): what a person types on the command line."""
        return unique_prefix(self.db, "sessions", ref, SessionError, "session")

    def info(self, sid: str) -> SessionInfo:
        row = self.db.execute(
            "SELECT id, title, agent, status, created, updated, "
            "(SELECT COUNT(*) FROM messages m WHERE m.session = s.id) "
            "FROM sessions s WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise SessionError(f"no session {sid!r}")
        return SessionInfo(id=row[0], title=row[1], agent=row[2], status=row[3],
                           created=row[4], updated=row[5], messages=row[6])

    def config(self, sid: str) -> dict[str, Any]:
        self.info(sid)
        row = self.db.execute("SELECT config FROM sessions WHERE id = ?", (sid,)).fetchone()
        return json.loads(row[0])

    def list(self) -> list[SessionInfo]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM sessions ORDER BY updated DESC")]
        return [self.info(i) for i in ids]

    def rename(self, sid: str, title: str) -> None:
        self.info(sid)
        with self._tx() as db:
            db.execute("UPDATE sessions SET title = ? WHERE id = ?", (redact(title), sid))

    def delete(self, sid: str) -> None:
        with self.open(sid):  # never delete a session a live run is writing
            with self._tx() as db:
                db.execute("DELETE FROM sessions WHERE id = ?", (sid,))

    def messages(self, sid: str) -> list[dict[str, Any]]:
        return [json.loads(m) for (m,) in self.db.execute(
            "SELECT message FROM messages WHERE session = ? ORDER BY seq", (sid,))]

    def journal(self, sid: str) -> list[JournalEntry]:
        rows = self.db.execute(
            "SELECT call_id, name, arguments, idempotent, status, result, is_error, process "
            "FROM tool_calls WHERE session = ? ORDER BY started", (sid,))
        return [JournalEntry(call_id=r[0], name=r[1], arguments=json.loads(r[2]),
                             idempotent=bool(r[3]), status=r[4], result=r[5],
                             is_error=None if r[6] is None else bool(r[6]),
                             process=json.loads(r[7]) if r[7] else None) for r in rows]

    def usage(self, sid: str) -> list[UsageRecord]:
        rows = self.db.execute(
            "SELECT kind, engine, prompt_tokens, cache_hit_tokens, cache_miss_tokens, "
            "completion_tokens, price FROM usage WHERE session = ? ORDER BY seq", (sid,))
        return [UsageRecord(kind=r[0], engine=r[1], prompt_tokens=r[2], cache_hit_tokens=r[3],
                            cache_miss_tokens=r[4], completion_tokens=r[5], price=r[6])
                for r in rows]

    def open(self, sid: str) -> Session:
        """Take the session for writing. Raises :class:`SessionBusy` if a live process has it."""
        self.info(sid)
        lock_dir = self._lock_dir
        private_dir(lock_dir)
        fd = os.open(lock_dir / f"{sid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SessionBusy(f"session {sid} is being written by another process") from None
        return Session(self, sid, fd)

    def close(self) -> None:
        self.db.close()


class Session:
    """A session held for writing. Use as a context manager; every method commits."""

    def __init__(self, store: SessionStore, sid: str, lock_fd: int) -> None:
        self.store = store
        self.id = sid
        self._lock_fd: int | None = lock_fd
        row = store.db.execute("SELECT COALESCE(MAX(seq), -1) FROM messages WHERE session = ?",
                               (sid,)).fetchone()
        self._next_seq = row[0] + 1

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended message will get."""
        return self._next_seq

    def _check(self) -> None:
        if self._lock_fd is None:
            raise SessionError(f"session {self.id} is closed")

    def messages(self) -> list[dict[str, Any]]:
        return self.store.messages(self.id)

    def open_task(self) -> str | None:
        """The task the session was created with, while no user message holds it yet (the
        run that created it was killed before writing it)."""
        row = self.store.db.execute(
            "SELECT task FROM sessions WHERE id = ? AND NOT EXISTS (SELECT 1 FROM messages m "
            "WHERE m.session = sessions.id AND json_extract(m.message, '$.role') = 'user')",
            (self.id,)).fetchone()
        return None if row is None else row[0]

    def append(self, *messages: dict[str, Any]) -> None:
        """Commit messages, in order, in one transaction."""
        self._check()
        now = time.time()
        with self.store._tx() as db:
            for msg in messages:
                db.execute("INSERT INTO messages (session, seq, message, created) "
                           "VALUES (?, ?, ?, ?)",
                           (self.id, self._next_seq,
                            json.dumps(redact_data(msg), ensure_ascii=False), now))
                self._next_seq += 1
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, self.id))

    def set_config(self, config: dict[str, Any]) -> None:
        """Replace the session's stored configuration (what a resumed run starts from)."""
        self._check()
        with self.store._tx() as db:
            db.execute("UPDATE sessions SET config = ? WHERE id = ?",
                       (json.dumps(config, ensure_ascii=False), self.id))

    def set_status(self, status: str) -> None:
        self._check()
        with self.store._tx() as db:
            db.execute("UPDATE sessions SET status = ?, updated = ? WHERE id = ?",
                       (status, time.time(), self.id))

    def call_started(self, call_id: str, name: str, arguments: dict[str, Any],
                     idempotent: bool) -> bool:
        """Journal a call before it runs. False if this call id was journaled before (it must
        not run again)."""
        self._check()
        with self.store._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO tool_calls (session, call_id, name, arguments, idempotent,"
                " status, started) VALUES (?, ?, ?, ?, ?, 'started', ?)",
                (self.id, call_id, name, json.dumps(redact_data(arguments), ensure_ascii=False),
                 int(idempotent), time.time()))
            return cur.rowcount == 1

    def call_finished(self, call_id: str, result: str, is_error: bool,
                      status: CallStatus = "finished") -> None:
        self._check()
        with self.store._tx() as db:
            db.execute("UPDATE tool_calls SET status = ?, result = ?, is_error = ?, "
                       "finished = ? WHERE session = ? AND call_id = ?",
                       (status, redact(result), int(is_error), time.time(), self.id, call_id))

    def call_process(self, call_id: str, pgid: int, started: int, sandboxed: bool) -> None:
        """Journal the process group a running call started (a resumed run ends it)."""
        self._check()
        process = {"pgid": pgid, "started": started, "sandboxed": int(sandboxed)}
        with self.store._tx() as db:
            db.execute("UPDATE tool_calls SET process = ? WHERE session = ? AND call_id = ?",
                       (json.dumps(process), self.id, call_id))

    def restart_call(self, call_id: str) -> None:
        """Mark an interrupted idempotent call as started again (it is about to re-run)."""
        self._check()
        with self.store._tx() as db:
            db.execute("UPDATE tool_calls SET status = 'started', started = ? "
                       "WHERE session = ? AND call_id = ?", (time.time(), self.id, call_id))

    def unfinished_calls(self) -> list[JournalEntry]:
        return [e for e in self.store.journal(self.id) if e.status == "started"]

    def record_usage(self, usage: UsageRecord) -> None:
        self._check()
        with self.store._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM usage WHERE session = ?",
                             (self.id,)).fetchone()[0]
            db.execute("INSERT INTO usage (session, seq, kind, engine, prompt_tokens, "
                       "cache_hit_tokens, cache_miss_tokens, completion_tokens, price, created)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (self.id, seq, usage.kind, usage.engine, usage.prompt_tokens,
                        usage.cache_hit_tokens, usage.cache_miss_tokens,
                        usage.completion_tokens, usage.price, time.time()))
