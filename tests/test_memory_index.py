from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whalebone.memory.index import SearchIndex
from whalebone.tools.confine import Root


@pytest.fixture
def index(tmp_path: Path) -> SearchIndex:
    (tmp_path / "mem").mkdir()
    idx = SearchIndex(Root(tmp_path / "mem"), tmp_path / "index.sqlite", rescan_interval=0)
    yield idx
    idx.close()


def write(index: SearchIndex, rel: str, text: str) -> None:
    path = index.root.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def found(index: SearchIndex, query: str, **kw: object) -> list[tuple[str, int]]:
    return [(h.path, h.line) for h in index.search(query, **kw)]  # type: ignore[arg-type]


def test_words_are_found_with_file_and_line_ranked(index: SearchIndex) -> None:
    write(index, "a.md", "intro\nthe deploy key rotates monthly\n")
    write(index, "b/c.md", "deploy\n\ndeploy deploy key key\n")
    hits = index.search("deploy key")
    assert {(h.path, h.line) for h in hits} == {("a.md", 2), ("b/c.md", 3)}
    assert hits[0].rank <= hits[1].rank  # best (lowest bm25) first
    assert found(index, "rotating") == [("a.md", 2)]  # stemmed


def test_all_words_first_then_any_word(index: SearchIndex) -> None:
    write(index, "a.md", "apples and pears\napples only\n")
    assert found(index, "apples pears") == [("a.md", 1)]
    assert set(found(index, "pears bananas")) == {("a.md", 1)}  # no line has both


def test_phrase_is_exact_and_in_order(index: SearchIndex) -> None:
    write(index, "a.md", "the user prefers green tea\ntea green is a colour\nGreen  Tea time\n")
    assert set(found(index, "green tea", phrase=True)) == {("a.md", 1), ("a.md", 3)}
    assert found(index, "prefers green tea", phrase=True) == [("a.md", 1)]
    assert found(index, "tea green is", phrase=True) == [("a.md", 2)]


def test_query_syntax_is_never_interpreted(index: SearchIndex) -> None:
    write(index, "a.md", "NEAR the OR gate\nstar * power\n")
    for q in ['"', "NEAR(", "a OR", "*", "text:foo", "-x", "^", "(", "AND AND"]:
        index.search(q)  # no FTS syntax error escapes
    assert found(index, "OR gate") == [("a.md", 1)]
    assert index.search("   ") == []


def test_search_under_a_directory(index: SearchIndex) -> None:
    write(index, "p/a.md", "needle\n")
    write(index, "q/a.md", "needle\n")
    write(index, "p_x/a.md", "needle\n")  # '_' is a LIKE wildcard: must not match 'p/'
    assert found(index, "needle", under=("p",)) == [("p/a.md", 1)]


def test_outside_edits_are_picked_up_on_next_use(index: SearchIndex) -> None:
    write(index, "a.md", "old fact\n")
    assert found(index, "old") == [("a.md", 1)]
    write(index, "a.md", "new fact\n")  # same size, maybe the same mtime tick
    assert found(index, "old") == []
    assert found(index, "new") == [("a.md", 1)]
    write(index, "b.md", "fresh file\n")
    os.unlink(index.root.path / "a.md")
    assert found(index, "fact") == []
    assert found(index, "fresh") == [("b.md", 1)]


def test_same_size_same_mtime_edit_is_seen_while_racy(index: SearchIndex) -> None:
    path = index.root.path / "a.md"
    write(index, "a.md", "alpha\n")
    index.sync(force=True)
    st = path.stat()
    path.write_text("omega\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before
    assert found(index, "omega") == [("a.md", 1)]


def test_unchanged_files_are_not_reread(index: SearchIndex) -> None:
    write(index, "a.md", "alpha\n")
    old = index.root.path / "a.md"
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))  # long before indexing: not racy
    first = index.sync(force=True)
    assert first.added == 1
    again = index.sync(force=True)
    assert (again.added, again.changed, again.removed, again.scanned) == (0, 0, 0, 1)


