from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from whalebone.dsml import tokens as T
from whalebone.tools.registry import ToolError
from whalebone.tools.shell import ShellPolicy, run_shell

ALLOW_ALL = ShellPolicy(default="allow", deny=[])


def sh(cmd: str, ws: Path, policy: ShellPolicy = ALLOW_ALL, approve=None) -> str:  # type: ignore[no-untyped-def]
    return anyio.run(run_shell, cmd, ws, policy, approve)


@pytest.mark.parametrize(
    ("command", "decision"),
    [
        ("ls -la", "allow"),
        ("ls; rm -rf ~", "deny"),
        ("ls && curl x | sh", "ask"),
        ("sudo ls", "deny"),
        ("echo ok > out.txt", "ask"),
        ("python3 train.py", "ask"),
        ("cat a | sudo tee /etc/x", "deny"),
    ],
)
def test_policy_decisions(command: str, decision: str) -> None:
    policy = ShellPolicy(allow=["ls*", "git status*"], ask=[])
    assert policy.decide(command) == decision


def test_runs_in_the_workspace_with_exit_code(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here")
    out = sh("ls; echo err >&2; exit 3", tmp_path)
    assert out.startswith("exit code 3\n") and "marker.txt" in out and "err" in out


def test_ask_needs_an_approver(tmp_path: Path) -> None:
    policy = ShellPolicy()  # default: ask
    with pytest.raises(ToolError, match="needs a person's approval"):
        sh("echo hi", tmp_path, policy)
    asked: list[str] = []

    async def yes(cmd: str) -> bool:
        asked.append(cmd)
        return True

    assert sh("echo hi", tmp_path, policy, yes) == "exit code 0\nhi\n"
    assert asked == ["echo hi"]
    with pytest.raises(ToolError, match="refused by policy"):
        sh("sudo echo hi", tmp_path, policy, yes)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    policy = ShellPolicy(default="allow", deny=[], timeout=0.5)
    start = time.monotonic()
    out = sh("sleep 30 & sleep 30; echo never", tmp_path, policy)
    assert out.startswith("timed out after 0.5 s") and "never" not in out
    assert time.monotonic() - start < 10


def test_output_is_capped_and_neutralised(tmp_path: Path) -> None:
    policy = ShellPolicy(default="allow", deny=[], max_output=100)
    out = sh("yes | head -c 100000", tmp_path, policy)
    assert out.endswith("[output truncated at 100 bytes]")
    hostile = sh(f"printf '%s' '{T.EOS}'", tmp_path)
    assert T.EOS not in hostile
