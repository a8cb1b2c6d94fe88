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
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "user:bob: 2 files, 33 bytes"  # for a person: no model-facing preamble
    assert [line.split()[-1] for line in out[1:]] == ["prefs.md", "sub/x.md"]
    assert out[1].split()[0] == "30"  # size, then date and time
    assert run(home, "view", "user:bob", "sub/x.md") == 0
    assert capsys.readouterr().out == "hi\n"  # a file is shown as it is
    assert run(home, "view", "user:bob", "prefs.md", "--range", "2", "-1") == 0
    assert capsys.readouterr().out.splitlines() == ["     2  second line"]
    assert run(home, "search", "user:bob", "tea") == 0
    out = capsys.readouterr().out
    assert "/memories/prefs.md:1: likes \\x1b[2Jred tea" in out
    assert "\x1b" not in out  # memory never drives the terminal
    assert run(home, "log", "--scope", "user:bob") == 0
    log = capsys.readouterr().out.splitlines()
    assert [line.split()[4] for line in log] == ["view", "view", "view", "search"]
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


def test_put_edit_and_rm_for_a_person(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real command: a scope is created by its first put, edit runs $EDITOR on a
    private copy, rm needs -r for a directory; every write is audited as the CLI user."""
    env = {**os.environ, "WHALEBONE_HOME": str(tmp_path)}

    def cli(*argv: str, stdin: str = "", editor: str = "true") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "memory", *argv],
                              input=stdin, capture_output=True, text=True, timeout=60,
                              env={**env, "EDITOR": editor, "VISUAL": ""})

    assert cli("put", "project:demo", "notes.md", "the deploy code is 4471").returncode == 0
    done = cli("put", "project:demo", "/memories/people/alice.md", stdin="likes tea\n")
    assert done.returncode == 0 and "Created /memories/people/alice.md" in done.stdout
    scope = tmp_path / "memory" / "project:demo"
    assert (scope / "notes.md").read_text() == "the deploy code is 4471"
    assert (scope / "people" / "alice.md").read_text() == "likes tea\n"
    assert cli("put", "project:demo", "notes.md", "v2").returncode == 0  # put replaces

    done = cli("edit", "project:demo", "notes.md", editor="sed -i s/v2/v3/")
    assert done.returncode == 0, done.stderr
    assert (scope / "notes.md").read_text() == "v3"
    assert "unchanged" in cli("edit", "project:demo", "notes.md").stdout
    done = cli("edit", "project:demo", "new.md", editor="sh -c 'echo fresh > \"$0\"'")
    assert done.returncode == 0 and (scope / "new.md").read_text() == "fresh\n"
    failed = cli("edit", "project:demo", "notes.md", editor="false")
    assert failed.returncode == 1 and "nothing written" in failed.stderr
    assert (scope / "notes.md").read_text() == "v3"

    refused = cli("rm", "project:demo", "people")
    assert refused.returncode == 1 and "use -r" in refused.stderr
    assert cli("rm", "project:demo", "people", "-r").returncode == 0
    assert cli("rm", "project:demo", "notes.md").returncode == 0
    assert sorted(p.name for p in scope.iterdir()) == ["new.md"]
    escape = cli("put", "project:demo", "../../outside.md", "x")
    assert escape.returncode == 1 and "Traceback" not in escape.stderr
    assert not (tmp_path / "outside.md").exists()
    rows = MemoryHome(tmp_path).audit.entries()
    assert [e.command for e in rows if e.result == "ok"] == [
        "put", "put", "put", "edit", "edit", "delete", "delete"]
    assert all(e.who.startswith("cli") for e in rows)


def test_a_scope_name_without_a_kind_gets_a_hint(home: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "view", "bob") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scopes are named KIND:NAME, e.g. project:bob" in err
