"""The built-in tool set, assembled in one fixed order.

``read_file, write_file, edit_file, list_dir, grep`` (confined to the workspace), then
``shell`` (the workspace as cwd, under a policy), then ``http_get`` (SSRF-guarded), then
``calculator``. The same set serves ``whalebone run``, ``chat`` and the daemon, so a session
can move between them without changing its prompt. The order and every schema are part of the
cached prompt prefix, so this function builds the same tools block byte for byte on every call;
a host adds its own tools, or an MCP server's (:class:`whalebone.tools.mcp.McpTools`), after
these.
"""

from __future__ import annotations

import os
from pathlib import Path

from whalebone.core.errors import WhaleboneError
from whalebone.tools.calculator import calculator as calculate
from whalebone.tools.confine import Root
from whalebone.tools.files import FileTools
from whalebone.tools.http import HttpPolicy, http_get
from whalebone.tools.registry import Tool, ToolRegistry
from whalebone.tools.shell import Approver, ShellPolicy, run_shell


def builtin_tools(workspace: str | os.PathLike[str], *, shell_policy: ShellPolicy | None = None,
                  approve: Approver | None = None, http_policy: HttpPolicy | None = None,
                  shell: bool = True, web: bool = True, calculator: bool = True,
                  read_only: bool = False) -> ToolRegistry:
    """The built-in tools for an agent working in ``workspace``.

    ``approve`` answers the shell policy's "ask" decisions (with none, asking means no).
    ``read_only`` makes the file tools refuse every change (the shell is then the host's
    policy to restrict). ``shell``, ``web`` and ``calculator`` switch those tools on or off.
    """
    path = Path(workspace).expanduser()
    if not path.is_dir():
        raise WhaleboneError(f"the workspace {str(path)!r} is not a directory")
    root = Root(path, read_only=read_only)
    registry = ToolRegistry(FileTools(root).tools())
    if shell:
        policy = shell_policy or ShellPolicy()

        async def shell_tool(command: str) -> str:
            """Run a shell command in the workspace and return its exit code and output.
            Commands are checked against a policy; some need a person's approval."""
            return await run_shell(command, root.path, policy, approve)

        # The policy kills the command at its own timeout; the registry must not cut it first.
        registry.add(Tool(shell_tool, name="shell", timeout=policy.timeout + 5))
    if web:
        hpolicy = http_policy or HttpPolicy()

        async def http_get_tool(url: str) -> str:
            """Fetch a public http(s) URL and return its status, type and text."""
            return await http_get(url, hpolicy)

        registry.add(Tool(http_get_tool, name="http_get", idempotent=True,
                          timeout=hpolicy.timeout * (hpolicy.max_redirects + 1) + 5))
    if calculator:
        registry.add(Tool(calculate, name="calculator", idempotent=True, timeout=5.0))
    return registry
