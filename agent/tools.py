"""The built-in tool set an agent gets when its host gives none: files, shell and the web.

Tools are added in a fixed order (files, shell, http_get) so the tool list, and the cached
prompt prefix that holds it, is byte-identical from one session to the next.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from whalebone.tools.http import HttpPolicy, http_get
from whalebone.tools.registry import Tool, ToolRegistry
from whalebone.tools.shell import Approver, ShellPolicy, run_shell


def default_tools(workspace: str | Path, *, shell_policy: ShellPolicy | None = None,
                  approve: Approver | None = None, http_policy: HttpPolicy | None = None,
                  shell: bool = True, web: bool = True) -> ToolRegistry:
    """File tools confined to ``workspace``, ``shell`` (cwd = workspace, under
    ``shell_policy``; ``approve`` answers its "ask" decisions) and ``http_get`` (SSRF-guarded)."""
    root = Path(workspace).expanduser().resolve()
    if not root.is_dir():
        from whalebone.dsml.errors import WhaleboneError

        raise WhaleboneError(f"the workspace {str(root)!r} is not a directory")
    registry = ToolRegistry()
    for tool in _file_tools(root):
        registry.add(tool)
    if shell:
        policy = shell_policy or ShellPolicy()

        async def shell_tool(command: str) -> str:
            """Run a shell command in the workspace and return its exit code and output.
            Commands are checked against a policy; some need a person's approval."""
            return await run_shell(command, root, policy, approve)

        # The policy kills the command at its own timeout; the loop's must not cut it first.
        registry.add(Tool(shell_tool, name="shell", timeout=policy.timeout + 5))
    if web:
        hpolicy = http_policy or HttpPolicy()

        async def http_get_tool(url: str) -> str:
            """Fetch a public http(s) URL and return its status, type and text."""
            return await http_get(url, hpolicy)

        registry.add(Tool(http_get_tool, name="http_get", idempotent=True,
                          timeout=hpolicy.timeout * (hpolicy.max_redirects + 1) + 5))
    return registry


def _file_tools(root: Path) -> list[Any]:
    """read_file, write_file, edit_file, list_dir, grep from the tools room, when installed."""
    try:
        files = importlib.import_module("whalebone.tools.files")
    except ModuleNotFoundError as e:
        if e.name != "whalebone.tools.files":
            raise
        return []
    make = getattr(files, "file_tools", None)
    return list(make(root)) if make is not None else []
