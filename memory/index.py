"""The search index of a memory scope: SQLite FTS5 (through sqlite-utils), one row per line.

The files are the truth; the index is a cache of them that can always be rebuilt. It lives
outside the scope (a person browsing the memory directory sees only memory), and it follows
edits made by a person outside whalebone: :meth:`SearchIndex.sync` compares every file's size
and mtime with what was indexed and re-reads the ones that differ, confirming a real change by
its BLAKE2 hash. A file written within :data:`RACY_NS` of the moment it was indexed is re-hashed
on the next sync even if size and mtime agree (the "racily clean" case: a second edit within
the filesystem's timestamp granularity would otherwise go unseen). Writes made through the
memory tool update the index at once (:meth:`SearchIndex.refresh`); outside edits are picked up
by the next search. Where inotify works (:mod:`whalebone.memory.watch`) every search checks,
and walks only when something in the scope changed; without it, the walk runs at most every
``rescan_interval`` seconds so that a burst of searches does not walk each time.

Several processes may share one index (agents, the daemon, ``whalebone memory``): creating it
and writing to it hold an flock on ``<index>.lock``; searching only reads (WAL).

Hidden names (starting with ``.``) are never indexed: they hold temp files of atomic writes
and a person's tool clutter (``.git``), not memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from whalebone.core.home import open_private, private_dir
from whalebone.core.sqlite import connect
from whalebone.memory.watch import ChangeWatch
from whalebone.tools.confine import Parts, PathError, Root, display

RACY_NS = 2_000_000_000
MAX_INDEXED_LINE = 2_000  # characters of one line kept in the index (the file keeps all)
CANDIDATES = 300  # matching lines scored per query (see _match)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching line: the file (relative to the scope), its 1-based number, its text."""

    path: str
    line: int
    text: str
    rank: float


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: int = 0
    changed: int = 0
    removed: int = 0
    scanned: int = 0


def is_hidden(parts: Parts) -> bool:
    return any(p.startswith(".") for p in parts)


