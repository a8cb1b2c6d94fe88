from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from whalebone.memory.scope import MemoryLimitError, MemoryScope
from whalebone.tools.confine import PathError, PathRefused
from whalebone.tools.registry import ToolError


@pytest.fixture
def scope(tmp_path: Path) -> MemoryScope:
    s = MemoryScope(tmp_path / "mem", "user:alice", index_path=tmp_path / "idx" / "a.sqlite",
                    rescan_interval=0)
    yield s
    s.close()


def files(scope: MemoryScope) -> dict[str, str]:
    return {str(p.relative_to(scope.root.path)): p.read_text()
            for p in sorted(scope.root.path.rglob("*")) if p.is_file()}


def test_create_writes_a_file_and_refuses_to_overwrite(scope: MemoryScope) -> None:
    out = scope.create("/memories/notes/today.md", "one\ntwo\n")
    assert out.text == "File created successfully at: /memories/notes/today.md"
    assert out.bytes == 8
    with pytest.raises(PathError, match="already exists"):
        scope.create("/memories/notes/today.md", "other")
    with pytest.raises(PathError, match="already exists"):
        scope.create("/memories/notes", "a directory is there")
    assert files(scope) == {"notes/today.md": "one\ntwo\n"}


def test_view_of_a_file_numbers_lines_and_honours_view_range(scope: MemoryScope) -> None:
    scope.create("/memories/a.md", "alpha\nbeta\ngamma\n")
    full = scope.view("/memories/a.md").text.splitlines()
    assert full == ["Here's the content of /memories/a.md with line numbers:",
                    "     1\talpha", "     2\tbeta", "     3\tgamma"]
    assert scope.view("/memories/a.md", [2, 3]).text.splitlines()[1:] == [
        "     2\tbeta", "     3\tgamma"]
    assert scope.view("/memories/a.md", [3, -1]).text.splitlines()[1:] == ["     3\tgamma"]
    for bad in ([0, 1], [2, 1], [1, 4], [1], [1, 2, 3]):
        with pytest.raises(ToolError, match="view_range"):
            scope.view("/memories/a.md", bad)


def test_view_of_a_long_file_is_paginated_and_says_how_to_go_on(tmp_path: Path) -> None:
    s = MemoryScope(tmp_path / "m", "s", max_view_chars=200, index_path=tmp_path / "i.sqlite")
    s.create("long.md", "".join(f"line number {i}\n" for i in range(1, 101)))
    page = s.view("long.md").text
    assert len(page) < 300
    assert page.splitlines()[-1].startswith("[showing lines 1-")
    last_shown = int(page.splitlines()[-2].split("\t")[0])
    assert f"view_range [{last_shown + 1}, 100]" in page
    nxt = s.view("long.md", [last_shown + 1, 100]).text
    assert f"{last_shown + 1:6d}\tline number {last_shown + 1}" in nxt
    s.close()


def test_view_of_a_directory_lists_two_levels_with_sizes(scope: MemoryScope) -> None:
    scope.create("a.md", "x" * 10)
    scope.create("d/b.md", "y" * 2048)
    scope.create("d/e/c.md", "z")
    scope.create("d/e/f/too-deep.md", "w")
    (scope.root.path / ".hidden").write_text("h")
    lines = scope.view("/memories").text.splitlines()
    assert lines[0].startswith("Here're the files and directories up to 2 levels deep")
    assert lines[1:] == ["2.0K\t/memories", "10\t/memories/a.md", "2.0K\t/memories/d/",
                         "2.0K\t/memories/d/b.md", "2\t/memories/d/e/"]
    with pytest.raises(ToolError, match="files, not directories"):
        scope.view("/memories/d", [1, 2])


