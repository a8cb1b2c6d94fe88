"""The whalebone home folder: the one place that reads ``WHALEBONE_HOME``.

Sessions, jobs, the budget ledger, memory, the prefix cache, logs and settings all live under
it (``~/.whalebone`` by default). What is in it is private to its user: a task's text, a
conversation, an API spend. So the folder is made 0700 and every file whalebone writes there
0600 (:func:`private_dir`, :func:`private_file`, :func:`open_private`), whatever the umask;
files created *outside* it (a workspace, a report the user asked for) keep the user's umask.

Tests point the home at a temporary folder by setting ``WHALEBONE_HOME`` (an autouse fixture in
``tests/conftest.py``), the way simonw/llm isolates its user folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

ENV = "WHALEBONE_HOME"


def home() -> Path:
    """``$WHALEBONE_HOME``, else ``~/.whalebone``: read on every call, never cached, so a
    changed environment (a test, a daemon told another home) is seen at once."""
    return Path(os.environ.get(ENV) or "~/.whalebone").expanduser()


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder, each missing component made 0700 (``Path.mkdir(parents=True)``
    would give the parents the umask's mode). The home folder itself is tightened to 0700 even
    when it exists already: an older whalebone made it 0755."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process
            pass
        else:
            os.chmod(p, 0o700)  # mkdir's mode is masked by the umask
    if _is_home(path):
        _tighten(path, 0o700)
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists as a 0600 file (its folder private as well) without touching
    its content: for files another library opens by name (SQLite, a log handler)."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if _in_home(path):
            _tighten(path, 0o600)
        return path
    os.close(fd)
    return path


def open_private(path: str | os.PathLike[str], mode: str = "a", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for a file whalebone owns (a log, a history, a state file): created
    0600 in a private folder. ``mode`` is one of the writing modes: "a", "w" (with "b" if
    binary)."""
    path = Path(path)
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    if _in_home(path):
        _tighten(path, 0o600)
    return os.fdopen(fd, mode, **kwargs)


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path``'s content with ``text`` atomically (a reader never sees half a file),
    as a 0600 file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open_private(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _is_home(path: Path) -> bool:
    try:
        return path.resolve() == home().resolve()
    except OSError:
        return False


def _in_home(path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(home().resolve())
    except OSError:
        return False


def _tighten(path: Path, mode: int) -> None:
    """Keep only ``mode``'s bits (0700, 0600) of a file or folder of ours; one we do not own
    (a shared ledger someone else made) is left as it is."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError:
        pass