class SearchIndex:
    """Full-text search over the text files of one :class:`Root`."""

    def __init__(self, root: Root, db_path: str | Path, *, rescan_interval: float = 1.0,
                 max_file_bytes: int = 16 << 20, watch: bool = True) -> None:
        self.root = root
        self.rescan_interval = rescan_interval
        self.max_file_bytes = max_file_bytes
        self._lock = threading.RLock()
        self._last_sync = float("-inf")
        self._watch = ChangeWatch() if watch else ChangeWatch.unavailable()
        path = Path(db_path)
        private_dir(path.parent)
        self._lock_path = path.with_name(path.name + ".lock")
        with self._exclusive():
            # Tool calls run in worker threads; every use of the connection holds self._lock.
            conn = connect(path, isolation_level="")  # sqlite-utils runs its own transactions
            conn.execute("pragma cache_size=-32768")  # 32 MiB: the hot part of 100K lines
            conn.execute("pragma mmap_size=268435456")
            self.db = sqlite_utils.Database(conn)
            self._create_tables()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The one writer of this index: among threads (self._lock) and among processes (an
        flock). SQLite would serialise the writes by itself, but a writer whose snapshot went
        stale meanwhile gets "database is locked" at once instead of waiting its turn."""
        with self._lock, exclusive_lock(self._lock_path):
            yield

    def _create_tables(self) -> None:
        if "files" not in self.db.table_names():
            self.db["files"].create({"path": str, "size": int, "mtime_ns": int, "hash": str,
                                     "indexed_ns": int}, pk="path", if_not_exists=True)
        if "entries_fts" not in self.db.table_names():
            entries = self.db["entries"]
            entries.create({"id": int, "path": str, "line": int, "text": str}, pk="id",
                           if_not_exists=True)
            entries.create_index(["path"], if_not_exists=True)
            entries.enable_fts(["text"], fts_version="FTS5", create_triggers=True,
                               tokenize="porter unicode61 remove_diacritics 2")

    def close(self) -> None:
        with self._lock:
            self._watch.close()
            self.db.conn.close()

    # -- keeping in step with the files ---------------------------------------------------

    def sync(self, *, force: bool = False) -> SyncReport:
        """Bring the index in step with the files. Skipped unless ``force`` when the watch
        knows nothing changed, or (without a watch) when synced < rescan_interval ago."""
        if not force:
            if self._watch.available:
                with self._lock:
                    if not self._watch.changed():
                        return SyncReport()
            elif time.monotonic() - self._last_sync < self.rescan_interval:
                return SyncReport()
        with self._exclusive():
            known = {r[0]: r[1:] for r in self.db.execute(
                "select path, size, mtime_ns, hash, indexed_ns from files")}
            added = changed = scanned = 0
            seen: set[str] = set()
            self._watch.begin(self.root.path)
            with self.db.conn:
                for parts, st in self.root.walk(directories=True):
                    if is_hidden(parts):
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        self._watch.add(parts)
                        continue
                    scanned += 1
                    path = display(parts)
                    seen.add(path)
                    row = known.get(path)
                    if row is not None:
                        size, mtime_ns, _, indexed_ns = row
                        racy = mtime_ns + RACY_NS >= indexed_ns
                        if size == st.st_size and mtime_ns == st.st_mtime_ns and not racy:
                            continue
                    outcome = self._index_file(parts, row[2] if row else None)
                    added += outcome == "added"
                    changed += outcome == "changed"
                gone = [p for p in known if p not in seen]
                for path in gone:
                    self._forget_file(path)
            self._watch.end()
            self._last_sync = time.monotonic()
            return SyncReport(added=added, changed=changed, removed=len(gone), scanned=scanned)

    def refresh(self, parts: Parts) -> None:
        """Re-index one path after a write through whalebone: a file, a directory, or gone."""
        with self._exclusive(), self.db.conn:
            path = display(parts)
            if parts:
                self._forget_file(path)
                rows = self.db.execute("select path from files where path like ? escape '\\'",
                                       [_like_prefix(path)]).fetchall()
            else:
                rows = self.db.execute("select path from files").fetchall()
            for (p,) in rows:
                self._forget_file(p)
            try:
                is_dir = self.root.is_dir(parts)
            except PathError:
                return
            if is_dir:
                for sub, _ in self.root.walk(parts):
                    if not is_hidden(sub):
                        self._index_file(sub, None)
            elif self.root.exists(parts) and not is_hidden(parts):
                self._index_file(parts, None)

    def _index_file(self, parts: Parts, old_hash: str | None) -> str:
        path = display(parts)
        try:
            st = self.root.stat(parts)
            data = self.root.read_bytes(parts, max_bytes=self.max_file_bytes)
        except PathError:
            # Unreadable here (a link, over the cap, vanished): nothing of it is searchable.
            self._forget_file(path)
            return "skipped"
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        # Plain SQL: this runs for every changed (or racily clean) file on each sync.
        self.db.execute(
            "insert into files (path, size, mtime_ns, hash, indexed_ns) values (?, ?, ?, ?, ?)"
            " on conflict(path) do update set size = excluded.size, mtime_ns ="
            " excluded.mtime_ns, hash = excluded.hash, indexed_ns = excluded.indexed_ns",
            [path, st.st_size, st.st_mtime_ns, digest, time.time_ns()])
        if digest == old_hash:
            return "same"
        self.db.execute("delete from entries where path = ?", [path])
        text = data.decode("utf-8", errors="replace")
        self.db["entries"].insert_all(
            ({"path": path, "line": n, "text": line[:MAX_INDEXED_LINE]}
             for n, line in enumerate(text.splitlines(), 1) if line.strip()),
            batch_size=1000,
        )
        return "changed" if old_hash is not None else "added"

    def _forget_file(self, path: str) -> None:
        self.db.execute("delete from entries where path = ?", [path])
        self.db.execute("delete from files where path = ?", [path])

    # -- asking -------------------------------------------------------------------------------

    def search(self, query: str, *, phrase: bool = False, under: Parts = (),
               limit: int = 20) -> list[Hit]:
        """Lines matching ``query``, best first (BM25).

        Words: every word must occur in the line (any order, stemmed); if no line has them
        all, lines with any of them. Phrase: the words in order, then kept only if the line
        holds ``query`` literally (case-insensitive). Query syntax is never interpreted: each
        word is quoted, so ``NEAR``, ``*`` or ``"`` in a query are plain text.
        """
        words = _WORD.findall(query)
        if not words:
            return []
        self.sync()
        quoted = [f'"{w}"' for w in words]
        with self._lock:
            if phrase:
                needle = " ".join(query.split()).casefold()
                hits = [h for h in self._match(f'"{" ".join(words)}"', under, limit * 5)
                        if needle in " ".join(h.text.split()).casefold()]
                return hits[:limit]
            hits = self._match(" AND ".join(quoted), under, limit)
            if not hits and len(words) > 1:
                hits = self._match(" OR ".join(quoted), under, limit)
            return hits

    def _match(self, fts_query: str, under: Parts, limit: int) -> list[Hit]:
        # BM25 is computed for at most CANDIDATES matching lines, the newest first, and only
        # the best `limit` of them are read back: exact ranking whenever a query matches
        # fewer lines, and a bounded cost (no scoring of half the index) when it names a word
        # found everywhere.
        args = {"query": fts_query, "cap": CANDIDATES, "limit": limit}
        within = ""
        if under:
            within = ("and rowid in (select id from entries where path = :under "
                      "or path like :prefix escape '\\')")
            args |= {"under": display(under), "prefix": _like_prefix(display(under))}
        rows = self.db.execute(
            f"""with scored as materialized (
                    select rowid as id, bm25(entries_fts) as score from entries_fts
                    where entries_fts match :query {within}
                    order by rowid desc limit :cap),
                best as materialized (select id, score from scored order by score limit :limit)
                select e.path, e.line, e.text, best.score
                from best join entries e on e.id = best.id order by best.score""",
            args).fetchall()
        return [Hit(path=r[0], line=r[1], text=r[2], rank=r[3]) for r in rows]

    def total_bytes(self) -> int:
        """The size of every indexed file together, as of the last sync or write."""
        with self._lock:
            return int(self.db.execute("select coalesce(sum(size), 0) from files").fetchone()[0])

    def stats(self) -> tuple[int, int]:
        """(files, entries) in the index."""
        with self._lock:
            files = self.db.execute("select count(*) from files").fetchone()[0]
            entries = self.db.execute("select count(*) from entries").fetchone()[0]
            return int(files), int(entries)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block: one holder
    among processes. Threads need their own lock besides (each open() is a new holder)."""
    with open_private(path, "ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _like_prefix(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"
