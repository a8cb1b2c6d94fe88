"""The budget ledger: reserve the worst case before a model call, settle the actual after.

A call may go ahead only if, for every scope it is charged to (this run, this session, this
agent today, everyone today…), what was spent plus what is reserved by calls in flight plus this
call's worst case stays within the scope's limit. Checking and reserving happen in one SQLite
``BEGIN IMMEDIATE`` transaction, so processes sharing a budget serialise on it and can never
overshoot it together, not even by one call. After the call the reservation is replaced by the
actual spend. A reservation records its holder (host, pid and the process's start time, so a
reused pid is not mistaken for it): one whose holder is dead is released at the next
reservation, at once; one whose holder cannot be checked (another host) is released when its
lease expires, and until then it still counts, which errs on the side of spending less.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import BaseModel, Field

from whalebone.core.deprecation import renamed
from whalebone.core.errors import WhaleboneError
from whalebone.core.home import private_dir
from whalebone.core.sqlite import connect, transaction
from whalebone.core.usage import TokenCounts

SCHEMA = """
CREATE TABLE IF NOT EXISTS limits (
    scope TEXT PRIMARY KEY,
    max_usd REAL,
    max_tokens INTEGER
);
CREATE TABLE IF NOT EXISTS default_limits (
    key TEXT PRIMARY KEY,
    max_usd REAL,
    max_tokens INTEGER
);
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    usd REAL NOT NULL,
    tokens INTEGER NOT NULL,
    kind TEXT NOT NULL,
    cache_hit_tokens INTEGER NOT NULL DEFAULT 0,
    cache_miss_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    saved_usd REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_scope ON spend(scope);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT NOT NULL,
    scope TEXT NOT NULL,
    usd REAL NOT NULL,
    tokens INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,
    holder TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id, scope)
);
"""


class ReservationRefused(WhaleboneError):
    """The call would take a scope past its limit. Nothing was reserved."""

    def __init__(self, message: str, *, scope: str, limit: float, needed: float,
                 unit: str) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit = limit
        self.needed = needed
        self.unit = unit


class Limit(BaseModel):
    scope: str
    max_usd: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)


class ScopeState(BaseModel):
    scope: str
    max_usd: float | None
    max_tokens: int | None
    spent_usd: float
    spent_tokens: int
    reserved_usd: float
    reserved_tokens: int
    saved_usd: float  # what cache hits saved against paying the miss price


class Actual(TokenCounts):
    """What a call really cost (``prompt_tokens`` is hits + misses unless given)."""

    usd: float
    saved_usd: float = 0.0
    kind: str = "turn"

    @property
    def tokens(self) -> int:
        return self.cache_hit_tokens + self.cache_miss_tokens + self.completion_tokens


def day_scope(prefix: str, when: dt.date | None = None) -> str:
    """A per-day scope name, e.g. ``agent:coder:2026-11-23`` (UTC days)."""
    return f"{prefix}:{(when or dt.datetime.now(dt.UTC).date()).isoformat()}"


class Ledger:
    """One budget database, shared by every process that spends from it."""

    def __init__(self, path: str | os.PathLike[str], *, lease_seconds: float = 600.0) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        self.lease_seconds = lease_seconds
        self.db = connect(self.path, timeout=60)
        self.db.executescript(SCHEMA)
        if "holder" not in {r[1] for r in self.db.execute("PRAGMA table_info(reservations)")}:
            self.db.execute("ALTER TABLE reservations ADD COLUMN holder TEXT NOT NULL "
                            "DEFAULT ''")  # a ledger from before holders were recorded
        self.holder = holder_id(os.getpid())

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: writers in every process serialise on it."""
        return transaction(self.db)

    _tx = transaction

    def set_limit(self, limit: Limit) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO limits (scope, max_usd, max_tokens) VALUES (?, ?, ?) "
                       "ON CONFLICT(scope) DO UPDATE SET max_usd = excluded.max_usd, "
                       "max_tokens = excluded.max_tokens",
                       (limit.scope, limit.max_usd, limit.max_tokens))

    def ensure_limit(self, limit: Limit) -> None:
        """Set a scope's limit unless it already has one (a default never overrides a limit
        set by a person or raised by an extension)."""
        if limit.max_usd is None and limit.max_tokens is None:
            return
        with self._tx() as db:
            db.execute("INSERT INTO limits (scope, max_usd, max_tokens) VALUES (?, ?, ?) "
                       "ON CONFLICT(scope) DO NOTHING",
                       (limit.scope, limit.max_usd, limit.max_tokens))

    def set_default(self, limit: Limit) -> None:
        """The limit new scopes of a family get (``limit.scope`` names the family: "run",
        "session", "agent", "agent:<name>", "global"); it wins over a guard's policy."""
        with self._tx() as db:
            db.execute("INSERT INTO default_limits (key, max_usd, max_tokens) VALUES (?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET max_usd = excluded.max_usd, "
                       "max_tokens = excluded.max_tokens",
                       (limit.scope, limit.max_usd, limit.max_tokens))

    def default(self, key: str) -> Limit | None:
        row = self.db.execute("SELECT max_usd, max_tokens FROM default_limits WHERE key = ?",
                              (key,)).fetchone()
        return None if row is None else Limit(scope=key, max_usd=row[0], max_tokens=row[1])

    def defaults(self) -> list[Limit]:
        """Every family default (``whalebone budget set run|session|agent|global``)."""
        rows = self.db.execute("SELECT key, max_usd, max_tokens FROM default_limits ORDER BY 1")
        return [Limit(scope=r[0], max_usd=r[1], max_tokens=r[2]) for r in rows]

    def limit(self, scope: str) -> Limit | None:
        row = self.db.execute("SELECT max_usd, max_tokens FROM limits WHERE scope = ?",
                              (scope,)).fetchone()
        return None if row is None else Limit(scope=scope, max_usd=row[0], max_tokens=row[1])

    def extend(self, scope: str, *, usd: float = 0.0, tokens: int = 0) -> None:
        """Raise a scope's limit (after an approved extension)."""
        with self._tx() as db:
            self.extend_in(db, scope, usd=usd, tokens=tokens)

    @staticmethod
    def extend_in(db: sqlite3.Connection, scope: str, *, usd: float = 0.0,
                  tokens: float = 0) -> None:
        """:meth:`extend` inside a transaction the caller holds."""
        row = db.execute("SELECT max_usd, max_tokens FROM limits WHERE scope = ?",
                         (scope,)).fetchone()
        if row is None:
            raise WhaleboneError(f"scope {scope!r} has no limit to extend")
        db.execute("UPDATE limits SET max_usd = ?, max_tokens = ? WHERE scope = ?",
                   (None if row[0] is None else row[0] + usd,
                    None if row[1] is None else row[1] + int(tokens), scope))

    def _totals(self, db: sqlite3.Connection, scope: str) -> tuple[float, int, float, int]:
        spent = db.execute("SELECT COALESCE(SUM(usd), 0), COALESCE(SUM(tokens), 0) FROM spend "
                           "WHERE scope = ?", (scope,)).fetchone()
        held = db.execute("SELECT COALESCE(SUM(usd), 0), COALESCE(SUM(tokens), 0) FROM "
                          "reservations WHERE scope = ?", (scope,)).fetchone()
        return spent[0], spent[1], held[0], held[1]

    def reserve(self, scopes: Sequence[str], *, usd: float, tokens: int) -> str:
        """Reserve a call's worst case in every scope, or raise :class:`ReservationRefused`."""
        rid = uuid.uuid4().hex
        now = time.time()
        with self._tx() as db:
            self._release_dead(db, now)
            for scope in scopes:
                row = db.execute("SELECT max_usd, max_tokens FROM limits WHERE scope = ?",
                                 (scope,)).fetchone()
                if row is None:
                    continue  # a scope without a limit is metered, not capped
                spent_usd, spent_tok, held_usd, held_tok = self._totals(db, scope)
                if row[0] is not None and spent_usd + held_usd + usd > row[0] + 1e-12:
                    raise ReservationRefused(
                        f"budget {scope!r} would be exceeded: ${spent_usd:.6f} spent + "
                        f"${held_usd:.6f} in flight + ${usd:.6f} for this call > ${row[0]:.6f}",
                        scope=scope, limit=row[0], needed=usd, unit="usd")
                if row[1] is not None and spent_tok + held_tok + tokens > row[1]:
                    raise ReservationRefused(
                        f"budget {scope!r} would be exceeded: {spent_tok} tokens spent + "
                        f"{held_tok} in flight + {tokens} for this call > {row[1]}",
                        scope=scope, limit=row[1], needed=tokens, unit="tokens")
            for scope in scopes:
                db.execute("INSERT INTO reservations (id, scope, usd, tokens, pid, expires, "
                           "holder) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (rid, scope, usd, tokens, os.getpid(), now + self.lease_seconds,
                            self.holder))
        return rid

    @staticmethod
    def _release_dead(db: sqlite3.Connection, now: float) -> None:
        """Drop reservations whose lease expired or whose holder is dead (killed mid-call):
        a dead holder will never settle, and must not freeze its scopes for a lease."""
        db.execute("DELETE FROM reservations WHERE expires < ?", (now,))
        for (holder,) in db.execute("SELECT DISTINCT holder FROM reservations").fetchall():
            if holder and holder_dead(holder):
                db.execute("DELETE FROM reservations WHERE holder = ?", (holder,))

    def holders(self, scope: str) -> list[tuple[int, float]]:
        """Who holds reservations in ``scope``: (pid, USD held), largest first."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT pid, SUM(usd) FROM reservations WHERE scope = ? GROUP BY pid "
            "ORDER BY 2 DESC", (scope,))]

    def settle(self, reservation: str, actual: Actual,
               scopes: Sequence[str] | None = None) -> None:
        """Replace a reservation by what the call actually cost (in the same scopes).

        ``scopes`` (those the reservation was made in) are charged when the reservation is
        gone, its lease having expired during a long call: spend is never dropped.
        """
        with self._tx() as db:
            held = [r[0] for r in db.execute("SELECT scope FROM reservations WHERE id = ?",
                                             (reservation,))]
            scopes = held or list(scopes or ())
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation,))
            for scope in scopes:
                self._insert_spend(db, scope, actual)

    def release(self, reservation: str) -> None:
        """Drop a reservation whose call never happened."""
        with self._tx() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation,))

    def record(self, scopes: Sequence[str], actual: Actual) -> None:
        """Meter spend that had no reservation (it is still charged)."""
        with self._tx() as db:
            for scope in scopes:
                self._insert_spend(db, scope, actual)

    @staticmethod
    def _insert_spend(db: sqlite3.Connection, scope: str, actual: Actual) -> None:
        db.execute("INSERT INTO spend (scope, usd, tokens, kind, cache_hit_tokens, "
                   "cache_miss_tokens, completion_tokens, saved_usd, created) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (scope, actual.usd, actual.tokens, actual.kind, actual.cache_hit_tokens,
                    actual.cache_miss_tokens, actual.completion_tokens, actual.saved_usd,
                    time.time()))

    def state(self, scope: str) -> ScopeState:
        row = self.db.execute("SELECT max_usd, max_tokens FROM limits WHERE scope = ?",
                              (scope,)).fetchone() or (None, None)
        spent_usd, spent_tok, held_usd, held_tok = self._totals(self.db, scope)
        saved = self.db.execute("SELECT COALESCE(SUM(saved_usd), 0) FROM spend WHERE scope = ?",
                                (scope,)).fetchone()[0]
        return ScopeState(scope=scope, max_usd=row[0], max_tokens=row[1], spent_usd=spent_usd,
                          spent_tokens=spent_tok, reserved_usd=held_usd,
                          reserved_tokens=held_tok, saved_usd=saved)

    def spend_by_kind(self, scope: str) -> dict[str, float]:
        """USD spent in a scope, by kind of call (turn, retry, compaction, auditor, …)."""
        rows = self.db.execute("SELECT kind, SUM(usd) FROM spend WHERE scope = ? GROUP BY kind "
                               "ORDER BY kind", (scope,))
        return {r[0]: r[1] for r in rows}

    def scopes(self) -> list[str]:
        rows = self.db.execute("SELECT scope FROM limits UNION SELECT scope FROM spend "
                               "ORDER BY 1")
        return [r[0] for r in rows]


def _process_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a live process, from Linux's
    ``/proc/PID/stat``; None when there is no such process or no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and parentheses
    return (fields[0], fields[19]) if len(fields) > 19 else None


def holder_id(pid: int) -> str:
    """``host:pid:start``, naming one process for as long as the machine is up."""
    started = _process_start(pid)
    return f"{socket.gethostname()}:{pid}:{started[1] if started else ''}"


def holder_dead(holder: str) -> bool:
    """Whether the process a reservation names is certainly gone: on this host, and either
    no such pid, a zombie, or another process that reused the pid. Unknown means alive."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, start = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    now = _process_start(pid)
    if now is None:
        return False  # no /proc: the pid exists, so count it alive
    state, started = now
    return state in ("Z", "X") or (bool(start) and started != start)

__getattr__ = renamed(__name__, {"BudgetExceeded": "ReservationRefused"})
