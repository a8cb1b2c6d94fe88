"""The file tools: read_file, write_file, edit_file, list_dir and grep, inside one workspace.

Every path the model gives goes through :class:`whalebone.tools.confine.Root`, the project's
one confinement module: ``..``, absolute paths, symbolic links (also ones swapped in during a
call), percent-escapes, Unicode look-alikes, NUL bytes and device files are refused there, and
the refusal comes back to the model as a tool error. This module only decides what the model
sees: text with line numbers, paginated and capped; binary files refused by name; entries with
their type and size; edits that must match exactly once. Everything read from the workspace
is outside text and is neutralised before it enters the prompt.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from pydantic import Field

from whalebone.dsml.untrusted import neutralise
from whalebone.tools.confine import Entry, Parts, Root, display
from whalebone.tools.grep import grep_root
from whalebone.tools.registry import Tool, ToolError

SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a file as binary, as git and grep do
# Directories list_dir and grep report but do not descend into: tools' caches and
# dependencies, huge and rarely what the model is looking for. Named explicitly, they open.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".cache"})


class FileTools:
    """The file tools of one workspace; :meth:`tools` gives them in their fixed order."""

    def __init__(self, workspace: str | os.PathLike[str] | Root, *, read_only: bool = False,
                 max_file_bytes: int = 10_000_000, max_output: int = 50_000,
                 max_line: int = 2_000, timeout: float = 30.0) -> None:
        self.root = workspace if isinstance(workspace, Root) else Root(workspace,
                                                                       read_only=read_only)
        self.max_file_bytes = max_file_bytes  # read, edited or written whole
        self.max_output = max_output  # characters of one tool result
        self.max_line = max_line  # characters of one shown line
        self.timeout = timeout

    def tools(self) -> list[Tool]:
        """read_file, write_file, edit_file, list_dir, grep (this order is part of the cached
        prompt prefix: do not reorder)."""
        t = self.timeout
        return [Tool(self.read_file, idempotent=True, timeout=t),
                Tool(self.write_file, idempotent=True, timeout=t),  # same content, same file
                Tool(self.edit_file, timeout=t),
                Tool(self.list_dir, idempotent=True, timeout=t),
                Tool(self.grep, idempotent=True, timeout=t)]

    # -- the tools (their docstrings are what the model reads) -------------------------------

    def read_file(
        self,
        path: Annotated[str, Field(description="File path relative to the workspace")],
        offset: Annotated[int, Field(ge=1, description="First line to show (1-based)")] = 1,
        limit: Annotated[int, Field(ge=1, le=10_000, description="Lines to show")] = 2000,
        line_numbers: bool = True,
    ) -> str:
        """Read a text file of the workspace, with line numbers. Long files come in pages:
        the last line says which offset to continue from. Binary files are refused."""
        parts = self.root.resolve(path)
        if self.root.is_dir(parts):
            raise ToolError(f"{display(parts) or '.'} is a directory; list_dir shows what it "
                            "holds")
        fd = self.root.open(parts)
        with os.fdopen(fd, "rb", buffering=0) as f:
            head = f.read(SNIFF_BYTES)
            if b"\0" in head:
                size = os.fstat(f.fileno()).st_size
                raise ToolError(f"{display(parts)} is a binary file ({size} bytes); the "
                                "file tools show text only")
            page, total, exact = _page(f, head, offset, limit, keep=self.max_line * 4,
                                       budget=self.max_output * 4, max_scan=self.max_file_bytes)
        if total == 0:
            return f"{display(parts)} is empty"
        if offset > total:
            raise ToolError(f"{display(parts)} has {total} lines; offset {offset} is past "
                            "its end")
        lines: list[str] = []
        used = 0
        for n, (line, length) in enumerate(page, start=offset):
            text = _cut(line.decode("utf-8", errors="replace"), self.max_line, length)
            shown = f"{n:>6}\t{text}" if line_numbers else text
            if lines and used + len(shown) + 1 > self.max_output:
                break
            lines.append(shown)
            used += len(shown) + 1
        last = offset + len(lines) - 1
        if last < total:
            of = f"{total}" if exact else f"more than {total - 1}"
            why = " (output cap)" if len(lines) < limit else ""
            lines.append(f"[lines {offset}-{last} of {of}{why}; continue with "
                         f"offset={last + 1}]")
        return neutralise("\n".join(lines))

    def write_file(
        self,
        path: Annotated[str, Field(description="File path relative to the workspace")],
        content: Annotated[str, Field(description="The whole new content of the file")],
    ) -> str:
        """Create or replace a text file in the workspace with the given content; missing
        parent directories are created. To change part of a file, use edit_file."""
        data = content.encode("utf-8")
        if len(data) > self.max_file_bytes:
            raise ToolError(f"content is {len(data)} bytes, over the cap of "
                            f"{self.max_file_bytes}")
        parts = self.root.resolve(path)
        mode = self._mode(parts)
        written = self.root.write_atomic(parts, data, mode=0o644 if mode is None else mode)
        verb = "created" if mode is None else "replaced"
        return f"{verb} {display(parts)} ({written} bytes)"

    def edit_file(
        self,
        path: Annotated[str, Field(description="File path relative to the workspace")],
        old_text: Annotated[str, Field(description="Exact text to replace, including "
                                                   "whitespace; must occur exactly once")],
        new_text: Annotated[str, Field(description="Text to put in its place")],
        replace_all: Annotated[bool, Field(description="Replace every occurrence")] = False,
    ) -> str:
        """Replace an exact piece of text in a file. old_text must occur exactly once
        (include surrounding lines to make it unique), unless replace_all is set."""
        if not old_text:
            raise ToolError("old_text is empty; to write a whole file use write_file")
        if old_text == new_text:
            raise ToolError("old_text and new_text are the same; nothing would change")
        parts = self.root.resolve(path)
        text = self._text(parts)
        if old_text not in text and "\r\n" in text and "\r\n" not in old_text:
            # The file has Windows line endings; the model wrote the text with "\n".
            old_text, new_text = (s.replace("\n", "\r\n") for s in (old_text, new_text))
        count = text.count(old_text)
        if count == 0:
            hint = (" (it does occur with other leading/trailing whitespace)"
                    if old_text.strip() and old_text.strip() in text else "")
            raise ToolError(f"old_text was not found in {display(parts)}{hint}; read the "
                            "file and copy the text exactly")
        at = _line_numbers(text, old_text)
        if count > 1 and not replace_all:
            raise ToolError(f"old_text occurs {count} times in {display(parts)} (lines "
                            f"{_listed(at)}); it must occur exactly once: include more "
                            "surrounding lines, or set replace_all")
        updated = text.replace(old_text, new_text, -1 if replace_all else 1)
        data = updated.encode("utf-8")
        if len(data) > self.max_file_bytes:
            raise ToolError(f"the edited file would be {len(data)} bytes, over the cap of "
                            f"{self.max_file_bytes}")
        self.root.write_atomic(parts, data, mode=self._mode(parts) or 0o644)
        first = at[0]
        shown = updated.splitlines()[max(0, first - 3): first + new_text.count("\n") + 2]
        snippet = "\n".join(f"{n:>6}\t{_cut(s, self.max_line)}"
                            for n, s in enumerate(shown, start=max(1, first - 2)))
        n = count if replace_all else 1
        head = (f"edited {display(parts)}: replaced {n} occurrence{'s' if n > 1 else ''} "
                f"(line{'s' if n > 1 else ''} {_listed(at[:n])})")
        return neutralise(f"{head}\n{snippet}")

    def list_dir(
        self,
        path: Annotated[str, Field(description="Directory relative to the workspace")] = ".",
        depth: Annotated[int, Field(ge=1, le=5, description="Levels to descend")] = 1,
    ) -> str:
        """List a directory of the workspace: one entry per line, directories ending in "/",
        files with their size. With depth > 1, subdirectories are listed too."""
        parts = self.root.resolve(path)
        lines: list[str] = []
        limit = max(1, self.max_output // 40)
        for entry, rel, note in self._entries(parts, depth):
            if len(lines) == limit:
                lines.append(f"[stopped at {limit} entries; list a subdirectory instead]")
                break
            lines.append(_describe(entry, rel) + note)
        if not lines:
            return f"{display(parts) or '.'} is empty"
        return neutralise("\n".join(lines))

    def grep(
        self,
        pattern: Annotated[str, Field(description="Regular expression (Python syntax), or "
                                                  "plain text with fixed_string")],
        path: Annotated[str, Field(description="File or directory to search")] = ".",
        fixed_string: bool = False,
        ignore_case: bool = False,
        glob: Annotated[str, Field(description="Only files whose name matches, e.g. *.py")]
        = "",
        max_results: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> str:
        """Search text files of the workspace for a pattern; one match per line as
        path:line:text. Binary files, large files and tool directories (.git,
        node_modules, …) are skipped."""
        return grep_root(self.root, self.root.resolve(path), pattern, fixed_string=fixed_string,
                         ignore_case=ignore_case, glob=glob, max_results=max_results,
                         max_file_bytes=min(self.max_file_bytes, 2_000_000),
                         max_line=min(self.max_line, 400), skip_dirs=SKIP_DIRS,
                         time_limit=max(1.0, self.timeout - 5))

    # -- helpers -----------------------------------------------------------------------------

    def _text(self, parts: Parts) -> str:
        data = self.root.read_bytes(parts, max_bytes=self.max_file_bytes)
        if b"\0" in data[:SNIFF_BYTES]:
            raise ToolError(f"{display(parts)} is a binary file ({len(data)} bytes); "
                            "edit_file changes text only")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{display(parts)} is not UTF-8 text; edit_file changes UTF-8 "
                            "text only") from None

    def _mode(self, parts: Parts) -> int | None:
        """The permission bits of an existing regular file (kept across rewrites), or None."""
        if not self.root.exists(parts):
            return None
        st = self.root.stat(parts)
        return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None

    def _entries(self, parts: Parts, depth: int,
                 prefix: str = "") -> Iterator[tuple[Entry, str, str]]:
        for entry in self.root.listdir(parts):
            rel = f"{prefix}{entry.name}"
            descend = entry.kind == "dir" and depth > 1
            note = ""
            if descend and entry.name in SKIP_DIRS:
                descend, note = False, "  (not expanded)"
            yield entry, rel, note
            if descend:
                yield from self._entries((*parts, entry.name), depth - 1, rel + "/")


def file_tools(workspace: str | os.PathLike[str] | Root, **options: object) -> list[Tool]:
    """read_file, write_file, edit_file, list_dir, grep confined to ``workspace``."""
    return FileTools(workspace, **options).tools()  # type: ignore[arg-type]


def _describe(entry: Entry, rel: str) -> str:
    name = _printable(rel)
    if entry.kind == "dir":
        return f"{name}/"
    if entry.kind == "file":
        return f"{name}  ({entry.size} bytes)"
    if entry.kind == "symlink":
        return f"{name}  (symbolic link, not followed)"
    return f"{name}  (special file)"


def _printable(name: str) -> str:
    # A file name may hold a newline or an escape sequence; the listing must stay one line each.
    return name if name.isprintable() else repr(name)[1:-1]


def _page(f: BinaryIO, head: bytes, offset: int, limit: int, *, keep: int, budget: int,
          max_scan: int) -> tuple[list[tuple[bytes, int]], int, bool]:
    """Lines ``offset`` … ``offset + limit - 1`` of a file, each as (its first ``keep`` bytes,
    its full length); then the number of lines, and whether that number is exact.

    Streams in chunks, so neither a huge file nor a huge line is ever held whole: chunks
    wholly before or after the page are only counted (in C, by ``bytes.count``), and counting
    stops once ``max_scan`` bytes have been read. The page also ends early once it holds
    ``budget`` bytes, more than the output cap can show.
    """
    page: list[tuple[bytes, int]] = []
    end = offset + limit - 1  # the last line of the page
    done = 0  # lines completed so far; the line in progress is done + 1
    cur, cur_len, held = bytearray(), 0, 0
    scanned, chunk, ends_open = 0, head, False
    while chunk:
        scanned += len(chunk)
        ends_open = not chunk.endswith(b"\n")
        newlines = chunk.count(b"\n")
        if done + 1 > end or done + newlines + 1 < offset:
            done += newlines  # no line of the page starts or continues in this chunk
            if done + 1 > end and scanned > max_scan:
                return page, done + 1, False
        else:
            pieces = chunk.split(b"\n")
            for i, piece in enumerate(pieces):
                inside = offset <= done + 1 <= end
                if inside:
                    cur += piece[: max(0, keep - len(cur))]
                    cur_len += len(piece)
                if i < len(pieces) - 1:  # a newline ends this line
                    if inside:
                        page.append(_line(cur, cur_len))
                        held += len(page[-1][0])
                        if held > budget:
                            end = done + 1  # the page is as long as can be shown
                    cur, cur_len = bytearray(), 0
                    done += 1
        chunk = f.read(1 << 16)
    if ends_open and scanned:  # a last line without a final newline
        if offset <= done + 1 <= end:
            page.append(_line(cur, cur_len))
        done += 1
    return page, done, True


def _line(start: bytearray, length: int) -> tuple[bytes, int]:
    if start.endswith(b"\r") and length == len(start):  # a CRLF line ending
        return bytes(start[:-1]), length - 1
    return bytes(start), length


def _cut(text: str, limit: int, length: int | None = None) -> str:
    """At most ``limit`` characters of a line; ``length`` is the line's full size in bytes
    when only its start was read."""
    if len(text) <= limit and (length is None or length <= len(text.encode())):
        return text
    rest = f"{len(text) - limit} more chars" if length is None else f"{length} bytes in all"
    return text[:limit] + f" … [line cut: {rest}]"


def _line_numbers(text: str, needle: str) -> list[int]:
    """1-based line numbers where each (non-overlapping) occurrence of ``needle`` starts."""
    out, start, line, seen = [], 0, 1, 0
    while (i := text.find(needle, start)) != -1:
        line += text.count("\n", seen, i)
        seen = i
        out.append(line)
        start = i + len(needle)
    return out


def _listed(numbers: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f", … ({len(numbers) - limit} more)" if len(numbers) > limit else "")


__all__ = ["SKIP_DIRS", "FileTools", "file_tools"]
