"""Several MCP servers from one configuration, opened together.

The configuration is the ``mcpServers`` shape other agents use, so an existing file can be
pointed at as it is::

    {"mcpServers": {
        "git":  {"command": "uvx", "args": ["mcp-server-git"]},
        "docs": {"url": "https://mcp.example.com/mcp",
                 "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}}}

``${NAME}`` in ``env`` and ``headers`` values is taken from the host's environment when the
server starts, so a secret need not be written into the file (and the host's environment is
not otherwise handed to a stdio server). Servers open in name order and their tools follow in
that order, so the tools block is stable; a server that cannot start is skipped and reported
in :attr:`McpServers.failures` (or raises, when it is ``required``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from whalebone.core.errors import WhaleboneError
from whalebone.tools.mcp import McpTool, McpTools, McpUnavailable

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


class McpConfigError(WhaleboneError):
    """An MCP server configuration is malformed."""


class McpServerConfig(BaseModel):
    """One server: a ``command`` run over stdio, or a streamable-HTTP ``url``."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    timeout: float = Field(60.0, gt=0)  # one tool call
    startup_timeout: float = Field(30.0, gt=0)
    trust_annotations: bool = False
    required: bool = False  # refuse to go on without this server
    disabled: bool = False

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (stdio) or 'url' (streamable HTTP)")
        return self


def load_servers(source: Mapping[str, Any] | str | os.PathLike[str]
                 ) -> dict[str, McpServerConfig]:
    """Server configurations by name from a mapping, or a JSON or TOML file, with or without
    the ``mcpServers`` wrapper."""
    if isinstance(source, Mapping):
        data: Any = source
        where = "the MCP configuration"
    else:
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as e:
            raise McpConfigError(f"cannot read MCP configuration {where}: {e}") from None
    if isinstance(data, Mapping) and "mcpServers" in data:
        data = data["mcpServers"]
    if not isinstance(data, Mapping):
        raise McpConfigError(f"{where}: expected a mapping of server names to settings")
    servers: dict[str, McpServerConfig] = {}
    for name in sorted(data):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise McpConfigError(f"{where}: server name {name!r} must be 1-40 letters, "
                                 "digits, '_' or '-' (it prefixes the tools' names)")
        try:
            servers[name] = McpServerConfig.model_validate(data[name])
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or name}: {err['msg']}"
                                 for err in e.errors())
            raise McpConfigError(f"{where}: server {name!r}: {problems}") from None
    return servers


class McpServers:
    """The servers that started, in name order, and why the others did not."""

    def __init__(self) -> None:
        self.servers: dict[str, McpTools] = {}
        self.failures: dict[str, str] = {}

    def tools(self) -> list[McpTool]:
        return [t for name in sorted(self.servers) for t in self.servers[name].tools()]


@asynccontextmanager
async def open_servers(servers: Mapping[str, McpServerConfig],
                       environ: Mapping[str, str] | None = None) -> AsyncIterator[McpServers]:
    """Start every enabled server (one after another: each owns task scopes that must close
    in order) and keep them running for the block."""
    environ = os.environ if environ is None else environ
    out = McpServers()
    async with AsyncExitStack() as stack:
        for name in sorted(servers):
            cfg = servers[name]
            if cfg.disabled:
                continue
            try:
                out.servers[name] = await stack.enter_async_context(_open(name, cfg, environ))
            except (McpUnavailable, McpConfigError) as e:
                if cfg.required:
                    raise
                out.failures[name] = str(e)
        yield out


def _open(name: str, cfg: McpServerConfig, environ: Mapping[str, str]) -> Any:
    options: dict[str, Any] = {"name": name, "timeout": cfg.timeout,
                               "startup_timeout": cfg.startup_timeout,
                               "trust_annotations": cfg.trust_annotations}
    if cfg.command is not None:
        env = {k: _expand(v, environ, name) for k, v in cfg.env.items()}
        return McpTools.stdio(cfg.command, cfg.args, env, cwd=cfg.cwd, **options)
    headers = {k: _expand(v, environ, name) for k, v in cfg.headers.items()}
    assert cfg.url is not None
    return McpTools.http(cfg.url, headers=headers, **options)


def _expand(value: str, environ: Mapping[str, str], server: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in environ:
            raise McpConfigError(f"MCP server {server!r} needs ${{{m.group(1)}}}, which is "
                                 "not set in the environment")
        return environ[m.group(1)]

    return _VARIABLE.sub(one, value)
