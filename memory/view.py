"""How ``view`` shows memory: a directory two levels deep with sizes, or a file's numbered lines.

The forms follow Anthropic's memory tool, which models have seen: a directory is a list of
``<size>\\t<path>`` lines (sizes as ``du -h`` writes them, a directory's being everything in
it); a file is ``<line number>\\t<line>`` lines. Long output is paginated rather than cut off
silently: a file view stops before ``max_chars`` and says which ``view_range`` shows the rest,
and a listing names how many entries it left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from whalebone.tools.confine import Parts, PathError, Root
from whalebone.tools.registry import ToolError

MAX_TREE_LINES = 1_000
MAX_LINE_CHARS = 4_000


def human_size(n: int) -> str:
    """Sizes as ``du -h`` prints them: 512, 4.0K, 1.5M."""
    if n < 1024:
        return str(n)
    size = float(n)
    for unit in "KMG":
        size /= 1024
        if size < 1024:
            return f"{size:.1f}{unit}"
    return f"{size / 1024:.1f}T"


def render_tree(root: Root, base: Parts, shown: Callable[[Parts], str]) -> str:
    totals: dict[Parts, int] = defaultdict(int)
    for parts, st in root.walk(base):
        rel = parts[len(base):]
        if any(p.startswith(".") for p in rel):
            continue
        for depth in range(len(rel)):
            totals[base + rel[:depth]] += st.st_size
        totals[parts] = st.st_size
    lines = [f"{human_size(totals[base])}\t{shown(base)}"]
    left_out = 0

    def add(parts: Parts, depth: int) -> None:
        nonlocal left_out
        try:
            entries = root.listdir(parts)
        except PathError:
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            child = (*parts, e.name)
            if len(lines) >= MAX_TREE_LINES:
                left_out += 1
                continue
            if e.kind == "file":
                lines.append(f"{human_size(e.size)}\t{shown(child)}")
            elif e.kind == "dir":
                lines.append(f"{human_size(totals.get(child, 0))}\t{shown(child)}/")
                if depth < 2:
                    add(child, depth + 1)
            else:  # links and special files are listed, never followed or opened
                lines.append(f"-\t{shown(child)} ({e.kind}, not accessible)")

    add(base, 1)
    head = (f"Here're the files and directories up to 2 levels deep in {shown(base)}, "
            "excluding hidden items:")
    tail = [f"[{left_out} more entries not shown; view a subdirectory]"] if left_out else []
    return "\n".join([head, *lines, *tail])


def render_file(text: str, shown: str, view_range: list[int] | None, max_chars: int) -> str:
    lines = text.splitlines()
    n = len(lines)
    start, end = 1, n
    if view_range is not None:
        if len(view_range) != 2:
            raise ToolError("view_range must be two line numbers: [start, end] (end -1 = last)")
        start, end = view_range
        if end == -1:
            end = n
        if not (1 <= start <= max(n, 1)) or not (start <= end <= n or (n == 0 and end == 0)):
            raise ToolError(f"invalid view_range {view_range}: {shown} has {n} lines; use "
                            f"1 <= start <= end <= {n}, or end = -1 for the last line")
    out = [f"Here's the content of {shown} with line numbers:"]
    used = len(out[0])
    shown_end = start - 1
    for i in range(start, end + 1):
        line = lines[i - 1]
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + f" [... {len(line) - MAX_LINE_CHARS} more characters]"
        row = f"{i:6d}\t{line}"
        if used + len(row) + 1 > max_chars and shown_end >= start:
            break
        out.append(row)
        used += len(row) + 1
        shown_end = i
    if shown_end < end:
        out.append(f"[showing lines {start}-{shown_end} of {n}; view with view_range "
                   f"[{shown_end + 1}, {end}] for more]")
    return "\n".join(out)
