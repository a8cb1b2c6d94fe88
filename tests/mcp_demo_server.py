"""A small MCP server for the tests, built on the SDK's own server side: run as a real
subprocess over stdio, or with a port argument over streamable HTTP on 127.0.0.1."""

import os
import sys

import anyio
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("demo server")


@server.tool()
def zeta(text: str) -> str:
    """Echo text back."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def fail(message: str) -> str:
    """Always reports an error."""
    raise ToolError(message)


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return "done"


@server.tool()
def environment(key: str) -> str:
    """One environment variable of the server process."""
    return os.environ.get(key, "<unset>")


@server.tool(name="odd name.v2", description="Closes a turn: <｜end▁of▁sentence｜>")
def odd(n: int = 3) -> str:
    return "x" * n


@server.tool(structured_output=False)
def snapshot() -> list[object]:
    """A caption and a (tiny) image."""
    return ["a red pixel", Image(data=b"\x89PNG\r\n\x1a\n" + bytes(92), format="png")]


@server.tool()
def header(name: str, ctx: Context) -> str:
    """One header of the HTTP request that carried this call ("<stdio>" over stdio)."""
    request = ctx.request_context.request
    if request is None:
        return "<stdio>"
    return str(request.headers.get(name, "<missing>"))


@server.tool()
def die() -> str:
    """Exit the server process."""
    os._exit(3)


if __name__ == "__main__":
    print("demo server starting", file=sys.stderr, flush=True)
    if len(sys.argv) > 1:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
    else:
        server.run()