def test_str_replace_needs_exactly_one_occurrence(scope: MemoryScope) -> None:
    scope.create("p.md", "tea\ncoffee\ntea\n")
    with pytest.raises(ToolError, match=r"occurs 2 times .*lines \[1, 3\]"):
        scope.str_replace("p.md", "tea", "milk")
    with pytest.raises(ToolError, match="did not appear verbatim"):
        scope.str_replace("p.md", "juice", "milk")
    with pytest.raises(ToolError, match="must not be empty"):
        scope.str_replace("p.md", "", "milk")
    out = scope.str_replace("p.md", "coffee", "green tea")
    assert "from line 2" in out.text
    assert files(scope) == {"p.md": "tea\ngreen tea\ntea\n"}
    with pytest.raises(PathError, match="is a directory"):
        scope.str_replace("/memories", "a", "b")
    with pytest.raises(PathError, match="does not exist"):
        scope.str_replace("nope.md", "a", "b")


def test_insert_at_top_middle_end_and_refuses_out_of_range(scope: MemoryScope) -> None:
    scope.create("l.md", "one\ntwo")  # no final newline
    scope.insert("l.md", 0, "zero")
    scope.insert("l.md", 2, "one and a half\n")
    scope.insert("l.md", 4, "three")
    assert files(scope)["l.md"] == "zero\none\none and a half\ntwo\nthree\n"
    for bad in (-1, 6):
        with pytest.raises(ToolError, match=r"within \[0, 5\]"):
            scope.insert("l.md", bad, "x")


def test_delete_removes_files_and_directories_but_not_the_root(scope: MemoryScope) -> None:
    scope.create("a.md", "a")
    scope.create("d/b.md", "b")
    scope.delete("/memories/d")
    scope.delete("a.md")
    assert files(scope) == {}
    with pytest.raises(PathRefused, match="root cannot be deleted"):
        scope.delete("/memories")
    with pytest.raises(PathError, match="does not exist"):
        scope.delete("gone.md")


def test_rename_moves_and_refuses_to_overwrite(scope: MemoryScope) -> None:
    scope.create("a.md", "a")
    scope.create("b.md", "b")
    with pytest.raises(PathError, match="never overwrites"):
        scope.rename("a.md", "b.md")
    scope.rename("/memories/a.md", "/memories/archive/a.md")
    assert files(scope) == {"archive/a.md": "a", "b.md": "b"}
    assert scope.search("a").text.count("/memories/archive/a.md:1") == 1


def test_hidden_names_are_refused(scope: MemoryScope) -> None:
    for path in (".secret", "d/.x", "/memories/.index"):
        with pytest.raises(PathRefused, match="reserved"):
            scope.create(path, "x")


def test_read_only_scope_refuses_every_change_but_reads(tmp_path: Path) -> None:
    rw = MemoryScope(tmp_path / "m", "team", index_path=tmp_path / "i.sqlite")
    rw.create("policy.md", "be kind\n")
    rw.close()
    ro = MemoryScope(tmp_path / "m", "team", read_only=True, index_path=tmp_path / "i.sqlite")
    assert "be kind" in ro.view("policy.md").text
    assert "policy.md:1" in ro.search("kind").text
    for change in (lambda: ro.create("n.md", "x"), lambda: ro.str_replace("policy.md", "be", "x"),
                   lambda: ro.insert("policy.md", 0, "x"), lambda: ro.delete("policy.md"),
                   lambda: ro.rename("policy.md", "p.md")):
        with pytest.raises(PathRefused, match="read-only"):
            change()
    assert (tmp_path / "m" / "policy.md").read_text() == "be kind\n"
    ro.close()


def test_file_and_scope_size_caps(tmp_path: Path) -> None:
    s = MemoryScope(tmp_path / "m", "s", max_file_bytes=100, max_scope_bytes=250,
                    index_path=tmp_path / "i.sqlite", rescan_interval=0)
    with pytest.raises(MemoryLimitError, match="per-file cap of 100"):
        s.create("big.md", "x" * 101)
    s.create("a.md", "x" * 100)
    s.create("b.md", "x" * 100)
    with pytest.raises(MemoryLimitError, match="over its cap of 250"):
        s.create("c.md", "x" * 51)
    with pytest.raises(MemoryLimitError, match="per-file cap"):
        s.insert("a.md", 0, "more")
    s.str_replace("a.md", "x" * 100, "short")  # shrinking is always allowed
    s.create("c.md", "x" * 50)
    # a person's file outside whalebone counts toward the scope on the next write
    (tmp_path / "m" / "person.md").write_text("p" * 90)
    with pytest.raises(MemoryLimitError, match="over its cap"):
        s.create("d.md", "x" * 10)
    assert not (tmp_path / "m" / "big.md").exists()
    s.close()


