"""Path confinement: every file operation stays inside one root directory, or is refused.

This is the one place in whalebone where a path from outside (a model's tool call, a person's
command) becomes a file operation. :class:`Root` owns a directory; its methods take the
caller's path as text and work on it in two steps:

1. :meth:`Root.resolve` checks the *text* (:mod:`whalebone.tools.pathcheck`): no NUL or
   control characters, no backslashes, no ``..``, no absolute path (except the root's own
   alias, e.g. ``/memories``), no percent-escapes, no Unicode look-alikes of ``.``, ``/`` or
   ``\\`` (anything NFKC folds into one, plus the slash-like signs NFKC leaves alone), no
   invisible format characters. It returns the path's components.
2. Every operation then walks those components from an open file descriptor of the root with
   ``openat(…, O_NOFOLLOW | O_DIRECTORY)``, one component at a time, so a symbolic link is
   refused wherever it appears, including one swapped in between a check and its use: the
   kernel, not an earlier look at the path, decides what each name is when it is opened. Only
   regular files and directories are ever opened (never devices, FIFOs or sockets), and a
   regular file with more than one hard link is refused unless ``allow_hardlinks``, since its
   other name may lie outside the root.

Writes are atomic (a temp file in the same directory, fsync, then rename), and renames never
overwrite (``renameat2(RENAME_NOREPLACE)``). A read-only root refuses every change. Linux only.
The fd-relative system calls themselves are in :mod:`whalebone.tools.dirfd`.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from whalebone.core.home import private_dir
from whalebone.tools.dirfd import (
    DIR_FLAGS,
    kind_of,
    lstat_at,
    open_dir,
    quote,
    rename_noreplace,
    unlink_quietly,
)
from whalebone.tools.pathcheck import Parts, PathError, PathRefused, display, split_path

__all__ = ["Entry", "Parts", "PathError", "PathRefused", "Root", "display", "split_path"]

@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry, described without following it."""

    name: str
    kind: str  # "file", "dir", "symlink" or "other"
    size: int
    mtime_ns: int


