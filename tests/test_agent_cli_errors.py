"""Every command answers bad input in one line on stderr with a documented exit code, never a
traceback (a corpus: add each break found)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from whalebone.agent.cli import main

# argv, exit code, words the one line must hold
BAD = [
    (["run", "--engine", "random:tiny", "hi"], 5, "unknown preset 'tiny'"),
    (["run", "--engine", "nope", "hi"], 5, "unknown engine 'nope'"),
    (["run", "--engine", "bundled:/nonexistent", "hi"], 5, "/nonexistent"),
    (["run", "--config", "/nonexistent.toml", "hi"], 2, "no config file"),
    (["sessions", "show", "deadbeef"], 2, "no session 'deadbeef'"),
    (["sessions", "resume", "deadbeef"], 2, "no session 'deadbeef'"),
    (["memory", "view", "nokind"], 1, "scopes are named KIND:NAME"),
    (["memory", "rm", "project:x", "../../etc"], 1, ""),
    (["budget", "set", "global", "--tokens", "-5"], 2, "non-negative"),
    (["budget", "set", "nope", "--tokens", "5"], 2, "unknown scope 'nope'"),
    (["render", "missing.json"], 2, "no such file: missing.json"),
    (["parse", "missing.txt"], 2, "no such file: missing.txt"),
    (["daemon", "--config", "/nonexistent.toml"], 2, "no daemon config"),
    (["jobs", "show", "nojob"], 2, "no job 'nojob'"),
]


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path / ".whalebone"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("argv", "code", "words"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_and_a_documented_code(
    fresh_home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, words: str
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("whalebone"), err
    assert words in err


def test_an_unexpected_error_is_one_line_unless_debugging(fresh_home: Path) -> None:
    """A bug that escapes every handler still reaches a person as one line (exit 1), and
    WHALEBONE_DEBUG=1 brings the traceback back for whoever fixes it."""
    script = ("import sys\n"
              "from whalebone.agent import cli\n"
              "from whalebone.dsml import cli as codec\n"
              "def bug(args): raise KeyError('surprise')\n"
              "codec._render = bug  # registered when main() builds the parser\n"
              "sys.exit(cli.main(['render', 'x.json']))\n")

    def run(debug: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "WHALEBONE_DEBUG": debug})

    plain = run("")
    assert plain.returncode == 1
    assert plain.stderr.count("\n") == 1 and "internal error: KeyError" in plain.stderr
    debug = run("1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_sessions_and_jobs_take_a_unique_prefix(
    fresh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from whalebone.agent.daemon.jobs import JobQueue
    from whalebone.agent.store import SessionStore

    store = SessionStore(fresh_home / ".whalebone" / "sessions.db")
    sid = store.create(title="find me by prefix")
    store.close()
    assert main(["sessions", "show", sid[:5]]) == 0
    assert f"session {sid} · find me by prefix" in capsys.readouterr().out
    queue = JobQueue(fresh_home / ".whalebone" / "jobs.db")
    job = queue.submit("a task")
    queue.close()
    assert main(["jobs", "show", job.id[:4]]) == 0
    assert job.id in capsys.readouterr().out
    assert main(["jobs", "cancel", job.id[:4]]) == 0
    assert f"{job.id}: cancelled" in capsys.readouterr().out
