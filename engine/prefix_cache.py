"""The prefix cache on disk: sequence states at prefix lengths, shared across processes.

A snapshot is everything a sequence carries after its first ``P`` tokens (for V4: the window
rings, compressed entries, indexer keys and compressor pending rows; see ``engine/state.py``)
plus the logits of token ``P`` and the ``P`` token ids themselves. Restoring it and prefilling
only the rest of a prompt gives bit-identical results to prefilling the whole prompt, at the
cost of reading a file.

Layout under the cache folder::

    index.sqlite                  one row per snapshot: model fingerprint, length, digest,
                                  file, size, last use (WAL mode: many readers, one writer)
    snapshots/<digest>.safetensors  the tensors; metadata says format, fingerprint, length

The key is a BLAKE2b digest of (model fingerprint, token ids of the prefix). Finding the longest
cached prefix of a prompt hashes the prompt once, incrementally, stopping at each length the
index holds for this model, so a lookup costs one pass over the ids plus one row per snapshot of
this model. A digest match is not trusted: the ids stored in the file must equal the prompt's
first ``P`` ids and its fingerprint must be ours, or the snapshot is ignored with a
:class:`SnapshotIgnored` warning and dropped from the index; a corrupt file is never loaded into
the model.

Writes are atomic and safe across processes: tensors go to a temp file that is fsynced and
renamed into place before the index row is committed; readers never see a half-written file.
The folder has a size budget; after each write the least recently used snapshots (of any model)
are evicted until the total fits.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
import warnings
from array import array
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from whalebone.core.home import private_dir
from whalebone.core.sqlite import connect, transaction
from whalebone.engine.base import EngineError

FORMAT = "whalebone-prefix/1"
DEFAULT_BUDGET = 2 * 1024**3
IDS_KEY = "__ids__"
LOGITS_KEY = "__logits__"
_TMP_MAX_AGE = 3600.0  # temp files older than this were left by a crashed writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    digest      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    length      INTEGER NOT NULL,
    file        TEXT NOT NULL,
    nbytes      INTEGER NOT NULL,
    created     REAL NOT NULL,
    last_used   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_model ON snapshots (fingerprint, length);
CREATE INDEX IF NOT EXISTS snapshots_by_use ON snapshots (last_used);
"""


class PrefixCacheError(EngineError):
    """The cache folder cannot be used at all (not writable, not a cache)."""


class PrefixCacheWarning(UserWarning):
    """The cache could not be read or written (disk full, database locked too long): the
    request goes on without it; a cache is an optimisation, never a reason to fail."""


class SnapshotIgnored(PrefixCacheWarning):
    """A snapshot was corrupt, foreign or vanished: it was not loaded (the prompt is prefilled
    instead) and its index row was dropped."""


@dataclass
class CachedPrefix:
    """A verified snapshot of the first ``length`` tokens of a prompt."""

    length: int
    digest: str
    state: dict[str, torch.Tensor]  # the sequence state's own tensors
    logits: torch.Tensor  # (vocab,) the next-token logits after the prefix


@dataclass(frozen=True)
class CacheStats:
    snapshots: int
    nbytes: int
    budget: int


def _ids_bytes(ids: Sequence[int]) -> bytes:
    buf = array("i", ids)  # int32: V4's 129,280 ids fit with room to spare
    if sys.byteorder == "big":
        buf.byteswap()  # digests and files are little-endian everywhere
    return buf.tobytes()


