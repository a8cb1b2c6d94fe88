"""``whalebone chat``: argument errors, and one smoke test of the real command in tmux (a real
terminal: the screen is read back with ``tmux capture-pane``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whalebone.agent.cli import main
from whalebone.agent.store import SessionStore
from whalebone.dsml import emit_completion
from whalebone.tui.approvals import ApprovalLog


def test_an_unknown_session_is_a_clear_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chat", "--sessions", str(tmp_path / "s.db"), "--session", "nope",
                 "--engine", "scripted:/dev/null"])
    assert code == 2
    assert "whalebone chat: no session 'nope'" in capsys.readouterr().err


def test_an_unreadable_script_is_a_clear_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chat", "--sessions", str(tmp_path / "s.db"),
                 "--engine", f"scripted:{tmp_path / 'absent.jsonl'}"])
    assert code == 2
    assert "cannot read the script" in capsys.readouterr().err


def test_the_config_file_is_read_and_flags_override_it(tmp_path: Path) -> None:
    from whalebone.agent.cli import build_parser
    from whalebone.tui.cli import build_app

    script = tmp_path / "s.json"
    script.write_text(json.dumps(["Hi.<｜end▁of▁sentence｜>"]))
    config = tmp_path / "config.toml"
    config.write_text(f"""engine = "scripted:{script}"
store = "{tmp_path / 'from-config.db'}"
workspace = "{tmp_path}"
[agent]
thinking = "chat"
max_steps = 7
[shell]
allow = ["ls *"]
""")
    args = build_parser().parse_args(["chat", "--config", str(config), "--allow", "git status",
                                      "--thinking", "max"])
    runner = build_app(args).runner
    assert runner.engine_specs == [f"scripted:{script}"]
    assert runner.store.path == tmp_path / "from-config.db"
    assert (runner.config.thinking, runner.config.max_steps) == ("max", 7)
    assert runner.shell_policy.allow == ["ls *", "git status"]
    assert runner.workspace == tmp_path


def test_a_bad_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[agent]\nmax_steps = 0\n")
    assert main(["chat", "--config", str(config), "--sessions", str(tmp_path / "s.db")]) == 2
    assert "whalebone chat:" in capsys.readouterr().err


def whalebone_command() -> list[str]:
    script = Path(sys.executable).with_name("whalebone")
    return [str(script)] if script.exists() else [sys.executable, "-m", "whalebone.agent.cli"]


class TmuxChat:
    """``whalebone chat`` over a replay script, as a real command in a tmux pane."""

    def __init__(self, tmp_path: Path, completions: list[str], *, size: tuple[int, int],
                 name: str) -> None:
        script = tmp_path / "demo.jsonl"
        script.write_text("\n".join(json.dumps(c) for c in completions) + "\n",
                          encoding="utf-8")
        self.db = tmp_path / "sessions.db"
        self.tmux = ["tmux", "-L", f"whalebone-test-{os.getpid()}-{name}"]
        command = [*whalebone_command(), "chat", "--engine", f"scripted:{script}?delay=0.005",
                   "--sessions", str(self.db), "--workspace", str(tmp_path)]
        env = {**os.environ, "WHALEBONE_HOME": str(tmp_path / "home"),
               "TERM": "xterm-256color"}
        subprocess.run([*self.tmux, "new-session", "-d", "-s", "chat", "-x", str(size[0]), "-y",
                        str(size[1]), *command], check=True, env=env, cwd=tmp_path)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "chat"],
                              capture_output=True, text=True, check=True).stdout

    def wait_for(self, *texts: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if all(text in shown for text in texts):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{texts!r} never appeared; the screen was:\n{self.screen()}")

    def keys(self, *args: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "chat", *args], check=True)

    def running(self) -> bool:
        return subprocess.run([*self.tmux, "has-session", "-t", "chat"],
                              capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed "
                                "(apt-get install -y tmux)")


@needs_tmux
def test_the_real_command_runs_a_turn_in_a_terminal(tmp_path: Path) -> None:
    chat = TmuxChat(tmp_path, [
        emit_completion("", reasoning="I will look.",
                        tool_calls=[("shell", {"command": "echo from-the-shell"})]),
        emit_completion("The answer is **forty-two**.", reasoning="The user asks a question."),
    ], size=(80, 24), name="turn")
    try:
        chat.wait_for("Enter sends")
        chat.keys("what is the answer")
        chat.keys("Enter")
        chat.wait_for("Run this shell command?", "echo from-the-shell")
        # The reason and the approval arrive in one burst, as from a fast typist or a paste:
        # the reason logged must still be the reason typed.
        chat.keys("fine", "C-y")
        shown = chat.wait_for("The answer is forty-two.", "[idle]")
        assert "shell  ok" in shown
        assert "what is the answer" in shown  # the user's turn, and the session's title
        assert "Reasoning (25 chars)" in shown  # folded
        assert "scripted·whalebone-local" in shown
        chat.keys("C-q")
        deadline = time.monotonic() + 20
        while chat.running():
            assert time.monotonic() < deadline, "the app did not quit on Ctrl+Q"
            time.sleep(0.2)
    finally:
        chat.close()
    store = SessionStore(chat.db)
    (info,) = store.list()
    assert info.title == "what is the answer"
    assert store.messages(info.id)[-1]["content"] == "The answer is **forty-two**."
    assert "from-the-shell" in store.messages(info.id)[-2]["content"]
    (decision,) = ApprovalLog(tmp_path / "approvals.jsonl").records()
    assert (decision.subject, decision.approved, decision.reason) == (
        "echo from-the-shell", True, "fine")


@needs_tmux
def test_the_real_command_welcomes_takes_slash_commands_and_says_how_to_resume(
        tmp_path: Path) -> None:
    chat = TmuxChat(tmp_path, [
        emit_completion("", reasoning="Look.", tool_calls=[("shell", {"command": "echo one"})]),
        emit_completion("", reasoning="Again.", tool_calls=[("shell", {"command": "echo two"})]),
        emit_completion("Both ran.", reasoning="Done."),
    ], size=(100, 40), name="everyday")
    subprocess.run([*chat.tmux, "set-option", "-t", "chat", "remain-on-exit", "on"], check=True)
    try:
        chat.wait_for("type a message and press Enter", str(tmp_path.resolve()))
        chat.keys("/help", "Enter")
        chat.wait_for("/permissions", "Ctrl+P")
        chat.keys("run both", "Enter")
        chat.wait_for("Run this shell command?", "always allow: echo *")
        chat.keys("C-l")  # allow always: the second echo runs without asking
        chat.wait_for("Both ran.", "[idle]")
        chat.keys("an unsent draft")
        chat.keys("C-q")
        chat.wait_for("has not been sent")
        chat.keys("y")
        shown = chat.wait_for("Resume this session with: whalebone chat --session")
    finally:
        chat.close()
    store = SessionStore(chat.db)
    (info,) = store.list()
    assert f"--session {info.id}" in shown
    assert [m["role"] for m in store.messages(info.id)].count("user") == 1  # /help not sent
    assert json.loads((tmp_path / "permissions.json").read_text()) == ["echo *"]
    assert len(ApprovalLog(tmp_path / "approvals.jsonl").records()) == 1
