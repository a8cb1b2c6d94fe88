"""Typed tool registry (pydantic schemas to V4 tool schemas), built-in tools and MCP."""
