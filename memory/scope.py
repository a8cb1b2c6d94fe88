"""A memory scope: one directory of plain files, and the commands that read and change it.

The commands and their semantics are those of Anthropic's memory tool, which models already
know: ``view`` (a directory two levels deep with sizes, or a file with line numbers and an
optional ``view_range``), ``create`` (refuses to overwrite), ``str_replace`` (the old text must
occur exactly once), ``insert`` (after line N, 0 = at the top), ``delete`` (a file or a
directory), ``rename`` (refuses to overwrite); plus ``search`` (words or an exact phrase,
ranked, with file and line).

Every path goes through :class:`whalebone.tools.confine.Root`, with ``/memories`` standing for
the scope's root. Names starting with ``.`` are refused: they hold the temp files of atomic
writes and are left out of listings and search. Each file is capped at ``max_file_bytes`` and
the scope at ``max_scope_bytes``; a file view shows at most ``max_view_chars`` and says how to
ask for the rest. Commands return plain text; :mod:`whalebone.memory.tool` neutralises it and
frames it as data before a model sees it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from whalebone.memory.index import Hit, SearchIndex, exclusive_lock, is_hidden
from whalebone.memory.view import render_file, render_tree
from whalebone.tools.confine import Parts, PathError, PathRefused, Root, display
from whalebone.tools.registry import ToolError

ALIAS = "/memories"


class MemoryLimitError(PathRefused):
    """A write would take a file or the scope past its size cap."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command produced: text for the reader, the path it touched, bytes moved, and
    whether ``text`` holds stored memory content (which is framed as data for a model)."""

    text: str
    path: str
    bytes: int = 0
    is_content: bool = False


class MemoryScope:
    """One scope (per user, per project, per agent…) rooted at a directory."""

    def __init__(self, root: str | os.PathLike[str], name: str, *, read_only: bool = False,
                 max_file_bytes: int = 256 << 10, max_scope_bytes: int = 64 << 20,
                 max_view_chars: int = 20_000, index_path: str | os.PathLike[str] | None = None,
                 rescan_interval: float = 1.0) -> None:
        self.name = name
        self.root = Root(root, read_only=read_only, alias=ALIAS, create=not read_only,
                         private=True)
        self.read_only = read_only
        self.max_file_bytes = max_file_bytes
        self.max_scope_bytes = max_scope_bytes
        self.max_view_chars = max_view_chars
        # The index lives beside the scope, never inside it: memory holds only memory.
        index_path = Path(index_path) if index_path else (
            self.root.path.parent / ".index" / f"{self.root.path.name}.sqlite")
        self.index = SearchIndex(self.root, index_path, rescan_interval=rescan_interval,
                                 max_file_bytes=max(max_file_bytes, 16 << 20))
        self._lock_path = index_path.with_suffix(".lock")
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"MemoryScope({self.name!r}, {self.root!r})"

    def close(self) -> None:
        self.index.close()

    def shown(self, parts: Parts) -> str:
        """How a path is written back to the model: under ``/memories``."""
        return f"{ALIAS}/{display(parts)}" if parts else ALIAS

    def resolve(self, path: str) -> Parts:
        parts = self.root.resolve(path)
        if is_hidden(parts):
            raise PathRefused(f"path {path!r}: names starting with '.' are reserved")
        return parts

    # -- reading ----------------------------------------------------------------------------

    def view(self, path: str = ALIAS, view_range: list[int] | None = None) -> Outcome:
        parts = self.resolve(path)
        if self.root.is_dir(parts):
            if view_range is not None:
                raise ToolError("view_range applies to files, not directories")
            text = render_tree(self.root, parts, self.shown)
            return Outcome(text, self.shown(parts), len(text.encode()), is_content=True)
        text = self.root.read_text(parts, max_bytes=self.index.max_file_bytes)
        body = render_file(text, self.shown(parts), view_range, self.max_view_chars)
        return Outcome(body, self.shown(parts), len(body.encode()), is_content=True)

    def search(self, query: str, *, path: str = ALIAS, phrase: bool = False,
               limit: int = 20) -> Outcome:
        parts = self.resolve(path)
        if not query.strip():
            raise ToolError("search needs a query with at least one word")
        limit = max(1, min(limit, 100))
        hits = self.index.search(query, phrase=phrase, under=parts, limit=limit)
        kind = "phrase" if phrase else "words"
        if not hits:
            return Outcome(f"No memory matches {kind} {query!r} in {self.shown(parts)}.",
                           self.shown(parts))
        lines = [f"{len(hits)} match(es) for {kind} {query!r} in {self.shown(parts)}, "
                 "best first (file:line: text):"]
        lines += [_hit_line(h) for h in hits]
        text = "\n".join(lines)
        return Outcome(text, self.shown(parts), len(text.encode()), is_content=True)

    # -- writing ----------------------------------------------------------------------------

    def create(self, path: str, file_text: str) -> Outcome:
        parts = self._writable(path)
        with self._writing():
            if self.root.exists(parts):
                raise PathError(f"{self.shown(parts)} already exists; use str_replace or "
                                "insert to change it, or delete it first")
            data = file_text.encode("utf-8")
            self._check_caps(parts, len(data), old_size=0)
            n = self.root.write_atomic(parts, data, exclusive=True)
            self.index.refresh(parts)
        return Outcome(f"File created successfully at: {self.shown(parts)}", self.shown(parts), n)

    def str_replace(self, path: str, old_str: str, new_str: str) -> Outcome:
        parts = self._writable(path)
        if not old_str:
            raise ToolError("old_str must not be empty")
        with self._writing():
            text, st = self._read_for_change(parts)
            count = text.count(old_str)
            if count == 0:
                raise ToolError(f"No replacement was performed: old_str did not appear "
                                f"verbatim in {self.shown(parts)}")
            if count > 1:
                lines = _lines_of(text, old_str)
                raise ToolError(f"No replacement was performed: old_str occurs {count} times "
                                f"in {self.shown(parts)} (lines {lines}); make it unique")
            new_text = text.replace(old_str, new_str, 1)
            n = self._write_change(parts, new_text, st)
        first = text[: text.index(old_str)].count("\n") + 1
        return Outcome(f"The memory file {self.shown(parts)} has been edited (from line "
                       f"{first}).", self.shown(parts), n)

    def insert(self, path: str, insert_line: int, insert_text: str) -> Outcome:
        parts = self._writable(path)
        with self._writing():
            text, st = self._read_for_change(parts)
            lines = text.splitlines(keepends=True)
            if not 0 <= insert_line <= len(lines):
                raise ToolError(f"invalid insert_line {insert_line}: it must be within "
                                f"[0, {len(lines)}] for {self.shown(parts)}")
            if lines and not lines[-1].endswith("\n") and insert_line == len(lines):
                lines[-1] += "\n"
            block = insert_text if insert_text.endswith("\n") else insert_text + "\n"
            new_text = "".join(lines[:insert_line]) + block + "".join(lines[insert_line:])
            n = self._write_change(parts, new_text, st)
        return Outcome(f"Text inserted at line {insert_line} of {self.shown(parts)}.",
                       self.shown(parts), n)

    def delete(self, path: str) -> Outcome:
        parts = self._writable(path)
        if not parts:
            raise PathRefused("the scope's root cannot be deleted; delete what is in it")
        with self._writing():
            if self.root.is_dir(parts):
                self.root.remove_tree(parts)
            else:
                self.root.unlink(parts)
            self.index.refresh(parts)
        return Outcome(f"Deleted {self.shown(parts)}.", self.shown(parts))

    def rename(self, old_path: str, new_path: str) -> Outcome:
        src, dst = self._writable(old_path), self._writable(new_path)
        with self._writing():
            if self.root.exists(dst):
                raise PathError(f"{self.shown(dst)} already exists; rename never overwrites")
            self.root.rename(src, dst)
            self.index.refresh(src)
            self.index.refresh(dst)
        return Outcome(f"Renamed {self.shown(src)} to {self.shown(dst)}.",
                       f"{self.shown(src)} -> {self.shown(dst)}")

    # -- helpers ------------------------------------------------------------------------------

    def _writable(self, path: str) -> Parts:
        parts = self.resolve(path)
        if self.read_only:
            raise PathRefused(f"memory scope {self.name!r} is read-only")
        return parts

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer per scope: threads of this process, and other whalebone processes."""
        with self._thread_lock, exclusive_lock(self._lock_path):
            yield

    def _read_for_change(self, parts: Parts) -> tuple[str, os.stat_result]:
        if not parts or self.root.is_dir(parts):
            raise PathError(f"{self.shown(parts)} is a directory; this command edits files")
        st = self.root.stat(parts)
        return self.root.read_text(parts, max_bytes=self.index.max_file_bytes), st

    def _write_change(self, parts: Parts, new_text: str, before: os.stat_result) -> int:
        data = new_text.encode("utf-8")
        self._check_caps(parts, len(data), old_size=before.st_size)
        now = self.root.stat(parts)
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (
                before.st_size, before.st_mtime_ns, before.st_ino):
            raise PathError(f"{self.shown(parts)} changed while it was being edited; view it "
                            "again and retry")
        n = self.root.write_atomic(parts, data)
        self.index.refresh(parts)
        return n

    def _check_caps(self, parts: Parts, new_size: int, *, old_size: int) -> None:
        if new_size > self.max_file_bytes:
            raise MemoryLimitError(f"{self.shown(parts)} would be {new_size} bytes, over the "
                                   f"per-file cap of {self.max_file_bytes}")
        self.index.sync()
        total = self.index.total_bytes() - old_size + new_size
        if total > self.max_scope_bytes:
            raise MemoryLimitError(f"memory scope {self.name!r} would hold {total} bytes, over "
                                   f"its cap of {self.max_scope_bytes}; delete something first")


def _lines_of(text: str, needle: str) -> list[int]:
    out, start = [], 0
    while (i := text.find(needle, start)) != -1 and len(out) < 20:
        out.append(text.count("\n", 0, i) + 1)
        start = i + 1
    return out


def _hit_line(h: Hit) -> str:
    text = h.text if len(h.text) <= 300 else h.text[:297] + "..."
    return f"{ALIAS}/{h.path}:{h.line}: {text}"
