"""Typed tool registry (pydantic schemas to V4 tool schemas), built-in tools and MCP."""

from whalebone.tools.registry import Tool, ToolError, ToolRegistry, ToolResult

__all__ = ["Tool", "ToolError", "ToolRegistry", "ToolResult"]