class Root:
    """A directory that confined operations cannot leave.

    ``alias`` is an absolute prefix that stands for the root itself (``/memories`` for the
    memory tool, whose paths models write that way); every other absolute path is refused.
    A ``private`` root (memory, under the home folder) makes its folders 0700 and its files
    0600; others follow the umask, as any program writing a workspace does.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False,
                 alias: str | None = None, allow_hardlinks: bool = False,
                 create: bool = False, private: bool = False) -> None:
        root = Path(path)
        self.file_mode, self.dir_mode = (0o600, 0o700) if private else (0o644, 0o755)
        if create:
            if private:
                private_dir(root)
            else:
                root.mkdir(parents=True, exist_ok=True)
        # The root itself is configuration, not input: resolve it once, then never by name.
        self.path = root.resolve(strict=True)
        if not self.path.is_dir():
            raise PathError(f"confinement root {str(self.path)!r} is not a directory")
        self.read_only = read_only
        self.alias = alias.rstrip("/") if alias else None
        self.allow_hardlinks = allow_hardlinks

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"Root({str(self.path)!r}, {mode})"

    # -- checking the text ------------------------------------------------------------------

    def resolve(self, user_path: str | Parts) -> Parts:
        """The components of ``user_path`` relative to the root, or :class:`PathRefused`.

        ``""``, ``"."`` and the alias name the root itself (``()``). Already-resolved parts
        pass through unchanged after the same checks. See :func:`~whalebone.tools.pathcheck.
        split_path` for what is refused.
        """
        return split_path(user_path, self.alias)

    # -- reading ----------------------------------------------------------------------------

    def stat(self, user_path: str | Parts) -> os.stat_result:
        """The entry's status, not following a final symbolic link."""
        parts = self.resolve(user_path)
        if not parts:
            return os.stat(self.path)
        with self._parent(parts) as dfd:
            try:
                return os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise PathError(f"{self._q(parts)} does not exist") from None

    def exists(self, user_path: str | Parts) -> bool:
        try:
            self.stat(user_path)
        except PathRefused:
            raise
        except PathError:
            return False
        return True

    def is_dir(self, user_path: str | Parts) -> bool:
        try:
            return stat.S_ISDIR(self.stat(user_path).st_mode)
        except PathRefused:
            raise
        except PathError:
            return False

    def read_bytes(self, user_path: str | Parts, *, max_bytes: int | None = None) -> bytes:
        """A regular file's bytes; :class:`PathError` if it holds more than ``max_bytes``."""
        parts = self.resolve(user_path)
        fd = self.open(parts, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if max_bytes is not None and size > max_bytes:
                raise PathError(f"{self._q(parts)} is {size} bytes, over the cap of "
                                f"{max_bytes}")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_text(self, user_path: str | Parts, *, max_bytes: int | None = None) -> str:
        data = self.read_bytes(user_path, max_bytes=max_bytes)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise PathError(f"{self._q(self.resolve(user_path))} is not UTF-8 text") from None

    def listdir(self, user_path: str | Parts = "") -> list[Entry]:
        """The entries of a directory, sorted by name, none of them followed."""
        parts = self.resolve(user_path)
        with self._dir(parts) as dfd, os.scandir(dfd) as it:
            entries = [_entry(e) for e in it]
        return sorted(entries, key=lambda e: e.name)

    def walk(self, user_path: str | Parts = "", *, directories: bool = False
             ) -> Iterator[tuple[Parts, os.stat_result]]:
        """Every regular file under a directory, as (parts, status); links are not followed.
        With ``directories``, each directory walked (the start included) comes first too."""
        base = self.resolve(user_path)
        with self._dir(base) as dfd:
            for top, _dirs, files, tfd in os.fwalk(".", dir_fd=dfd, follow_symlinks=False):
                prefix = base + tuple(p for p in top.split("/") if p not in ("", "."))
                if directories:
                    yield prefix, os.fstat(tfd)
                for name in files:
                    try:
                        st = os.stat(name, dir_fd=tfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we walked
                    if stat.S_ISREG(st.st_mode):
                        yield (*prefix, name), st

    def open(self, user_path: str | Parts, flags: int = os.O_RDONLY, mode: int | None = None
             ) -> int:
        """A file descriptor for a regular file inside the root (the caller closes it).

        ``flags`` may add ``O_CREAT``/``O_EXCL``/``O_TRUNC``/``O_APPEND``; writing flags are
        refused on a read-only root. ``O_NOFOLLOW`` is always added.
        """
        parts = self.resolve(user_path)
        if not parts:
            raise PathError("the root is a directory, not a file")
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        if writing:
            self._check_writable(parts)
        with self._parent(parts) as dfd:
            return self._open_file(dfd, parts, flags,
                                   self.file_mode if mode is None else mode)

    # -- writing ----------------------------------------------------------------------------

    def write_atomic(self, user_path: str | Parts, data: bytes | str, *,
                     exclusive: bool = False, parents: bool = True, mode: int | None = None
                     ) -> int:
        """Write a whole file so that readers see the old content or the new, never half.

        ``exclusive`` refuses to replace an existing entry. Missing parent directories are
        created when ``parents``. Returns the number of bytes written.
        """
        parts = self.resolve(user_path)
        self._check_writable(parts)
        if not parts:
            raise PathError("the root is a directory, not a file")
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        with self._parent(parts, create=parents) as dfd:
            name = parts[-1]
            existing = lstat_at(dfd, name)
            if existing is not None:
                if exclusive:
                    raise PathError(f"{self._q(parts)} already exists")
                if not stat.S_ISREG(existing.st_mode):
                    raise PathRefused(f"{self._q(parts)} is {kind_of(existing.st_mode)}, "
                                      "not a regular file")
            tmp = f".{secrets.token_hex(8)}.whalebone-tmp"  # short: the name may be 255 bytes
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, self.file_mode if mode is None else mode, dir_fd=dfd)
            try:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if exclusive:
                    # link() fails if the name exists, even if it appeared a moment ago.
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    os.unlink(tmp, dir_fd=dfd)
                else:
                    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except FileExistsError:
                os.unlink(tmp, dir_fd=dfd)
                raise PathError(f"{self._q(parts)} already exists") from None
            except BaseException:
                unlink_quietly(tmp, dfd)
                raise
            os.fsync(dfd)  # the rename itself is durable once the directory is
        return len(payload)

    def mkdir(self, user_path: str | Parts, *, exist_ok: bool = True) -> None:
        parts = self.resolve(user_path)
        self._check_writable(parts)
        if not parts:
            return
        with self._parent(parts, create=True) as dfd:
            try:
                os.mkdir(parts[-1], self.dir_mode, dir_fd=dfd)
            except FileExistsError:
                st = lstat_at(dfd, parts[-1])
                if not exist_ok or st is None or not stat.S_ISDIR(st.st_mode):
                    raise PathError(f"{self._q(parts)} already exists") from None

    def unlink(self, user_path: str | Parts) -> None:
        """Remove a file (or a symbolic link itself, which is never followed)."""
        parts = self.resolve(user_path)
        self._check_writable(parts)
        if not parts:
            raise PathRefused("the root itself cannot be removed")
        with self._parent(parts) as dfd:
            try:
                os.unlink(parts[-1], dir_fd=dfd)
            except FileNotFoundError:
                raise PathError(f"{self._q(parts)} does not exist") from None
            except IsADirectoryError:
                raise PathError(f"{self._q(parts)} is a directory") from None

    def remove_tree(self, user_path: str | Parts) -> None:
        """Remove a directory and everything in it, without following any link inside it."""
        parts = self.resolve(user_path)
        self._check_writable(parts)
        if not parts:
            raise PathRefused("the root itself cannot be removed")
        with self._parent(parts) as dfd:
            st = lstat_at(dfd, parts[-1])
            if st is None:
                raise PathError(f"{self._q(parts)} does not exist")
            if not stat.S_ISDIR(st.st_mode):
                raise PathError(f"{self._q(parts)} is not a directory")
            # With dir_fd, rmtree takes its fd-based path that never follows a swapped link.
            shutil.rmtree(parts[-1], dir_fd=dfd)

    def rename(self, src: str | Parts, dst: str | Parts, *, parents: bool = True) -> None:
        """Move ``src`` to ``dst``; refused if ``dst`` exists, even if it appears meanwhile."""
        sparts, dparts = self.resolve(src), self.resolve(dst)
        self._check_writable(sparts)
        if not sparts or not dparts:
            raise PathRefused("the root itself cannot be renamed or replaced")
        if dparts[: len(sparts)] == sparts:
            raise PathError(f"cannot move {self._q(sparts)} inside itself")
        with self._parent(sparts) as sfd, self._parent(dparts, create=parents) as dfd:
            if lstat_at(sfd, sparts[-1]) is None:
                raise PathError(f"{self._q(sparts)} does not exist")
            try:
                rename_noreplace(sfd, sparts[-1], dfd, dparts[-1])
            except FileExistsError:
                raise PathError(f"{self._q(dparts)} already exists") from None

    # -- walking ------------------------------------------------------------------------------

    def _q(self, parts: Parts) -> str:
        """A path for a message, written the way the caller writes paths (under the alias)."""
        return quote(parts, self.alias)

    def _check_writable(self, parts: Parts) -> None:
        if self.read_only:
            raise PathRefused(f"{self._q(parts) if parts else 'the root'}: this root is read-only")

    @contextmanager
    def _dir(self, parts: Parts, *, create: bool = False) -> Iterator[int]:
        """An fd of the directory ``parts``, reached one component at a time, links refused."""
        fd = os.open(self.path, DIR_FLAGS)
        try:
            for i in range(len(parts)):
                here = parts[: i + 1]
                try:
                    nfd = open_dir(fd, here, self.alias)
                except FileNotFoundError:
                    if not create:
                        raise PathError(f"{self._q(here)} does not exist") from None
                    try:
                        os.mkdir(here[-1], self.dir_mode, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile: opened (and checked) just below
                    try:
                        nfd = open_dir(fd, here, self.alias)
                    except FileNotFoundError:
                        raise PathError(f"{self._q(here)} vanished while it was made") from None
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def _parent(self, parts: Parts, *, create: bool = False) -> AbstractContextManager[int]:
        return self._dir(parts[:-1], create=create)

    def _open_file(self, dfd: int, parts: Parts, flags: int, mode: int) -> int:
        name = parts[-1]
        before = lstat_at(dfd, name)
        if before is not None and not stat.S_ISREG(before.st_mode):
            if stat.S_ISLNK(before.st_mode):
                raise PathRefused(f"{self._q(parts)} is a symbolic link; links are not followed")
            raise PathRefused(f"{self._q(parts)} is {kind_of(before.st_mode)}, not a regular file")
        # O_NONBLOCK: should a FIFO be swapped in after the check, opening it must not hang;
        # fstat below then refuses it. O_TRUNC waits until the file has passed the checks.
        truncate = flags & os.O_TRUNC
        try:
            fd = os.open(name, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, mode, dir_fd=dfd)
        except FileNotFoundError:
            raise PathError(f"{self._q(parts)} does not exist") from None
        except FileExistsError:
            raise PathError(f"{self._q(parts)} already exists") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise PathRefused(f"{self._q(parts)} is a symbolic link; links are not "
                                  "followed") from None
            raise PathError(f"{self._q(parts)}: {e.strerror}") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = f"is {kind_of(st.st_mode)}, not a regular file"
        elif st.st_nlink > 1 and not self.allow_hardlinks:
            problem = "has other hard links, which may lie outside the root"
        if problem:
            os.close(fd)
            raise PathRefused(f"{self._q(parts)} {problem}")
        os.set_blocking(fd, True)
        if truncate:
            os.ftruncate(fd, 0)
        return fd


def _entry(e: os.DirEntry[str]) -> Entry:
    st = e.stat(follow_symlinks=False)
    mode = st.st_mode
    kind = ("symlink" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode)
            else "file" if stat.S_ISREG(mode) else "other")
    return Entry(e.name, kind, st.st_size, st.st_mtime_ns)
