"""The audit log of memory: every operation, who asked, and how it ended, in SQLite.

One row per operation (view, create, str_replace, insert, delete, rename, search), refusals
and errors included, since an agent probing its box is exactly what a person wants to see.
Rows are only ever appended; each append is its own committed transaction in WAL mode, so
several processes (agents, the daemon, ``whalebone memory``) can share one log.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from whalebone.core.sqlite import connect

_SCHEMA = """
create table if not exists audit (
    id integer primary key,
    at_ns integer not null,
    who text not null,
    scope text not null,
    command text not null,
    path text not null,
    bytes integer not null,
    result text not null,      -- 'ok', 'refused' (confinement, read-only, caps) or 'error'
    detail text not null
);
create index if not exists audit_scope on audit(scope, id);
"""

RESULTS = ("ok", "refused", "error")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_ns: int
    who: str
    scope: str
    command: str
    path: str
    bytes: int
    result: str
    detail: str

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_ns / 1e9, tz=UTC)


class AuditLog:
    """An append-only log of memory operations in one SQLite file."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self._lock = threading.Lock()
        self._conn = connect(self.path)
        self._conn.executescript(_SCHEMA)

    def append(self, *, who: str, scope: str, command: str, path: str = "", bytes: int = 0,
               result: str = "ok", detail: str = "") -> int:
        """Record one operation; returns its id. ``path`` and ``detail`` are kept as given,
        capped at 1,000 characters (a hostile path is evidence, not something to render)."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}, not {result!r}")
        row = (time.time_ns(), who[:200], scope[:200], command[:50], path[:1000], int(bytes),
               result, detail[:1000])
        with self._lock:
            cur = self._conn.execute(
                "insert into audit (at_ns, who, scope, command, path, bytes, result, detail)"
                " values (?, ?, ?, ?, ?, ?, ?, ?)", row)
            return int(cur.lastrowid or 0)

    def entries(self, *, scope: str | None = None, who: str | None = None,
                limit: int = 50) -> list[AuditEntry]:
        """The latest ``limit`` entries (optionally of one scope or one actor), oldest first."""
        clauses, args = [], []
        for column, value in (("scope", scope), ("who", who)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"where {' and '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._conn.execute(
                f"select id, at_ns, who, scope, command, path, bytes, result, detail "
                f"from audit {where} order by id desc limit ?", [*args, max(0, limit)],
            ).fetchall()
        return [AuditEntry(*r) for r in reversed(rows)]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
