"""A full or read-only disk reaches the person as one line and exit code 7, from every front
end that writes (``run``, ``sessions``, ``submit``/``jobs``, ``budget``), and loses nothing that
was saved before: on a real 2 MB tmpfs (skipped where no tmpfs can be mounted)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_kit import say, script
from fault_kit import fill, remount_read_only, small_disk

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts are Linux's")

STORAGE = 7


def whalebone(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home), "HOME": str(home)}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=home)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    with small_disk(where, "2m") as why:
        if why is not None:
            pytest.skip(f"no small disk for this test: {why}")
        yield where


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single line a storage failure prints (no traceback, no second line)."""
    assert out.returncode == STORAGE, (out.returncode, out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.strip()
             and not line.startswith("whalebone: warning:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("whalebone: ") and ("intact" in lines[0] or "was lost" in lines[0])
    return lines[0]


def saved(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)  # reads on a full disk too
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [m for (m,) in con.execute("SELECT message FROM messages ORDER BY session, seq")]
    finally:
        con.close()


def first_session(home: Path, engine: str) -> tuple[str, Path]:
    db = home / "sessions.db"
    out = whalebone(home, "run", "Say hello.", "--engine", engine, "--store", str(db),
                    "--no-tools", "--json")
    assert out.returncode == 0, out.stderr
    con = sqlite3.connect(db)
    (sid,) = con.execute("SELECT id FROM sessions").fetchone()
    con.close()
    return sid, db


@pytest.mark.parametrize("how", ["full", "read_only"])
def test_every_front_end_says_one_line_and_loses_nothing(disk: Path, tmp_path: Path,
                                                         how: str) -> None:
    engine = script(tmp_path, "s.json", [say("Hello.")] * 4)  # off the small disk
    home = disk / "home"
    home.mkdir()
    sid, db = first_session(home, engine)
    whalebone(home, "budget", "set", "global", "--usd", "5")  # a ledger, before the fault
    whalebone(home, "submit", "an early job")  # a job store, before the fault
    before = saved(db)
    if how == "full":
        fill(disk)
    else:
        remount_read_only(disk)

    said = one_line(whalebone(home, "run", "Another task.", "--engine", engine, "--store",
                              str(db), "--no-tools"))
    assert ("full" if how == "full" else "read-only") in said or "cannot be opened" in said
    one_line(whalebone(home, "sessions", "resume", sid, "More, please.", "--engine", engine,
                       "--store", str(db), "--no-tools"))
    one_line(whalebone(home, "submit", "a job on a full disk"))
    one_line(whalebone(home, "budget", "set", "session", "--usd", "1"))
    for reader in (["sessions", "list", "--store", str(db)],
                   ["sessions", "show", sid, "--store", str(db)]):
        out = whalebone(home, *reader)  # the sessions can still be read
        assert out.returncode == 0 and sid in out.stdout, out.stderr
    out = whalebone(home, "jobs", "list")  # may work, or fail in one line
    if out.returncode != 0:
        one_line(out)
    assert saved(db) == before  # nothing saved was lost or half-written

    if how == "full":  # room again: the session goes on where it was
        (disk / "filler").unlink()
        out = whalebone(home, "sessions", "resume", sid, "More, please.", "--engine", engine,
                        "--store", str(db), "--no-tools")
        assert out.returncode == 0, out.stderr
        assert saved(db)[:len(before)] == before and len(saved(db)) > len(before)


def test_the_daemon_on_a_read_only_disk_says_one_line(disk: Path) -> None:
    home = disk / "home"
    home.mkdir()
    remount_read_only(disk)
    env = {**os.environ, "WHALEBONE_HOME": str(home), "HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "daemon"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=home)
    said = one_line(out)
    assert "read-only" in said or "cannot be opened" in said
