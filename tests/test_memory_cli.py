from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from whalebone.agent.cli import main
from whalebone.memory.cli import printable
from whalebone.memory.home import MemoryHome


@pytest.fixture
def home(tmp_path: Path) -> Path:
    scope = tmp_path / "memory" / "user:bob"
    (scope / "sub").mkdir(parents=True)
    (scope / "prefs.md").write_text("likes \x1b[2Jred tea\nsecond line\n")
    (scope / "sub" / "x.md").write_text("hi\n")
    return tmp_path


def run(home: Path, *argv: str) -> int:
    return main(["memory", "--home", str(home), *argv])


def test_view_search_and_log_for_a_person(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "scopes") == 0
    assert capsys.readouterr().out == "user:bob\n"
    assert run(home, "view", "user:bob") == 0
    out = capsys.readouterr().out
    assert "/memories/prefs.md" in out and "/memories/sub/x.md" in out
    assert run(home, "view", "user:bob", "prefs.md", "--range", "2", "-1") == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["     2\tsecond line"]
    assert run(home, "search", "user:bob", "tea") == 0
    out = capsys.readouterr().out
    assert "/memories/prefs.md:1: likes \\x1b[2Jred tea" in out
    assert "\x1b" not in out  # memory never drives the terminal
    assert run(home, "log", "--scope", "user:bob") == 0
    log = capsys.readouterr().out.splitlines()
    assert [line.split()[4] for line in log] == ["view", "view", "search"]
    assert all(line.split()[2].startswith("cli") for line in log)


def test_refusals_exit_1_with_a_clear_message_and_are_audited(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "view", "user:bob", "../../etc/passwd") == 1
    assert "leaves the root" in capsys.readouterr().err
    assert run(home, "view", "no-such-scope") == 1
    assert "does not exist" in capsys.readouterr().err
    assert run(home, "view", "../escape") == 1
    assert "scope name" in capsys.readouterr().err
    rows = MemoryHome(home).audit.entries()
    assert [e.result for e in rows] == ["refused", "refused", "refused"]
    assert not (home / "memory" / "no-such-scope").exists()  # a read never creates a scope


def test_reindex_reports_counts_and_log_without_audit_db(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "reindex", "user:bob") == 0
    assert "2 files, 3 entries indexed" in capsys.readouterr().out
    assert run(tmp_path / "empty", "log") == 0
    assert "no memory audit log" in capsys.readouterr().err
    assert run(home) == 2


def test_whalebone_home_environment_is_the_default(home: Path) -> None:
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "memory", "scopes"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "user:bob\n"


def test_printable_escapes_controls_and_bidi_but_keeps_text() -> None:
    assert printable("a\tb\nc") == "a\tb\nc"
    assert printable("\x1b[31m") == "\\x1b[31m"
    assert printable("x\u202ey") == "x\\u202ey"
    assert printable("grüße ✓") == "grüße ✓"
