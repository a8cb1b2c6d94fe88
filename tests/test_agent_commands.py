"""``whalebone run`` and ``whalebone sessions`` as a person runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agent_kit import call, in_process, say, script

from whalebone.agent.cli import main


def whalebone_cmd(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_run_streams_a_transcript_and_ends_with_a_usage_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "notes.txt").write_text("hello\n")
    engine = script(tmp_path, "s.json", [
        call(("read_file", {"path": "notes.txt"}), reasoning="Read the notes."),
        say("The notes say \x1b[31mhello.", reasoning="Answer."),
    ])
    r = whalebone_cmd("run", "What do the notes say?", "--engine", engine, "--workspace",
                      str(tmp_path / "ws"), home=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "[thinking] Read the notes." in out
    assert '→ read_file({"path": "notes.txt"})' in out
    assert "← read_file:" in out
    assert "The notes say \\x1b[31mhello." in out  # escape sequences never reach the terminal
    last = out.strip().splitlines()[-1]
    assert last.startswith("— 2 steps ·") and "% cached" in last and "$0.000000" in last
    sid = last.rsplit("session ", 1)[1]

    code, out, _ = in_process(capsys, "sessions", "list")
    assert code == 0 and sid in out and "done" in out
    code, out, _ = in_process(capsys, "sessions", "show", sid)
    assert code == 0
    assert "user: What do the notes say?" in out and "2 model calls" in out

    more = script(tmp_path, "more.json", [say("Still hello.")])
    resumed = whalebone_cmd("sessions", "resume", sid, "And now?", "--engine", more,
                            "--workspace", str(tmp_path / "ws"), "--json", home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["answer"] == "Still hello."
    assert events[-1]["session_id"] == sid
    usage = [e for e in events if e["type"] == "usage"]
    assert usage and usage[0]["prompt_tokens"] > 0


def test_exit_codes_for_limits_bad_engines_and_unknown_sessions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEBONE_ENGINE", raising=False)
    looping = script(tmp_path, "loop.json", [call(("list_dir", {"path": "."}))] * 5)
    code, out, _ = in_process(capsys, "run", "loop", "--engine", looping, "--workspace",
                              str(tmp_path))
    assert code == 3 and "stopped (loop)" in out
    code, _, err = in_process(capsys, "run", "x", "--engine", "nonsense:1")
    assert code == 5 and "unknown engine" in err
    code, _, err = in_process(capsys, "run", "x", "--engine",
                              f"scripted:{tmp_path / 'missing.json'}")
    assert code == 5 and "cannot read the script" in err
    code, _, err = in_process(capsys, "sessions", "resume", "nosuchsession")
    assert code == 2 and "no session" in err
    (tmp_path / "bad.toml").write_text("engine = [")
    code, _, err = in_process(capsys, "run", "x", "--config", str(tmp_path / "bad.toml"))
    assert code == 2 and "cannot read the config file" in err
    (tmp_path / "typo.toml").write_text("[budget]\nsesion_usd = 0.5\n")  # would mean no limit
    code, _, err = in_process(capsys, "run", "x", "--config", str(tmp_path / "typo.toml"))
    assert code == 2 and "sesion_usd" in err and "session_usd" in err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "exit codes:" in help_text and "4    stopped by the budget guard" in help_text


def test_the_engine_comes_from_the_config_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEBONE_ENGINE", raising=False)
    engine = script(tmp_path, "s.json", [
        call(("memory", {"command": "view", "path": "/memories"})), say("From the config.")])
    (tmp_path / "config.toml").write_text(f'engine = "{engine}"\n[agent]\nthinking = "max"\n')
    code, out, err = in_process(capsys, "run", "hi", "--no-tools", "--memory", "user:me",
                                "--quiet")
    assert code == 0, err
    assert out.startswith("From the config.")
    assert (tmp_path / "memory" / "user:me").is_dir()
    code, _, err = in_process(capsys, "run", "hi", "--memory", "../escape")
    assert code == 2 and err


def test_a_bundled_engine_without_its_checkpoint_fails_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "no-checkpoint"
    r = whalebone_cmd("run", "hi", "--engine", f"bundled:{missing}", home=tmp_path)
    assert r.returncode == 5, r.stderr
    assert f"no checkpoint folder at {missing}" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_exits_130_and_the_session_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    slow = script(tmp_path, "slow.json", [say("A slow answer that is never finished.")])
    (tmp_path / "config.toml").write_text(f'engine = "{slow}"\n[engine_options]\n'
                                          "delay = 0.2\n")
    env = {**os.environ, "WHALEBONE_HOME": str(tmp_path)}
    env.pop("WHALEBONE_ENGINE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "whalebone.agent.cli", "run", "hello", "--no-tools"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    assert proc.stdout.read(11) == "\n[thinking]"  # it is generating
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    sid = err.strip().rsplit(" ", 1)[1]
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEBONE_ENGINE", raising=False)
    quick = script(tmp_path, "quick.json", [say("Hello again.")])
    code, out, _ = in_process(capsys, "sessions", "resume", sid, "--engine", quick,
                              "--no-tools", "--quiet")
    assert code == 0 and out.startswith("Hello again.")
