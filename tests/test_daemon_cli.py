"""``whalebone submit`` and ``whalebone jobs``: on the job database directly, and ``submit
--wait`` against a running daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_kit import DaemonProc, appends, write_config, write_script

from whalebone.agent.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    (tmp_path / "daemon.toml").write_text(f'home = "{tmp_path}"\n')
    return tmp_path


def test_submit_list_show_and_cancel_without_a_daemon(home: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert main(["submit", "Summarise the inbox.", "--max-steps", "5"]) == 0
    jid = capsys.readouterr().out.strip()
    assert main(["jobs"]) == 0  # list, by default
    listed = capsys.readouterr().out
    assert jid in listed and "queued" in listed and "Summarise the inbox." in listed
    assert main(["jobs", "show", jid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["options"] == {"max_steps": 5} and shown["status"] == "queued"
    assert main(["jobs", "cancel", jid]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["jobs", "list", "--status", "queued"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["jobs", "retry", jid]) == 0
    assert "queued again" in capsys.readouterr().out
    assert main(["jobs", "retry", jid]) == 2  # already queued
    assert "only a stopped" in capsys.readouterr().err
    assert main(["jobs", "cancel", jid]) == 0
    assert capsys.readouterr().out == f"{jid}: cancelled\n"
    assert main(["jobs", "prune", "--days", "0"]) == 0
    assert capsys.readouterr().out.startswith("1 finished jobs deleted")
    assert main(["jobs", "show", jid]) == 2


def test_bad_input_exits_2_with_a_message(home: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "   "]) == 2
    assert "non-empty" in capsys.readouterr().err
    assert main(["submit", "x", "--engine", "openai:https://elsewhere.example/v1"]) == 2
    assert "not among the daemon's engines" in capsys.readouterr().err
    assert main(["submit", "x", "--max-steps", "0"]) == 2
    assert "max_steps" in capsys.readouterr().err
    assert main(["jobs", "show", "nope"]) == 2
    assert "no job 'nope'" in capsys.readouterr().err
    assert main(["jobs", "cancel", "nope"]) == 2
    assert main(["jobs", "list", "--config", str(home / "missing.toml")]) == 2
    assert "no daemon config" in capsys.readouterr().err


def test_control_characters_in_a_task_are_shown_escaped(home: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["submit", "evil \x1b[2J task"]) == 0
    capsys.readouterr()
    assert main(["jobs", "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b" in out


def test_submit_wait_prints_the_answer_and_exits_with_the_jobs_status(tmp_path: Path
                                                                      ) -> None:
    home = tmp_path / "home"
    engine = write_script(tmp_path / "s.json", appends(1, "One line."))
    config = write_config(home, engine=engine)
    d = DaemonProc(home)
    try:
        out = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "submit",
                              "Append a line.", "--wait", "--config", str(config)],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "WHALEBONE_HOME": str(home)})
    finally:
        d.stop()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("One line.") and "2 steps" in out.stdout