class PrefixCache:
    """Snapshots of sequence states for one model (``fingerprint``) in a shared folder."""

    def __init__(self, root: str | Path, *, fingerprint: str,
                 budget_bytes: int = DEFAULT_BUDGET) -> None:
        if budget_bytes < 0:
            raise PrefixCacheError("a cache budget cannot be negative")
        self.root = Path(root).expanduser()
        self.fingerprint = fingerprint
        self.budget_bytes = budget_bytes
        self.files = self.root / "snapshots"
        try:
            private_dir(self.files)
            self._db = connect(self.root / "index.sqlite")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise PrefixCacheError(f"cannot use {self.root} as a prefix cache: {e}") from e
        self._lock = threading.Lock()  # one connection, used from the engine's worker threads
        self._sweep_temp_files()

    # -- digests ------------------------------------------------------------------------------

    def _hasher(self) -> hashlib.blake2b:
        h = hashlib.blake2b(digest_size=20)
        h.update(FORMAT.encode() + b"\0" + self.fingerprint.encode() + b"\0")
        return h

    def digest(self, ids: Sequence[int]) -> str:
        h = self._hasher()
        h.update(_ids_bytes(ids))
        return h.hexdigest()

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, ids: Sequence[int], *, max_length: int | None = None) -> CachedPrefix | None:
        """The longest cached, verified prefix of ``ids`` (at most ``max_length`` tokens)."""
        try:
            return self._lookup(ids, max_length)
        except sqlite3.Error as e:
            warnings.warn(f"prefix cache: lookup failed, prefilling instead: {e}",
                          PrefixCacheWarning, stacklevel=2)
            return None

    def _lookup(self, ids: Sequence[int], max_length: int | None) -> CachedPrefix | None:
        limit = len(ids) if max_length is None else min(max_length, len(ids))
        if limit <= 0:
            return None
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT length FROM snapshots WHERE fingerprint = ? AND length <= ? "
                "ORDER BY length", (self.fingerprint, limit)).fetchall()
        if not rows:
            return None
        # One incremental pass over the ids: the digest of each candidate length.
        data = _ids_bytes(ids[:limit])
        h = self._hasher()
        done = 0
        candidates: list[tuple[int, str]] = []
        for (length,) in rows:
            h.update(data[done * 4:length * 4])
            done = length
            candidates.append((length, h.copy().hexdigest()))
        for length, digest in reversed(candidates):
            with self._lock:
                row = self._db.execute("SELECT file FROM snapshots WHERE digest = ?",
                                       (digest,)).fetchone()
            if row is None:
                continue
            hit = self._load(digest, row[0], ids[:length])
            if hit is not None:
                self._touch(digest)
                return hit
        return None

    def _load(self, digest: str, file: str, ids: Sequence[int]) -> CachedPrefix | None:
        from safetensors import SafetensorError, safe_open

        path = self.files / file
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    return self.discard(digest, f"{path.name}: not a {FORMAT} snapshot")
                if meta.get("fingerprint") != self.fingerprint:
                    return self.discard(digest, f"{path.name}: written for another model "
                                        f"(fingerprint {meta.get('fingerprint', '?')[:16]})")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except FileNotFoundError:
            return self.discard(digest, f"{path.name}: file missing (evicted by another "
                                "process?)")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            return self.discard(digest, f"{path.name}: unreadable ({e})")
        stored = tensors.pop(IDS_KEY, None)
        logits = tensors.pop(LOGITS_KEY, None)
        if stored is None or logits is None:
            return self.discard(digest, f"{path.name}: ids or logits missing")
        if stored.dtype != torch.int32 or stored.tolist() != list(ids):
            return self.discard(digest, f"{path.name}: token ids differ from the prompt's "
                                "(digest collision or corrupt file)")
        return CachedPrefix(length=len(ids), digest=digest, state=tensors, logits=logits)

    def discard(self, digest: str, reason: str) -> None:
        """Drop a snapshot that must not be used, with a :class:`SnapshotIgnored` warning."""
        warnings.warn(f"prefix cache: ignored a snapshot: {reason}", SnapshotIgnored,
                      stacklevel=3)
        with self._lock:
            row = self._db.execute("DELETE FROM snapshots WHERE digest = ? RETURNING file",
                                   (digest,)).fetchone()
        if row is not None:
            (self.files / row[0]).unlink(missing_ok=True)
        return None

    def _touch(self, digest: str) -> None:
        with self._lock:
            self._db.execute("UPDATE snapshots SET last_used = ? WHERE digest = ?",
                             (time.time(), digest))

    # -- store --------------------------------------------------------------------------------

    def contains(self, ids: Sequence[int]) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM snapshots WHERE digest = ?",
                                    (self.digest(ids),)).fetchone() is not None

    def store(self, ids: Sequence[int], state: Mapping[str, torch.Tensor],
              logits: torch.Tensor) -> bool:
        """Snapshot the state after ``ids``; False when it is already cached, could never fit
        the budget, or could not be written (a :class:`PrefixCacheWarning` says why). Evicts
        least recently used snapshots to stay within the budget."""
        if not ids:
            return False
        try:
            return self._store(ids, state, logits)
        except (OSError, sqlite3.Error) as e:
            warnings.warn(f"prefix cache: snapshot of {len(ids)} tokens not written: {e}",
                          PrefixCacheWarning, stacklevel=2)
            return False

    def _store(self, ids: Sequence[int], state: Mapping[str, torch.Tensor],
               logits: torch.Tensor) -> bool:
        digest = self.digest(ids)
        if self.contains(ids):
            self._touch(digest)
            return False
        tensors = {k: v.detach().contiguous() for k, v in state.items()}
        if IDS_KEY in tensors or LOGITS_KEY in tensors:
            raise PrefixCacheError(f"state tensor names {IDS_KEY}/{LOGITS_KEY} are reserved")
        tensors[IDS_KEY] = torch.tensor(list(ids), dtype=torch.int32)
        tensors[LOGITS_KEY] = logits.detach().reshape(-1).contiguous()
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if nbytes > self.budget_bytes:
            return False
        file = f"{digest}.safetensors"
        self._write_atomically(file, tensors, {"format": FORMAT, "fingerprint": self.fingerprint,
                                               "length": str(len(ids))})
        nbytes = (self.files / file).stat().st_size
        now = time.time()
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest, self.fingerprint, len(ids), file, nbytes, now, now))
            evicted = self._evict_locked(self.budget_bytes, keep=digest)
        self._unlink(evicted)
        return True

    def _write_atomically(self, file: str, tensors: dict[str, torch.Tensor],
                          meta: dict[str, str]) -> None:
        from safetensors.torch import save_file

        fd, tmp = tempfile.mkstemp(dir=self.files, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())  # the rename must never publish a file still in flight
            os.replace(tmp, self.files / file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- budget -------------------------------------------------------------------------------

    def evict(self, budget_bytes: int | None = None) -> int:
        """Evict least recently used snapshots until the folder fits; returns how many."""
        with self._lock, self._transaction():
            evicted = self._evict_locked(
                self.budget_bytes if budget_bytes is None else budget_bytes, keep=None)
        self._unlink(evicted)
        return len(evicted)

    def _evict_locked(self, budget: int, keep: str | None) -> list[str]:
        (total,) = self._db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM snapshots").fetchone()
        files: list[str] = []
        if total <= budget:
            return files
        for digest, file, nbytes in self._db.execute(
                "SELECT digest, file, nbytes FROM snapshots ORDER BY last_used, created"
        ).fetchall():
            if total <= budget:
                break
            if digest == keep:
                continue
            self._db.execute("DELETE FROM snapshots WHERE digest = ?", (digest,))
            files.append(file)
            total -= nbytes
        return files

    def _unlink(self, files: list[str]) -> None:
        for file in files:
            (self.files / file).unlink(missing_ok=True)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes evicting at once serialise
        # instead of one failing halfway.
        return transaction(self._db)

    def _sweep_temp_files(self) -> None:
        cutoff = time.time() - _TMP_MAX_AGE
        for tmp in self.files.glob(".tmp-*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                pass  # another process swept it first

    # -- inspection ---------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            n, total = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM snapshots").fetchone()
        return CacheStats(snapshots=n, nbytes=total, budget=self.budget_bytes)

    def lengths(self) -> list[int]:
        """Prefix lengths cached for this model, shortest first."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT length FROM snapshots WHERE fingerprint = ? ORDER BY length",
                (self.fingerprint,))]

    def clear(self) -> None:
        """Forget every snapshot of every model in this folder."""
        self.evict(0)

    def close(self) -> None:
        with self._lock:
            self._db.close()
