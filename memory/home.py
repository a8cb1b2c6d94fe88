"""Where memory lives on disk: ``$WHALEBONE_HOME/memory/<scope>/``, its index and audit beside it.

Layout (``WHALEBONE_HOME`` defaults to ``~/.whalebone``)::

    memory/<scope>/…            the scope's files, plain text a person can read and edit
    memory-index/<scope>.sqlite the scope's search index (a cache, rebuilt from the files)
    memory-audit.sqlite         the audit log of every scope

A scope name is one plain name such as ``user:alice``, ``project:whalebone`` or
``agent:triage``: letters, digits and ``_ - . : @``, not starting with a dot. Scopes never nest,
so one scope's files are never part of another's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from whalebone.core.home import home
from whalebone.memory.audit import AuditLog
from whalebone.memory.scope import MemoryScope
from whalebone.memory.tool import AgentMemory
from whalebone.tools.confine import PathRefused

_SCOPE_NAME = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.:@-]{0,99}")


default_home = home  # the one reader of WHALEBONE_HOME, under the name memory exported


def check_scope_name(name: str) -> str:
    if not isinstance(name, str) or not _SCOPE_NAME.fullmatch(name):
        raise PathRefused(f"scope name {name!r} is not allowed: use letters, digits and "
                          "_ - . : @ (e.g. 'user:alice'), at most 100, not starting with '.'")
    return name


class MemoryHome:
    """The memory directory of one whalebone home: its scopes and their shared audit log."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.memory_dir = self.home / "memory"
        self.index_dir = self.home / "memory-index"
        self.audit_path = self.home / "memory-audit.sqlite"
        self._audit: AuditLog | None = None

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            self._audit = AuditLog(self.audit_path)
        return self._audit

    def scope(self, name: str, *, read_only: bool = False, **limits: Any) -> MemoryScope:
        """Open a scope (created on first use unless ``read_only``). ``limits`` go to
        :class:`MemoryScope` (max_file_bytes, max_scope_bytes, max_view_chars, …)."""
        check_scope_name(name)
        root = self.memory_dir / name
        index = self.index_dir / f"{name}.sqlite"
        for path in (root, index):
            # A link planted here (by a shell tool, say) would turn the scope into a view of
            # somewhere else; the scope's *insides* are guarded by Root, its name by this.
            if path.is_symlink():
                raise PathRefused(f"{str(path)!r} is a symbolic link; a scope is a directory")
        if read_only and not root.is_dir():
            raise PathRefused(f"memory scope {name!r} does not exist in {self.memory_dir}")
        return MemoryScope(root, name, read_only=read_only,
                           index_path=index, **limits)

    def attach(self, name: str, *, who: str = "agent", read_only: bool = False,
               **limits: Any) -> AgentMemory:
        """A scope ready for ``Agent(..., memory=home.attach("project:x", who="agent:triage"))``:
        the ``memory`` tool over it, auditing into this home's log."""
        return AgentMemory(self.scope(name, read_only=read_only, **limits), audit=self.audit,
                           who=who)

    def scopes(self) -> list[str]:
        if not self.memory_dir.is_dir():
            return []
        return sorted(p.name for p in self.memory_dir.iterdir()
                      if p.is_dir() and not p.is_symlink() and _SCOPE_NAME.fullmatch(p.name))

    def close(self) -> None:
        if self._audit is not None:
            self._audit.close()
            self._audit = None