def test_an_edit_racing_an_outside_change_is_refused(scope: MemoryScope) -> None:
    scope.create("r.md", "abc\n")
    text, st = scope._read_for_change(("r.md",))
    (scope.root.path / "r.md").write_text("changed by a person\n")
    with pytest.raises(PathError, match="changed while it was being edited"):
        scope._write_change(("r.md",), text + "mine\n", st)
    assert files(scope) == {"r.md": "changed by a person\n"}


def test_concurrent_inserts_from_threads_are_all_kept(scope: MemoryScope) -> None:
    scope.create("log.md", "")

    def writer(n: int) -> None:
        for i in range(10):
            scope.insert("log.md", 0, f"w{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(files(scope)["log.md"].split()) == sorted(
        f"w{n}-{i}" for n in range(4) for i in range(10))


def test_symlink_planted_in_the_scope_is_never_followed(scope: MemoryScope, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("password=hunter2")
    os.symlink(tmp_path / "secret.txt", scope.root.path / "link.md")
    os.symlink(tmp_path, scope.root.path / "up")
    with pytest.raises(PathRefused, match="symbolic link"):
        scope.view("link.md")
    with pytest.raises(PathRefused, match="symbolic link"):
        scope.view("up/secret.txt")
    with pytest.raises(PathRefused):
        scope.str_replace("link.md", "hunter2", "x")
    assert scope.search("password hunter2").text.startswith("No memory matches")
    listing = scope.view("/memories").text
    assert "link.md (symlink, not accessible)" in listing
    assert (tmp_path / "secret.txt").read_text() == "password=hunter2"


def test_a_fifo_in_the_scope_is_listed_but_never_opened(scope: MemoryScope) -> None:
    os.mkfifo(scope.root.path / "pipe.md")
    assert "pipe.md (other, not accessible)" in scope.view("/memories").text
    with pytest.raises(PathRefused, match="FIFO"):
        scope.view("pipe.md")  # would block forever if opened for reading
    with pytest.raises(PathRefused, match="FIFO"):
        scope.str_replace("pipe.md", "a", "b")
    assert scope.search("pipe").text.startswith("No memory matches")


def test_writers_in_several_processes_are_serialised(scope: MemoryScope, tmp_path: Path) -> None:
    scope.create("shared.md", "")
    code = (
        "import sys\n"
        "from whalebone.memory.scope import MemoryScope\n"
        "s = MemoryScope(sys.argv[1], 'user:alice', index_path=sys.argv[2])\n"
        "for i in range(15):\n"
        "    s.insert('shared.md', 0, f'{sys.argv[3]}-{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(scope.root.path),
                               str(tmp_path / "idx" / "a.sqlite"), f"p{n}"]) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert sorted(files(scope)["shared.md"].split()) == sorted(
        f"p{n}-{i}" for n in range(3) for i in range(15))
    scope.index.sync(force=True)
    assert {h.text for h in scope.index.search("p1", limit=100)} == {f"p1-{i}" for i in range(15)}


def test_remaining_refusals_name_the_problem(scope: MemoryScope) -> None:
    with pytest.raises(PathError, match=r"'/memories/ghost\.md' does not exist"):
        scope.rename("ghost.md", "spirit.md")
    with pytest.raises(PathError, match="does not exist"):
        scope.view("/memories/ghost.md")
    with pytest.raises(PathError, match="does not exist"):
        scope.insert("ghost.md", 0, "x")
    with pytest.raises(ToolError, match="at least one word"):
        scope.search("   ")
    assert scope.search("!!!").text.startswith("No memory matches")
    scope.create("a.md", "a")
    with pytest.raises(PathError, match="not a directory"):
        scope.create("a.md/b.md", "under a file")
    with pytest.raises(PathRefused, match="absolute"):
        scope.create("/tmp/x.md", "x")
    scope.create("d/x.md", "x")
    with pytest.raises(PathError, match="inside itself"):
        scope.rename("d", "d/e")
