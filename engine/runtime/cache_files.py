"""The prefix cache's files on disk: its SQLite index (opened, checked, and moved aside when
damaged) and the checks on a snapshot file's bytes.
:mod:`whalebone.engine.runtime.prefix_cache` decides what a fault means for a request; this
module only says what is on the disk."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from whalebone.core.errors import storage_problem
from whalebone.core.sqlite import connect as sqlite_connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    digest      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    length      INTEGER NOT NULL,
    file        TEXT NOT NULL,
    nbytes      INTEGER NOT NULL,
    created     REAL NOT NULL,
    last_used   REAL NOT NULL,
    checksum    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS snapshots_by_model ON snapshots (fingerprint, length);
CREATE INDEX IF NOT EXISTS snapshots_by_use ON snapshots (last_used);
"""

ASIDE = "index.sqlite.damaged"  # the last damaged index, kept once for a post-mortem


class Damaged(Exception):
    """A snapshot file that must not be loaded; the message says why."""


class Unusable(Exception):
    """The folder or its index cannot be used at all (a file in its place, a full or
    read-only disk): the cache turns itself off."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()  # with SHA-NI, ~2x BLAKE2b's speed (measured)


def is_corruption(e: BaseException) -> bool:
    """SQLite saying the index file is not a (sound) database."""
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(e).lower()
    return (isinstance(e, sqlite3.DatabaseError)
            and (code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
                 or "malformed" in text or "not a database" in text))


def remove(path: Path) -> None:
    """Delete a file, or a directory planted where a file belongs (never following links)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def metadata(data: bytes) -> dict[str, object]:
    """A safetensors file's ``__metadata__``, read from its header (8-byte little-endian
    length, then JSON) without touching the tensors."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"header of {n} bytes in a {len(data)}-byte file")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def connect(index: Path) -> sqlite3.Connection:
    """The index, checked page by page (``quick_check``: a garbled inner page is found now,
    not as "malformed" on every later request)."""
    if index.is_dir():
        raise sqlite3.DatabaseError(f"{index.name} is a directory, not a database file")
    db = sqlite_connect(index)  # whalebone's PRAGMAs, a 0600 file
    try:
        (ok,) = db.execute("PRAGMA quick_check").fetchone()
        if ok != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({ok})")
        db.executescript(SCHEMA)
        cols = {r[1] for r in db.execute("PRAGMA table_info(snapshots)")}
        if "checksum" not in cols:  # an index from before checksums: its rows never verify
            db.execute("ALTER TABLE snapshots ADD COLUMN checksum TEXT NOT NULL DEFAULT ''")
    except BaseException:
        db.close()
        raise
    return db


def open_index(index: Path) -> tuple[sqlite3.Connection, str | None]:
    """The index and, when it was damaged and replaced by an empty one, what was wrong.
    Raises :class:`Unusable` when the disk is the problem."""
    try:
        return connect(index), None
    except sqlite3.Error as e:
        if storage_problem(e) is not None and not index.is_dir():
            raise Unusable(e) from e
        damage = str(e)
    try:
        move_aside(index)
        return connect(index), damage
    except (OSError, sqlite3.Error) as e:
        raise Unusable(e) from e


def move_aside(index: Path) -> None:
    """Move a damaged index (and its logs) out of the way so that a fresh one can be made;
    serialised across processes, so two repairs never race."""
    root = index.parent
    with open(root / "index.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            connect(index).close()
            return  # another process repaired it while we waited
        except sqlite3.Error:
            pass
        remove(root / ASIDE)
        if index.exists() or index.is_symlink():
            os.replace(index, root / ASIDE)
        for suffix in ("-wal", "-shm", "-journal"):  # a stale log must never meet a new db
            remove(Path(f"{index}{suffix}"))


def read_verified(path: Path, nbytes: int, checksum: str) -> bytes:
    """A snapshot file's bytes, which must be the ``nbytes`` whose SHA-256 the index recorded
    (a torn write, a flipped bit, a garbled header: nothing is parsed before this passes)."""
    try:
        with open(path, "rb") as f:
            data = f.read(nbytes + 1)  # never more than the file the index knows
    except FileNotFoundError:
        raise Damaged("file missing (evicted by another process?)") from None
    except OSError as e:
        if storage_problem(e) is not None:
            raise
        raise Damaged(f"unreadable ({e})") from None
    if len(data) != nbytes or sha256(data) != checksum:
        raise Damaged("checksum mismatch (a torn write or a damaged file)")
    return data


def write_temp(folder: Path, data: bytes) -> str:
    """``data`` in a new fsynced temp file in ``folder`` (renamed into place by the caller:
    a rename must never publish a file still in flight)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def sweep_temp_files(folder: Path, max_age: float) -> None:
    """Remove temp files older than ``max_age`` seconds: left by writers that crashed."""
    cutoff = time.time() - max_age
    for tmp in folder.glob(".tmp-*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                remove(tmp)
        except OSError:
            pass  # another process swept it first
