"""The prefix cache on disk: sequence states at prefix lengths, shared across processes.

A snapshot is everything a sequence carries after its first ``P`` tokens (for V4: the window
rings, compressed entries, indexer keys and compressor pending rows; see ``engine/v4/state.py``)
plus the logits of token ``P`` and the ``P`` token ids themselves. Restoring it and prefilling
only the rest of a prompt gives bit-identical results to prefilling the whole prompt, at the
cost of reading a file.

Layout under the cache folder::

    index.sqlite                  one row per snapshot: model fingerprint, length, digest,
                                  file, size, SHA-256 of the file, last use (WAL mode: many
                                  readers, one writer)
    snapshots/<digest>.safetensors  the tensors; metadata says format, fingerprint, length

The key is a BLAKE2b digest of (model fingerprint, token ids of the prefix). Finding the longest
cached prefix of a prompt hashes the prompt once, incrementally, stopping at each length the
index holds for this model, so a lookup costs one pass over the ids plus one row per snapshot of
this model. A digest match is not trusted: the file's bytes must hash to the SHA-256 its index
row recorded when it was written (a torn write, a flipped bit or a garbled header never gets as
far as parsing), its fingerprint must be ours and the ids stored in it must equal the prompt's
first ``P`` ids, or the snapshot is ignored with one :class:`SnapshotIgnored` warning and dropped
from the index; a corrupt file is never loaded into the model.

The cache is only ever an optimisation. An index that is not a database (garbage bytes, a
garbled header, a corrupt page, a directory) is moved aside to ``index.sqlite.damaged`` and the
cache starts empty; a folder that cannot be used at all (the path is a file, the disk is full or
read-only) turns the cache off for the rest of the process with one :class:`PrefixCacheWarning`,
and every request is prefilled instead. Files the index does not know (left by an index reset or
a writer killed mid-publish) are swept, so the folder stays within its budget.

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
import threading
import time
import warnings
from array import array
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from whalebone.core.errors import storage_problem
from whalebone.core.home import private_dir
from whalebone.core.sqlite import transaction
from whalebone.engine.base import EngineError
from whalebone.engine.runtime.cache_files import (
    ASIDE,
    Damaged,
    Unusable,
    connect,
    is_corruption,
    metadata,
    move_aside,
    open_index,
    read_verified,
    remove,
    sha256,
    sweep_temp_files,
    write_temp,
)

FORMAT = "whalebone-prefix/2"  # /2: files checksummed in the index
DEFAULT_BUDGET = 2 * 1024**3
IDS_KEY = "__ids__"
LOGITS_KEY = "__logits__"
_TMP_MAX_AGE = 3600.0  # temp files older than this were left by a crashed writer



class PrefixCacheError(EngineError):
    """The cache was asked for something impossible (a negative budget, reserved names)."""


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
    """Snapshots of sequence states for one model (``fingerprint``) in a shared folder.

    ``off`` says why the cache is not in use (None while it is): every lookup then misses and
    every store is skipped, so a request never fails because of the cache."""

    def __init__(self, root: str | Path, *, fingerprint: str,
                 budget_bytes: int = DEFAULT_BUDGET) -> None:
        if budget_bytes < 0:
            raise PrefixCacheError("a cache budget cannot be negative")
        self.root = Path(root).expanduser()
        self.fingerprint = fingerprint
        self.budget_bytes = budget_bytes
        self.files = self.root / "snapshots"
        self.index = self.root / "index.sqlite"
        self.off: str | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used from the engine's worker threads
        try:
            try:
                private_dir(self.files)
            except OSError as e:
                raise Unusable(e) from e
            self._db, damage = open_index(self.index)
            if damage is not None:
                self._warn_damaged(damage)
            sweep_temp_files(self.files, _TMP_MAX_AGE)
            with self._lock, self._transaction():
                orphans = self._orphans_locked()
            self._unlink(orphans)
        except (Unusable, OSError, sqlite3.Error) as e:
            self._turn_off(f"cannot use {self.root}: {e}")

    # -- opening and repairing the index --------------------------------------------------

    def _warn_damaged(self, reason: str) -> None:
        warnings.warn(f"prefix cache: the index in {self.root} was damaged ({reason}); moved "
                      f"it to {ASIDE} and started an empty cache", PrefixCacheWarning,
                      stacklevel=4)

    def _turn_off(self, reason: str) -> None:
        if self.off is not None:
            return
        self.off = reason
        warnings.warn(f"prefix cache off, every prompt is prefilled: {reason}",
                      PrefixCacheWarning, stacklevel=4)
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def _failed(self, what: str, e: BaseException) -> None:
        """A read or write of the cache failed mid-request: repair a damaged index, turn the
        cache off when the disk is the problem, or just warn (a lock held too long)."""
        if is_corruption(e) and self._db is not None:
            with self._lock:
                self._db.close()
                self._db = None
                try:
                    move_aside(self.index)
                    self._db = connect(self.index)
                    self._warn_damaged(str(e))
                except (OSError, sqlite3.Error) as again:
                    self._db = None
                    self._turn_off(f"the index could not be rebuilt: {again}")
            return
        problem = storage_problem(e)
        if problem is not None or isinstance(e, OSError):  # the folder itself is unusable
            self._turn_off(f"{what}: {problem or e}")
        else:
            warnings.warn(f"prefix cache: {what}, going on without it: {e}",
                          PrefixCacheWarning, stacklevel=4)

    # -- digests ------------------------------------------------------------------------------

    def _hasher(self) -> hashlib.blake2b:
        h = hashlib.blake2b(digest_size=20)
        h.update(FORMAT.encode() + b"\0" + self.fingerprint.encode() + b"\0")
        return h

    def digest(self, ids: Sequence[int]) -> str:
        h = self._hasher()
        h.update(_ids_bytes(ids))
        return h.hexdigest()

    def _path(self, digest: str) -> Path:
        # The file name is derived, never read from the index: a hostile or garbled row must
        # not name a path outside the folder.
        return self.files / f"{digest}.safetensors"

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, ids: Sequence[int], *, max_length: int | None = None) -> CachedPrefix | None:
        """The longest cached, verified prefix of ``ids`` (at most ``max_length`` tokens)."""
        if self.off is not None:
            return None
        try:
            return self._lookup(ids, max_length)
        except (sqlite3.Error, OSError) as e:
            self._failed("lookup failed", e)
            return None

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            if self._db is None:
                raise sqlite3.OperationalError("the index is closed")
            return self._db.execute(sql, args).fetchall()

    def _lookup(self, ids: Sequence[int], max_length: int | None) -> CachedPrefix | None:
        limit = len(ids) if max_length is None else min(max_length, len(ids))
        if limit <= 0:
            return None
        rows = self._query(
            "SELECT DISTINCT length FROM snapshots WHERE fingerprint = ? AND length <= ? "
            "ORDER BY length", (self.fingerprint, limit))
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
            row = self._query("SELECT nbytes, checksum FROM snapshots WHERE digest = ?",
                              (digest,))
            if not row:
                continue
            nbytes, checksum = row[0]
            hit = self._load(digest, int(nbytes), str(checksum), ids[:length])
            if hit is not None:
                try:
                    self._touch(digest)
                except (sqlite3.Error, OSError) as e:  # the hit is good: only its LRU mark failed
                    self._failed("marking a snapshot used failed", e)
                return hit
        return None

    def _load(self, digest: str, nbytes: int, checksum: str,
              ids: Sequence[int]) -> CachedPrefix | None:
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = self._path(digest)
        try:
            data = read_verified(path, nbytes, checksum)
            meta = metadata(data)
            if meta.get("format") != FORMAT:
                raise Damaged(f"not a {FORMAT} snapshot")
            if meta.get("fingerprint") != self.fingerprint:
                raise Damaged("written for another model (fingerprint "
                              f"{str(meta.get('fingerprint', '?'))[:16]})")
            tensors = load(data)
        except Damaged as e:
            return self.discard(digest, f"{path.name}: {e}")
        except (SafetensorError, ValueError, RuntimeError, TypeError) as e:
            return self.discard(digest, f"{path.name}: unreadable ({e})")
        stored = tensors.pop(IDS_KEY, None)
        logits = tensors.pop(LOGITS_KEY, None)
        if stored is None or logits is None:
            return self.discard(digest, f"{path.name}: ids or logits missing")
        if stored.dtype != torch.int32 or stored.tolist() != list(ids):
            return self.discard(digest, f"{path.name}: token ids differ from the prompt's "
                                "(digest collision or corrupt file)")
        if logits.dim() != 1 or not logits.is_floating_point():
            return self.discard(digest, f"{path.name}: logits of shape {tuple(logits.shape)} "
                                f"and type {logits.dtype}")
        return CachedPrefix(length=len(ids), digest=digest, state=tensors, logits=logits)

    def discard(self, digest: str, reason: str) -> None:
        """Drop a snapshot that must not be used, with a :class:`SnapshotIgnored` warning."""
        warnings.warn(f"prefix cache: ignored a snapshot: {reason}", SnapshotIgnored,
                      stacklevel=3)
        try:
            self._query("DELETE FROM snapshots WHERE digest = ?", (digest,))
            remove(self._path(digest))
        except (sqlite3.Error, OSError) as e:
            self._failed("dropping a snapshot failed", e)
        return None

    def _touch(self, digest: str) -> None:
        self._query("UPDATE snapshots SET last_used = ? WHERE digest = ?",
                    (time.time(), digest))

    # -- store --------------------------------------------------------------------------------

    def contains(self, ids: Sequence[int]) -> bool:
        if self.off is not None:
            return False
        try:
            return bool(self._query("SELECT 1 FROM snapshots WHERE digest = ?",
                                    (self.digest(ids),)))
        except sqlite3.Error as e:
            self._failed("lookup failed", e)
            return False

    def store(self, ids: Sequence[int], state: Mapping[str, torch.Tensor],
              logits: torch.Tensor) -> bool:
        """Snapshot the state after ``ids``; False when it is already cached, could never fit
        the budget, or could not be written (a :class:`PrefixCacheWarning` says why). Evicts
        least recently used snapshots to stay within the budget."""
        if not ids or self.off is not None:
            return False
        try:
            return self._store(ids, state, logits)
        except (OSError, sqlite3.Error) as e:
            self._failed(f"snapshot of {len(ids)} tokens not written", e)
            return False

    def _store(self, ids: Sequence[int], state: Mapping[str, torch.Tensor],
               logits: torch.Tensor) -> bool:
        from safetensors.torch import save

        digest = self.digest(ids)
        if self.contains(ids):
            self._touch(digest)
            return False
        tensors = {k: v.detach().contiguous() for k, v in state.items()}
        if IDS_KEY in tensors or LOGITS_KEY in tensors:
            raise PrefixCacheError(f"state tensor names {IDS_KEY}/{LOGITS_KEY} are reserved")
        tensors[IDS_KEY] = torch.tensor(list(ids), dtype=torch.int32)
        tensors[LOGITS_KEY] = logits.detach().reshape(-1).contiguous()
        if sum(t.numel() * t.element_size() for t in tensors.values()) > self.budget_bytes:
            return False
        data = save(tensors, metadata={"format": FORMAT, "fingerprint": self.fingerprint,
                                       "length": str(len(ids))})
        if len(data) > self.budget_bytes:
            return False
        tmp = write_temp(self.files, data)
        now = time.time()
        final = self._path(digest)
        published = False
        try:
            with self._lock, self._transaction():
                # Published under the write lock, so an orphan sweep (which holds it too) never
                # sees a file between its rename and its index row.
                os.replace(tmp, final)
                published = True
                self._db_().execute(
                    "INSERT OR REPLACE INTO snapshots (digest, fingerprint, length, file, nbytes,"
                    " created, last_used, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (digest, self.fingerprint, len(ids), final.name, len(data), now, now,
                     sha256(data)))
                evicted = self._evict_locked(self.budget_bytes, keep=digest)
                evicted += self._orphans_locked()
        except BaseException:
            remove(final if published else Path(tmp))  # the row was rolled back
            raise
        self._unlink(evicted)
        return True

    def _db_(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the index is closed")
        return self._db

    # -- budget -------------------------------------------------------------------------------

    def evict(self, budget_bytes: int | None = None) -> int:
        """Evict least recently used snapshots until the folder fits; returns how many."""
        if self.off is not None:
            return 0
        with self._lock, self._transaction():
            evicted = self._evict_locked(
                self.budget_bytes if budget_bytes is None else budget_bytes, keep=None)
        self._unlink(evicted)
        return len(evicted)

    def _evict_locked(self, budget: int, keep: str | None) -> list[str]:
        db = self._db_()
        (total,) = db.execute("SELECT COALESCE(SUM(nbytes), 0) FROM snapshots").fetchone()
        files: list[str] = []
        if total <= budget:
            return files
        for digest, nbytes in db.execute(
                "SELECT digest, nbytes FROM snapshots ORDER BY last_used, created").fetchall():
            if total <= budget:
                break
            if digest == keep:
                continue
            db.execute("DELETE FROM snapshots WHERE digest = ?", (digest,))
            files.append(f"{digest}.safetensors")
            total -= nbytes
        return files

    def _orphans_locked(self) -> list[str]:
        """Snapshot files the index does not know (an index reset, a writer killed between
        publishing a file and indexing it): they could never be used or evicted otherwise."""
        known = {f"{r[0]}.safetensors" for r in self._db_().execute(
            "SELECT digest FROM snapshots")}
        return [e.name for e in os.scandir(self.files)
                if not e.name.startswith(".tmp-") and e.name not in known]
        # (.tmp- files are writers' files in flight: _sweep_temp_files ages those out)

    def _unlink(self, names: list[str]) -> None:
        for name in names:
            try:
                remove(self.files / name)
            except OSError:
                pass  # another process removed it first

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes evicting at once serialise
        # instead of one failing halfway.
        return transaction(self._db_())

    # -- inspection ---------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        if self.off is not None:
            return CacheStats(snapshots=0, nbytes=0, budget=self.budget_bytes)
        ((n, total),) = self._query("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM snapshots")
        return CacheStats(snapshots=n, nbytes=total, budget=self.budget_bytes)

    def lengths(self) -> list[int]:
        """Prefix lengths cached for this model, shortest first."""
        if self.off is not None:
            return []
        return [r[0] for r in self._query(
            "SELECT length FROM snapshots WHERE fingerprint = ? ORDER BY length",
            (self.fingerprint,))]

    def clear(self) -> None:
        """Forget every snapshot of every model in this folder."""
        self.evict(0)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

