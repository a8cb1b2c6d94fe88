"""Directory-fd primitives under :mod:`whalebone.tools.confine`: one name, one syscall, no links.

Each function works on a name inside an already-open directory fd, never on a path string, so
no component is ever resolved twice. The policy (what to refuse, when) is in ``Root``; these
say what the kernel says.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from whalebone.tools.pathcheck import Parts, PathError, PathRefused, display

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(dfd: int, parts: Parts, alias: str | None = None) -> int:
    """Open directory ``parts[-1]`` inside ``dfd``; FileNotFoundError if it is not there.

    ``O_PATH | O_NOFOLLOW`` first pins what the name is at this instant (a link is opened as
    itself, never followed), so the verdict "a link" is certain even if the link is swapped
    away a moment later; only a directory is then opened, through the pinned handle, so a
    swap after the check changes nothing either.
    """
    try:
        pfd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise PathError(f"{quote(parts, alias)}: {e.strerror}") from None
    try:
        mode = os.fstat(pfd).st_mode
        if stat.S_ISLNK(mode):
            raise PathRefused(f"{quote(parts, alias)} is a symbolic link; links are not followed")
        if not stat.S_ISDIR(mode):
            raise PathError(f"{quote(parts, alias)} is not a directory")
        try:
            return os.open(".", DIR_FLAGS, dir_fd=pfd)
        except PermissionError:
            raise PathError(f"{quote(parts, alias)}: permission denied") from None
    finally:
        os.close(pfd)


def quote(parts: Parts, alias: str | None) -> str:
    """A path for a message, under ``alias`` when there is one."""
    return repr(f"{alias}/{display(parts)}" if alias and parts else display(parts) or alias or ".")


def lstat_at(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def kind_of(mode: int) -> str:
    """What a mode names, for a message: 'a FIFO', 'a device file'…"""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def unlink_quietly(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(sfd: int, src: str, dfd: int, dst: str) -> None:
    """rename(2) that fails with EEXIST rather than replace, atomically where the kernel can."""
    if _renameat2 is not None:
        rc = _renameat2(sfd, os.fsencode(src), dfd, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: a filesystem without the flag
            raise OSError(err, os.strerror(err), dst)
    if lstat_at(dfd, dst) is not None:
        raise FileExistsError(errno.EEXIST, "exists", dst)
    try:  # link + unlink is atomic for files; a directory has only the check above
        os.link(src, dst, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        os.unlink(src, dir_fd=sfd)
    except (PermissionError, IsADirectoryError):
        os.rename(src, dst, src_dir_fd=sfd, dst_dir_fd=dfd)
