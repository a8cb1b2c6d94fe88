"""``grep`` over a confined workspace: model-written patterns, bounded in time and output.

The pattern comes from the model, and a pattern like ``(a|aa)+$`` can backtrack for hours on
one line with Python's :mod:`re`. Matching uses the ``regex`` library instead, whose calls
take a timeout (counted in CPU time, so a loaded machine stretches it in wall time): the whole
search shares one time limit, and when it runs out the results so far come back with a note
instead of a thread spinning forever. Files are found by walking
the :class:`~whalebone.tools.confine.Root` (links are never followed), in name order, so the
same search gives the same answer.
"""

from __future__ import annotations

import fnmatch
import stat
import time
from collections import Counter
from collections.abc import Iterator

import regex

from whalebone.dsml.untrusted import neutralise
from whalebone.tools.confine import Parts, PathError, PathRefused, Root, display
from whalebone.tools.registry import ToolError

SNIFF_BYTES = 8192


def grep_root(root: Root, base: Parts, pattern: str, *, fixed_string: bool = False,
              ignore_case: bool = False, glob: str = "", max_results: int = 100,
              max_file_bytes: int = 2_000_000, max_line: int = 400,
              skip_dirs: frozenset[str] = frozenset(), time_limit: float = 20.0) -> str:
    """Lines under ``base`` matching ``pattern``, as ``path:line:text``, neutralised."""
    if not pattern:
        raise ToolError("the pattern is empty")
    flags = regex.MULTILINE | regex.VERSION0 | (regex.IGNORECASE if ignore_case else 0)
    try:
        compiled = regex.compile(regex.escape(pattern) if fixed_string else pattern, flags)
    except (regex.error, OverflowError) as e:
        raise ToolError(f"invalid regular expression {pattern[:200]!r}: {e} (set "
                        "fixed_string to search for the text itself)") from None
    deadline = time.monotonic() + time_limit
    hits: list[str] = []
    skipped: Counter[str] = Counter()
    timed_out = False
    for parts, size in _files(root, base, skip_dirs):
        rel = display(parts)
        if glob and not fnmatch.fnmatchcase(rel if "/" in glob else parts[-1], glob):
            continue
        named = parts == base
        if size > max_file_bytes:
            if named:
                raise ToolError(f"{rel} is {size} bytes, over grep's cap of {max_file_bytes}")
            skipped[f"over {max_file_bytes} bytes"] += 1
            continue
        text = _read(root, parts, max_file_bytes, skipped, named=named)
        if text is None:
            continue
        try:
            for lineno, line in _matches(compiled, text, deadline):
                hits.append(f"{rel}:{lineno}:{_cut(line, max_line)}")
                if len(hits) == max_results:
                    break
        except TimeoutError:
            timed_out = True
        if timed_out or len(hits) == max_results or time.monotonic() > deadline:
            timed_out = timed_out or len(hits) < max_results
            break
    notes = []
    if len(hits) == max_results:
        notes.append(f"[stopped at {max_results} matches; narrow the pattern, path or glob]")
    if timed_out:
        notes.append(f"[search stopped after {time_limit:g} s: the results are incomplete; "
                     "a simpler pattern or a narrower path is faster]")
    if hits:
        skipped.pop("binary", None)  # expected noise beside matches; telling when none match
    if skipped:
        notes.append("[skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(
            skipped.items())) + "]")
    if not hits:
        where = display(base) or "the workspace"
        return neutralise("\n".join([f"no matches for {pattern[:200]!r} in {where}", *notes]))
    return neutralise("\n".join(hits + notes))


def _files(root: Root, base: Parts, skip_dirs: frozenset[str]) -> Iterator[tuple[Parts, int]]:
    """(parts, size) of regular files under ``base`` (or ``base`` itself), depth-first in
    name order."""
    st = root.stat(base)
    if stat.S_ISREG(st.st_mode):
        yield base, st.st_size
        return
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link (not followed)" if stat.S_ISLNK(st.st_mode) else "not a file"
        raise PathRefused(f"{display(base)!r} is {kind}")
    try:
        entries = root.listdir(base)
    except PathError:
        return  # removed or made unreadable while we walked
    for entry in entries:
        child = (*base, entry.name)
        if entry.kind == "file":
            yield child, entry.size
        elif entry.kind == "dir" and entry.name not in skip_dirs:
            yield from _files(root, child, skip_dirs)


def _read(root: Root, parts: Parts, max_bytes: int, skipped: Counter[str],
          named: bool) -> str | None:
    """The file's text, or None (counted in ``skipped``) when it is not searched; a file
    named by the model itself raises instead, so the model hears why."""
    try:
        data = root.read_bytes(parts, max_bytes=max_bytes)
    except PathRefused:
        if named:
            raise
        skipped["refused (hard links or special files)"] += 1
        return None
    except PathError:  # removed, grown past the cap or made unreadable since it was listed
        if named:
            raise
        skipped["unreadable"] += 1
        return None
    if b"\0" in data[:SNIFF_BYTES]:
        if named:
            raise ToolError(f"{display(parts)} is a binary file; grep searches text only")
        skipped["binary"] += 1
        return None
    return data.decode("utf-8", errors="replace")


def _matches(compiled: regex.Pattern[str], text: str,
             deadline: float) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line holding a match, each line once."""
    pos, lineno, counted = 0, 1, 0
    while pos <= len(text):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        m = compiled.search(text, pos, timeout=remaining)
        if m is None or (m.start() == len(text) and (not text or text.endswith("\n"))):
            return  # no phantom empty line after the final newline
        lineno += text.count("\n", counted, m.start())
        counted = m.start()
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.start())
        end = len(text) if end == -1 else end
        yield lineno, text[start:end].rstrip("\r")
        pos = end + 1  # the next line; a match's own line is reported once
        lineno += text.count("\n", counted, min(pos, len(text)))
        counted = min(pos, len(text))


def _cut(line: str, limit: int) -> str:
    return line if len(line) <= limit else line[:limit] + f" … [{len(line) - limit} more chars]"
