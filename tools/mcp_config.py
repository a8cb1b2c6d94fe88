"""Where a session's MCP servers come from: the ``mcpServers`` files other agents use.

Sources, in order; a later one replaces a server of the same name:

1. the user's: ``mcpServers`` in ``$WHALEBONE_HOME/config.toml`` (a ``[mcpServers.NAME]``
   table; the daemon's ``daemon.toml`` takes the same tables) and ``$WHALEBONE_HOME/mcp.json``;
2. the project's ``.mcp.json`` at the workspace root — **only once the person has trusted that
   file's exact content** (``whalebone mcp trust``). A server is a command that runs with the
   user's rights, and cloning a repository must not be enough to run its commands (Claude Code
   asks the same question); an edited file must be trusted again;
3. files named by the person: ``--mcp FILE`` on ``run``, ``sessions resume`` and ``chat``.

:func:`discover` returns the servers with where each came from, and one-line notes for the
person (a project file not trusted yet, a source that cannot be read). Servers start once per
session, in name order, so their tools keep one order and the cached prefix survives
(:func:`whalebone.tools.mcp_servers.open_servers`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whalebone.core.home import private_dir, write_private
from whalebone.tools.mcp_servers import McpConfigError, McpServerConfig, load_servers

PROJECT_FILE = ".mcp.json"
TRUST_FILE = "mcp-trust.json"  # in the whalebone home: workspace path -> trusted digest


@dataclass
class McpSetup:
    """The servers a session gets, where each came from, and what to tell the person."""

    servers: dict[str, McpServerConfig] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, servers: Mapping[str, McpServerConfig], origin: str) -> None:
        for name, cfg in servers.items():
            self.servers[name] = cfg
            self.origins[name] = origin


def discover(home: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None,
             files: Iterable[str | os.PathLike[str]] = (),
             user_servers: Mapping[str, Any] | None = None) -> McpSetup:
    """The servers for a session in ``workspace``. ``user_servers`` is the ``mcpServers``
    table of the settings file (already parsed by its reader). A named file that cannot be
    read is an error (the person asked for it); the other sources become notes."""
    setup = McpSetup()
    home = Path(home)
    if user_servers:
        _add_or_note(setup, user_servers, f"{home / 'config.toml'}")
    user_json = home / "mcp.json"
    if user_json.exists():
        _add_or_note(setup, user_json, str(user_json))
    if workspace is not None:
        project = Path(workspace) / PROJECT_FILE
        if project.is_file() and not project.is_symlink():
            servers = _load_or_note(setup, project, str(project))
            if servers is not None and servers:
                if is_trusted(home, workspace):
                    setup.add(servers, str(project))
                else:
                    setup.notes.append(
                        f"{project} names MCP servers {', '.join(sorted(servers))}: not started "
                        f"until you trust them (whalebone mcp trust --workspace {workspace})")
    for path in files:
        setup.add(load_servers(path), str(path))  # asked for by name: an error is an error
    return setup


def project_digest(workspace: str | os.PathLike[str]) -> str | None:
    """The SHA-256 of the workspace's ``.mcp.json`` as it is now, or None without one."""
    path = Path(workspace) / PROJECT_FILE
    if not path.is_file() or path.is_symlink():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_trusted(home: str | os.PathLike[str], workspace: str | os.PathLike[str]) -> bool:
    digest = project_digest(workspace)
    return digest is not None and _trusted(Path(home)).get(_key(workspace)) == digest


def trust(home: str | os.PathLike[str], workspace: str | os.PathLike[str]) -> list[str]:
    """Trust the workspace's ``.mcp.json`` as it is now; the names of its servers."""
    digest = project_digest(workspace)
    if digest is None:
        raise McpConfigError(f"no {PROJECT_FILE} in {workspace}")
    names = sorted(load_servers(Path(workspace) / PROJECT_FILE))
    table = _trusted(Path(home))
    table[_key(workspace)] = digest
    private_dir(Path(home))
    write_private(Path(home) / TRUST_FILE, json.dumps(table, indent=1, sort_keys=True))
    return names


def untrust(home: str | os.PathLike[str], workspace: str | os.PathLike[str]) -> bool:
    table = _trusted(Path(home))
    if table.pop(_key(workspace), None) is None:
        return False
    write_private(Path(home) / TRUST_FILE, json.dumps(table, indent=1, sort_keys=True))
    return True


def _key(workspace: str | os.PathLike[str]) -> str:
    return str(Path(workspace).expanduser().resolve())


def _trusted(home: Path) -> dict[str, str]:
    try:
        data = json.loads((home / TRUST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or garbled: nothing is trusted
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def _load_or_note(setup: McpSetup, source: Mapping[str, Any] | Path,
                  where: str) -> dict[str, McpServerConfig] | None:
    try:
        return load_servers(source)
    except McpConfigError as e:
        setup.notes.append(f"MCP servers in {where} skipped: {e}")
        return None


def _add_or_note(setup: McpSetup, source: Mapping[str, Any] | Path, where: str) -> None:
    servers = _load_or_note(setup, source, where)
    if servers:
        setup.add(servers, where)
