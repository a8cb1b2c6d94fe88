"""default_tools: the built-in tool set, in a fixed order, confined to the workspace."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from whalebone.agent.tools import default_tools
from whalebone.core.errors import WhaleboneError
from whalebone.tools.shell import ShellPolicy


def test_tools_come_in_a_fixed_order_with_byte_identical_schemas(tmp_path: Path) -> None:
    a, b = default_tools(tmp_path), default_tools(tmp_path)
    names = [t.name for t in a]
    assert names == ["read_file", "write_file", "edit_file", "list_dir", "grep", "shell",
                     "http_get", "calculator"]
    assert a.schemas() == b.schemas()
    assert [t.name for t in default_tools(tmp_path, shell=False, web=False, calculator=False)
            ] == names[:5]


def test_file_tools_are_confined_and_shell_runs_in_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    tools = default_tools(tmp_path, shell_policy=ShellPolicy(allow=["cat *"], default="deny"))

    async def main() -> tuple[str, bool, str, bool]:
        inside = await tools["read_file"].call({"path": "a.txt"})
        outside = await tools["read_file"].call({"path": "../etc/passwd"})
        shell = await tools["shell"].call({"command": "cat a.txt"})
        denied = await tools["shell"].call({"command": "rm a.txt"})
        return inside.content, outside.is_error, shell.content, denied.is_error

    inside, refused, shell, denied = anyio.run(main)
    assert "alpha" in inside and refused
    assert shell.startswith("exit code 0") and "alpha" in shell
    assert denied and (tmp_path / "a.txt").exists()


def test_a_workspace_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(WhaleboneError, match="not a directory"):
        default_tools(tmp_path / "missing")
