"""Typed tool registry, the built-in tools (files, grep, shell, http_get, calculator) and MCP.

``builtin_tools(workspace)`` assembles the default set in its fixed order; MCP servers' tools
join with ``registry.add_many(mcp.tools())`` inside ``async with McpTools.stdio(…) as mcp``
(the ``mcp`` extra), or for a whole ``mcpServers`` configuration with
``async with open_servers(load_servers("mcp.json")) as mcp``.
"""

from whalebone.tools.builtins import builtin_tools
from whalebone.tools.calculator import CalculatorError, calculator
from whalebone.tools.confine import PathError, PathRefused, Root
from whalebone.tools.files import FileTools, file_tools
from whalebone.tools.http import HttpPolicy, http_get
from whalebone.tools.mcp import McpTool, McpTools, McpUnavailable
from whalebone.tools.mcp_servers import McpConfigError, McpServers, load_servers, open_servers
from whalebone.tools.registry import Tool, ToolError, ToolRegistry, ToolResult
from whalebone.tools.shell import ShellPolicy, run_shell

__all__ = [
    "CalculatorError",
    "FileTools",
    "HttpPolicy",
    "McpConfigError",
    "McpServers",
    "McpTool",
    "McpTools",
    "McpUnavailable",
    "PathError",
    "PathRefused",
    "Root",
    "ShellPolicy",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "builtin_tools",
    "calculator",
    "file_tools",
    "http_get",
    "load_servers",
    "open_servers",
    "run_shell",
]
