from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from whalebone.tools import ToolRegistry
from whalebone.tools.mcp import McpUnavailable
from whalebone.tools.mcp_servers import McpConfigError, load_servers, open_servers

pytest.importorskip("mcp")

DEMO_SERVER = str(Path(__file__).resolve().parent / "mcp_demo_server.py")


def test_configurations_load_from_json_and_toml_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {
        "zed": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer x"}},
        "git": {"command": "uvx", "args": ["mcp-server-git"], "timeout": 5},
    }}))
    servers = load_servers(tmp_path / "mcp.json")
    assert list(servers) == ["git", "zed"]
    assert servers["git"].args == ["mcp-server-git"] and servers["git"].timeout == 5
    (tmp_path / "mcp.toml").write_text('[git]\ncommand = "uvx"\nrequired = true\n')
    assert load_servers(tmp_path / "mcp.toml")["git"].required


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"s": {"command": "x", "url": "http://h/mcp"}}, "either 'command'"),
        ({"s": {}}, "either 'command'"),
        ({"s": {"command": "x", "bogus": 1}}, "bogus: Extra inputs"),
        ({"s": {"command": "x", "timeout": 0}}, "timeout: Input should be greater than 0"),
        ({"bad name!": {"command": "x"}}, "server name 'bad name!'"),
        ({"mcpServers": []}, "expected a mapping"),
    ],
)
def test_malformed_configurations_are_refused_clearly(config: dict[str, Any],
                                                      needle: str) -> None:
    with pytest.raises(McpConfigError) as e:
        load_servers(config)
    assert needle in str(e.value)


def test_an_unreadable_configuration_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(McpConfigError, match="cannot read MCP configuration"):
        load_servers(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(McpConfigError, match="cannot read MCP configuration"):
        load_servers(tmp_path / "broken.json")


def test_servers_open_together_and_the_broken_ones_are_reported(tmp_path: Path) -> None:
    servers = load_servers({
        "beta": {"command": sys.executable, "args": [DEMO_SERVER],
                 "env": {"WB_TOKEN": "${HOST_TOKEN}"}},
        "alpha": {"command": sys.executable, "args": [DEMO_SERVER]},
        "gone": {"command": str(tmp_path / "no-such-server")},
        "nokey": {"command": sys.executable, "args": [DEMO_SERVER],
                  "env": {"K": "${UNSET_VARIABLE}"}},
        "off": {"command": str(tmp_path / "never-started"), "disabled": True},
    })

    async def main() -> tuple[list[str], dict[str, str], str]:
        async with open_servers(servers, environ={"HOST_TOKEN": "s3cret"}) as mcp:
            registry = ToolRegistry(mcp.tools())
            token = await registry.call("beta__environment", {"key": "WB_TOKEN"})
            return [t.name for t in registry], mcp.failures, token.content

    names, failures, token = anyio.run(main)
    assert names[:9] == ["alpha__add", "alpha__die", "alpha__environment", "alpha__fail",
                         "alpha__header", "alpha__odd_name_v2", "alpha__slow", "alpha__snapshot",
                         "alpha__zeta"]
    assert names[9:] == [n.replace("alpha", "beta") for n in names[:9]]
    assert token == "s3cret"
    assert sorted(failures) == ["gone", "nokey"]
    assert "cannot start MCP server" in failures["gone"]
    assert "needs ${UNSET_VARIABLE}" in failures["nokey"]


def test_a_required_server_that_cannot_start_stops_the_opening(tmp_path: Path) -> None:
    servers = load_servers({"must": {"command": str(tmp_path / "absent"), "required": True}})

    async def main() -> None:
        async with open_servers(servers):
            pass

    with pytest.raises(McpUnavailable, match="cannot start MCP server"):
        anyio.run(main)