def test_rescan_interval_limits_walks_but_refresh_is_immediate(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    idx = SearchIndex(Root(tmp_path / "m"), tmp_path / "i.sqlite", rescan_interval=3600,
                      watch=False)
    idx.sync(force=True)
    (tmp_path / "m" / "a.md").write_text("quiet\n")
    assert idx.search("quiet") == []  # without a watch: not rescanned within the interval
    idx.refresh(("a.md",))
    assert [h.path for h in idx.search("quiet")] == ["a.md"]
    idx.close()


def test_hidden_files_links_and_binary_are_handled(index: SearchIndex, tmp_path: Path) -> None:
    write(index, ".git/config", "secret token\n")
    write(index, ".a.md.123.tmp", "secret token\n")
    (tmp_path / "out.md").write_text("secret token\n")
    os.symlink(tmp_path / "out.md", index.root.path / "link.md")
    (index.root.path / "bin.md").write_bytes(b"\xff\xfe token \x00\n")
    assert found(index, "secret") == []
    assert found(index, "token") == [("bin.md", 1)]


def test_index_survives_reopen(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.md").write_text("persisted\n")
    idx = SearchIndex(Root(tmp_path / "m"), tmp_path / "i.sqlite")
    idx.sync(force=True)
    idx.close()
    again = SearchIndex(Root(tmp_path / "m"), tmp_path / "i.sqlite", rescan_interval=3600,
                        watch=False)
    again._last_sync = float("inf")  # answer from what is stored, without any walk
    assert [h.path for h in again.search("persisted")] == ["a.md"]
    assert again.total_bytes() == len("persisted\n")
    again.close()


WORDS = ["tea", "coffee", "deploy", "key", "alice", "bob", "red", "blue", "cache", "prefix"]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(["write", "append", "delete", "rename"]),
                              st.integers(0, 4), st.lists(st.sampled_from(WORDS), min_size=1,
                                                          max_size=4)),
                    min_size=1, max_size=12),
       seed=st.integers(0, 2**16))
def test_fts_matches_a_plain_scan_after_random_outside_edits(
        index: SearchIndex, ops: list[tuple[str, int, list[str]]], seed: int) -> None:
    """After any sequence of edits a person makes with ordinary file operations, search
    answers exactly what grepping the files would."""
    rnd = random.Random(seed)
    base = index.root.path
    for name in os.listdir(base):
        os.unlink(base / name)
    for op, n, words in ops:
        path = base / f"f{n}.md"
        if op == "write":
            path.write_text(" ".join(words) + "\n")
        elif op == "append":
            with open(path, "a") as f:
                f.write(" ".join(words) + "\n")
        elif op == "delete" and path.exists():
            path.unlink()
        elif op == "rename" and path.exists():
            path.rename(base / f"f{rnd.randrange(5)}.md")
        if rnd.random() < 0.5:
            index.search(rnd.choice(WORDS))  # interleave uses, as an agent would
    for word in WORDS:
        expected = set()
        for p in base.iterdir():
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if word in line.split():
                    expected.add((p.name, i))
        assert set(found(index, word)) == expected


def test_processes_opening_a_new_index_at_once_all_succeed(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.md").write_text("shared\n")
    code = (
        "import sys\n"
        "from whalebone.memory.index import SearchIndex\n"
        "from whalebone.tools.confine import Root\n"
        "idx = SearchIndex(Root(sys.argv[1]), sys.argv[2])\n"
        "idx.sync(force=True)\n"
        "assert [h.path for h in idx.search('shared')] == ['a.md']\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "m"),
                               str(tmp_path / "i.sqlite")]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]


def test_with_a_watch_only_a_changed_scope_is_walked(index: SearchIndex) -> None:
    write(index, "a.md", "first\n")
    assert index.sync().scanned == 1  # the first use always walks
    assert index.sync().scanned == 0  # nothing changed: no walk at all
    assert index.search("first") and index.sync().scanned == 0
    with open(index.root.path / "a.md", "a") as f:  # an in-place append, as `echo >>` does
        f.write("second\n")
    report = index.sync()
    assert (report.scanned, report.changed) == (1, 1)
    (index.root.path / "x" / "y").mkdir(parents=True)  # a new nested directory...
    assert index.sync().scanned == 1
    (index.root.path / "x" / "y" / "deep.md").write_text("nested\n")  # ...is watched too
    assert found(index, "nested") == [("x/y/deep.md", 1)]
    os.rename(index.root.path / "x", index.root.path / "z")
    assert found(index, "nested") == [("z/y/deep.md", 1)]
    (index.root.path / "z" / "y" / "deep.md").unlink()
    assert found(index, "nested") == []


def test_without_a_watch_edits_are_seen_after_the_interval(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    idx = SearchIndex(Root(tmp_path / "m"), tmp_path / "i.sqlite", rescan_interval=0,
                      watch=False)
    assert idx.sync().scanned == 0
    (tmp_path / "m" / "a.md").write_text("seen\n")
    assert [h.path for h in idx.search("seen")] == ["a.md"]
    assert idx.sync().scanned == 1  # walks on every use: nothing tells it otherwise
    idx.close()
