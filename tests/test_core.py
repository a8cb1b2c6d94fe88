"""The bottom room: the home folder, private files, the SQLite helpers, token counts."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from whalebone.core.home import home, open_private, private_dir, private_file, write_private
from whalebone.core.sqlite import connect, transaction
from whalebone.core.usage import TokenCounts


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_is_read_from_the_environment_on_every_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path / "a"))
    assert home() == tmp_path / "a"
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path / "b"))
    assert home() == tmp_path / "b"
    monkeypatch.delenv("WHALEBONE_HOME")
    assert home() == Path("~/.whalebone").expanduser()


def test_the_test_suite_never_touches_the_real_home(whalebone_home: Path) -> None:
    assert home() == whalebone_home != Path("~/.whalebone").expanduser()


def test_private_files_and_folders_ignore_a_loose_umask(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path / "home"))
    old = os.umask(0o002)
    try:
        deep = private_dir(tmp_path / "home" / "a" / "b")
        f = private_file(deep / "x.db")
        with open_private(deep / "log.jsonl", "a", encoding="utf-8") as out:
            out.write("one\n")
        with open_private(deep / "log.jsonl", "a", encoding="utf-8") as out:
            out.write("two\n")
        write_private(tmp_path / "home" / "state.json", "{}")
    finally:
        os.umask(old)
    for d in (tmp_path / "home", tmp_path / "home" / "a", deep):
        assert mode(d) == 0o700, d
    for p in (f, deep / "log.jsonl", tmp_path / "home" / "state.json"):
        assert mode(p) == 0o600, p
    assert (deep / "log.jsonl").read_text() == "one\ntwo\n"
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["a", "state.json"]


def test_an_older_loose_home_is_tightened_but_a_folder_outside_it_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old_home, outside = tmp_path / "home", tmp_path / "shared"
    old_home.mkdir(mode=0o755)
    outside.mkdir(mode=0o755)
    os.chmod(old_home, 0o755)
    os.chmod(outside, 0o755)
    (old_home / "sessions.db").touch(mode=0o644)
    os.chmod(old_home / "sessions.db", 0o644)
    monkeypatch.setenv("WHALEBONE_HOME", str(old_home))
    connect(old_home / "sessions.db").close()
    connect(outside / "ledger.db").close()
    assert mode(old_home) == 0o700 and mode(old_home / "sessions.db") == 0o600
    assert mode(outside) == 0o755  # someone's own folder: not ours to change
    assert mode(outside / "ledger.db") == 0o600  # but a database whalebone makes is private


def test_connect_sets_one_set_of_pragmas(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db", timeout=7)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 7000
    db.execute("CREATE TABLE t (x INTEGER)")
    for name in ("x.db", "x.db-wal", "x.db-shm"):
        assert mode(tmp_path / name) == 0o600, name


def test_a_transaction_commits_or_rolls_back_whole(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (x INTEGER)")
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("half way")
    assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    other = connect(tmp_path / "x.db", timeout=0.05)
    with transaction(db), pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")  # the write lock is taken up front


def test_token_counts_add_and_convert() -> None:
    a = TokenCounts(prompt_tokens=100, cache_hit_tokens=75, cache_miss_tokens=25,
                    completion_tokens=10)
    total = a + a
    assert total.prompt_tokens == 200 and total.hit_rate == 0.75
    assert TokenCounts().hit_rate == 0.0
    assert a.count_fields() == {"prompt_tokens": 100, "cache_hit_tokens": 75,
                                "cache_miss_tokens": 25, "completion_tokens": 10}
