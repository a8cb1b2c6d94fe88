"""Has anything in a memory scope changed since we last looked? (Linux inotify, via ctypes.)

Keeping the search index in step with a person's edits means comparing every file's size and
mtime, a walk whose cost grows with the scope (about 10 ms per 1,000 files). With a watch on
every directory of the scope, "nothing changed" is one non-blocking read of the inotify fd,
so the index can check on *every* use instead of every few seconds.

Why nothing is missed: a full walk watches each directory as it reaches it, before looking at
its files, and events queue in the kernel until read. So a change is either seen by the walk
itself or queued as an event: in a watched directory, or in one created later, whose creation
was an event in its watched parent. Any event, a queue overflow, a watch that could not be
added, or no inotify at all (another OS, the per-user instance limit) means "maybe changed":
the caller walks.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from pathlib import Path

# <sys/inotify.h>
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
         | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR | _IN_DONT_FOLLOW)

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _init1 = _libc.inotify_init1
    _add_watch = _libc.inotify_add_watch
    _add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
except (OSError, AttributeError):  # not Linux: every check says "maybe changed"
    _init1 = _add_watch = None


class ChangeWatch:
    """Watches the directories of one tree; :meth:`changed` says whether to walk it again."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._armed = False
        self._complete = False
        self._root = Path(".")
        if _init1 is not None:
            fd = _init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                # Instances are few (128 per user by default): one forgotten without close()
                # gives its fd back when collected.
                self._finalizer = weakref.finalize(self, os.close, fd)

    @classmethod
    def unavailable(cls) -> ChangeWatch:
        """A watch that always says "maybe changed" (to compare with, or where inotify is
        not wanted)."""
        watch = cls.__new__(cls)
        watch._fd, watch._armed, watch._complete, watch._root = None, False, False, Path(".")
        return watch

    @property
    def available(self) -> bool:
        return self._fd is not None

    def begin(self, root: Path) -> None:
        """A full walk starts: :meth:`add` each directory as the walk reaches it, *before*
        looking at its files, then :meth:`end`."""
        self._root = root
        self._complete = self._fd is not None

    def add(self, parts: tuple[str, ...]) -> None:
        """Watch one directory (adding a watch twice is harmless; a directory that goes away
        drops its watch by itself)."""
        if self._fd is None:
            return
        if _add_watch(self._fd, os.fsencode(self._root.joinpath(*parts)), _MASK) < 0:
            self._complete = False  # vanished meanwhile, or the watch limit: walk every time

    def end(self) -> None:
        self._armed = self._complete

    def changed(self) -> bool:
        """True unless the tree is known unchanged since :meth:`arm`. Reading the events
        consumes them: the caller must walk when this says True."""
        if self._fd is None or not self._armed:
            return True
        seen = False
        while True:
            try:
                if not os.read(self._fd, 65536):
                    break
                seen = True
            except BlockingIOError:
                break
        if seen:
            self._armed = False  # until the walk that follows re-arms
        return seen

    def close(self) -> None:
        if self._fd is not None:
            self._finalizer()  # closes the fd once, whichever comes first
            self._fd = None
