from __future__ import annotations

from pathlib import Path

import pytest

from whalebone.memory import view
from whalebone.memory.view import human_size, render_file, render_tree
from whalebone.tools.confine import Root, display


def test_human_size_reads_like_du() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 30, 7 << 40)] == [
        "0", "1023", "1.0K", "1.5K", "5.0M", "3.0G", "7.0T"]


def test_render_file_cuts_a_huge_line_and_handles_an_empty_file() -> None:
    out = render_file("x" * 10_000 + "\nshort\n", "/memories/f", None, 100_000)
    assert f"[... {10_000 - view.MAX_LINE_CHARS} more characters]" in out
    assert out.endswith("     2\tshort")
    empty = render_file("", "/memories/e", None, 1000)
    assert empty == "Here's the content of /memories/e with line numbers:"


def test_render_file_always_shows_at_least_one_line() -> None:
    out = render_file("a" * 500 + "\nb\n", "/memories/f", None, 50).splitlines()
    assert out[1].startswith("     1\taaa")
    assert out[2] == "[showing lines 1-1 of 2; view with view_range [2, 2] for more]"


def test_render_tree_caps_the_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        (tmp_path / f"f{i:02d}.md").write_text("x")
    monkeypatch.setattr(view, "MAX_TREE_LINES", 10)
    out = render_tree(Root(tmp_path), (), lambda p: "/memories/" + display(p))
    lines = out.splitlines()
    assert len(lines) == 12  # header, 10 lines, the note
    assert lines[-1] == "[21 more entries not shown; view a subdirectory]"
