"""Tools of MCP servers, joined to a :class:`~whalebone.tools.registry.ToolRegistry`.

Built on the official ``mcp`` SDK (the ``mcp`` extra, 2.x API); the import happens when a
connection is opened, so the core never needs it::

    async with McpTools.stdio("uvx", ["mcp-server-git"], name="git") as git:
        registry.add_many(git.tools())          # git__status, git__diff, … (sorted)
        ...                                     # the session lives as long as this block

    async with McpTools.http("http://127.0.0.1:8931/mcp", headers={...}) as remote: ...

Each remote tool becomes a :class:`McpTool` named ``<server>__<tool>`` (characters other than
letters, digits, ``_`` and ``-`` replaced), listed in name order, so the tools block, and with it
the cached prompt prefix, is the same on every connection whatever order the server lists in.
A server is outside text: descriptions and schemas are neutralised before they reach the prompt,
and results are neutralised and capped. Arguments are checked against the tool's JSON schema
before they are sent; a bad argument, a tool that reports an error, a protocol error, a dead
server or a call past its timeout all come back to the model as a tool error, never as a crash.
Tool annotations (read-only, idempotent) are *hints* from the server and are ignored unless the
host passes ``trust_annotations=True``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from whalebone.core.errors import WhaleboneError
from whalebone.dsml.untrusted import contains_special, neutralise
from whalebone.tools.registry import Tool, ToolError, ToolResult

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp import types as mcp_types

SEPARATOR = "__"
MAX_NAME = 64  # what OpenAI-style function names allow; V4 was trained on such names
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class McpUnavailable(WhaleboneError):
    """An MCP server could not be started, reached, or initialised."""


class McpTool(Tool):
    """One tool of an MCP server, called over the server's session.

    The schema is the server's own JSON schema (neutralised); arguments are validated against
    it here, so the model hears about a bad argument in the same words as for local tools.
    """

    def __init__(self, server: McpTools, remote: mcp_types.Tool, name: str, *,
                 timeout: float | None, idempotent: bool) -> None:
        # Not Tool.__init__: there is no Python signature to derive a model from.
        self.server = server
        self.remote_name = remote.name
        self.name = name
        self.description = neutralise(remote.description or remote.title or "")
        self.parameters = _neutralised(_without_titles(remote.input_schema))
        self.idempotent = idempotent
        self.timeout = timeout
        self.is_async = True
        self.fn = self.call
        self._validator = _validator(remote.input_schema)

    def schema(self) -> dict[str, Any]:
        function = {"name": self.name, "description": self.description,
                    "parameters": self.parameters}
        return {"type": "function", "function": function}

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        args = dict(arguments)
        if self._validator is not None:
            problems = [
                f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}"
                for e in sorted(self._validator.iter_errors(args), key=lambda e: e.path)
            ]
            if problems:
                raise ToolError(f"invalid arguments for {self.name}: {'; '.join(problems)}")
        return args

    async def call(self, arguments: Mapping[str, Any]) -> ToolResult:
        try:
            args = self.validate(arguments)
            return await self.server.call(self.remote_name, args, timeout=self.timeout)
        except ToolError as e:
            return ToolResult(content=str(e), is_error=True)


class McpTools:
    """A live session with one MCP server and the tools it offers.

    Open it with :meth:`stdio` or :meth:`http`; both are async context managers, and the tools
    work only while the block is open (afterwards a call is a tool error saying so).
    """

    def __init__(self, session: ClientSession, name: str, remote: Sequence[mcp_types.Tool], *,
                 timeout: float | None = 60.0, max_output: int = 100_000,
                 trust_annotations: bool = False, errlog: IO[bytes] | None = None) -> None:
        self.session = session
        self.name = _safe(name)  # the prefix of every tool name
        self.timeout = timeout
        self.max_output = max_output
        self._errlog = errlog
        self._closed = False
        self._tools: list[McpTool] = []
        taken: set[str] = set()
        for r in sorted(remote, key=lambda t: t.name):
            if any(contains_special(k) for k in _keys(r.input_schema)):
                continue  # a parameter name that is a special token cannot be shown safely
            local = _tool_name(self.name, r.name, taken)
            taken.add(local)
            hints = r.annotations
            idempotent = trust_annotations and hints is not None and bool(
                hints.read_only_hint or hints.idempotent_hint)
            self._tools.append(McpTool(self, r, local, timeout=timeout, idempotent=idempotent))

    def tools(self) -> list[McpTool]:
        """The server's tools, namespaced and in name order."""
        return list(self._tools)

    def stderr_tail(self, limit: int = 2_000) -> str:
        """The last of what a stdio server wrote to stderr (its log), for diagnosis."""
        if self._errlog is None or self._errlog.closed:
            return ""
        return _tail(self._errlog, limit)

    async def call(self, tool: str, arguments: dict[str, Any], *,
                   timeout: float | None = None) -> ToolResult:
        """Call the server's tool named ``tool`` (its own name, not the namespaced one)."""
        if self._closed:
            raise ToolError(f"the MCP server {self.name!r} is no longer connected")
        try:
            with anyio.fail_after(timeout) if timeout else nullcontext():
                result = await self.session.call_tool(tool, arguments)
        except TimeoutError:
            raise ToolError(f"{self.name}{SEPARATOR}{tool} timed out after {timeout:g} s "
                            "(the MCP server was told to cancel it)") from None
        except Exception as e:  # the SDK's MCPError, a closed stream, a dead process, …
            raise ToolError(f"MCP server {self.name!r} failed on {tool}: {_describe(e)}"
                            ) from None
        return ToolResult(content=self._render(result), is_error=bool(result.is_error))

    def _render(self, result: mcp_types.CallToolResult) -> str:
        parts = [_block_text(b) for b in result.content]
        if not parts and result.structured_content is not None:
            parts = [json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True)]
        text = "\n".join(parts)
        if len(text) > self.max_output:
            text = text[: self.max_output] + f"\n[output truncated at {self.max_output} " \
                                              "characters]"
        return neutralise(text)

    @classmethod
    @asynccontextmanager
    async def stdio(cls, command: str, args: Sequence[str] = (),
                    env: Mapping[str, str] | None = None, *, name: str | None = None,
                    cwd: str | Path | None = None, timeout: float | None = 60.0,
                    startup_timeout: float = 30.0, **options: Any) -> AsyncIterator[McpTools]:
        """Start ``command args…`` as a stdio MCP server and connect to it.

        ``env`` is added to the SDK's small default environment (PATH, HOME, …), not to ours,
        so the host's secrets do not leak into the server. The server's stderr is kept in a
        temporary file rather than painted over a terminal UI; see :meth:`stderr_tail`.
        """
        from mcp import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=command, args=list(args),
                                       env=dict(env) if env else None, cwd=cwd)
        async def transport(stack: AsyncExitStack) -> Any:
            try:
                client = stdio_client(params, errlog)  # type: ignore[arg-type]
                return await stack.enter_async_context(client)
            except (OSError, ValueError) as e:
                raise McpUnavailable(f"cannot start MCP server {command!r}: {e}") from None

        # Append mode: the server writes through the same open file, sharing its offset.
        with tempfile.TemporaryFile("a+b") as errlog:
            async with cls._connect(f"MCP server {command!r}", transport, name, startup_timeout,
                                    errlog=errlog, timeout=timeout, **options) as client:
                yield client

    @classmethod
    @asynccontextmanager
    async def http(cls, url: str, *, headers: Mapping[str, str] | None = None,
                   name: str | None = None, timeout: float | None = 60.0,
                   startup_timeout: float = 30.0, **options: Any) -> AsyncIterator[McpTools]:
        """Connect to an MCP server over streamable HTTP at ``url`` (e.g. ``…/mcp``).

        ``headers`` go with every request (an ``Authorization`` token, typically). The URL is
        the host's configuration, not the model's choice, so no SSRF guard applies here.
        """
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async def transport(stack: AsyncExitStack) -> Any:
            http = await stack.enter_async_context(httpx2.AsyncClient(
                headers=dict(headers or {}), timeout=httpx2.Timeout(30.0, read=300.0)))
            return await stack.enter_async_context(streamable_http_client(url, http_client=http))

        async with cls._connect(f"MCP server at {url}", transport, name, startup_timeout,
                                timeout=timeout, **options) as client:
            yield client

    @classmethod
    @asynccontextmanager
    async def _connect(cls, where: str, transport: Callable[[AsyncExitStack], Awaitable[Any]],
                       name: str | None, startup_timeout: float, **options: Any
                       ) -> AsyncIterator[McpTools]:
        """Open the transport, then the session; keep both for the block."""
        with _single_errors(where) as state:
            async with AsyncExitStack() as stack:
                streams = await transport(stack)
                client = await cls._open(stack, streams, where, name, startup_timeout, **options)
                state.opened = True
                try:
                    yield client
                finally:
                    client._closed = True

    @classmethod
    async def _open(cls, stack: AsyncExitStack, streams: Any, where: str, name: str | None,
                    startup_timeout: float, errlog: IO[bytes] | None = None,
                    **options: Any) -> McpTools:
        """Initialise the session and list every page of tools, within ``startup_timeout``."""
        from mcp import ClientSession
        from mcp import types as mcp_types

        read, write = streams[0], streams[1]
        session = await stack.enter_async_context(ClientSession(read, write))
        remote: list[mcp_types.Tool] = []
        try:
            with anyio.fail_after(startup_timeout):
                init = await session.initialize()
                cursor: str | None = None
                while True:
                    params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await session.list_tools(params=params)
                    remote.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except TimeoutError:
            raise McpUnavailable(f"{where} did not initialise within {startup_timeout:g} s"
                                 f"{_log_note(errlog)}") from None
        except Exception as e:
            raise McpUnavailable(f"{where} failed to initialise: {_describe(e)}"
                                 f"{_log_note(errlog)}") from None
        server = name or (init.server_info.name if init.server_info else "") or "mcp"
        return cls(session, server, remote, errlog=errlog, **options)


class _Connection:
    opened = False


@contextmanager
def _single_errors(where: str) -> Iterator[_Connection]:
    """Unwrap the one real error from the SDK's task groups' ExceptionGroups, so callers see
    McpUnavailable (or their own exception from inside the block), not a group of one; a
    transport's error before the session opened (refused connection, …) is McpUnavailable."""
    state = _Connection()
    try:
        yield state
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        _raise_startup(leaves[0], where, state)
    except Exception as e:
        _raise_startup(e, where, state)


def _raise_startup(e: BaseException, where: str, state: _Connection) -> None:
    if state.opened or isinstance(e, McpUnavailable) or not isinstance(e, Exception):
        raise e from None
    raise McpUnavailable(f"{where} failed to initialise: {_describe(e)}") from None


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def _tool_name(server: str, tool: str, taken: set[str]) -> str:
    """``server__tool``, safe characters, at most 64 long, unique among ``taken``."""
    base = f"{server}{SEPARATOR}{_safe(tool)}"[:MAX_NAME]
    name, n = base, 2
    while name in taken:  # two remote names that differ only in unsafe characters
        suffix = f"_{n}"
        name, n = base[: MAX_NAME - len(suffix)] + suffix, n + 1
    return name


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)[:MAX_NAME] or "_"


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without pydantic's generated titles (noise, and tokens, in every prompt)."""
    out = {k: v for k, v in schema.items() if k != "title"}
    props = out.get("properties")
    if isinstance(props, dict):
        out["properties"] = {
            k: {kk: vv for kk, vv in v.items() if kk != "title"} if isinstance(v, dict) else v
            for k, v in props.items()
        }
    return out


def _neutralised(value: Any) -> Any:
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, dict):
        return {k: _neutralised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_neutralised(v) for v in value]
    return value


def _keys(value: Any) -> list[str]:
    """Every key at every depth of a JSON value."""
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def _validator(schema: dict[str, Any]) -> Any:
    """A JSON-schema validator for the tool's input, or None when the schema itself is broken
    (the server then remains the judge of its arguments)."""
    import jsonschema  # a dependency of the mcp SDK

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(block.data) * 3 // 4 - block.data[-2:].count("=")  # base64 length
        return f"[{kind} {block.mime_type}, {size} bytes, not shown]"
    if kind == "resource_link":
        return f"[resource {block.uri} ({block.name})]"
    if kind == "resource":
        res = block.resource
        if hasattr(res, "text"):
            return f"[resource {res.uri}]\n{res.text}"
        return f"[binary resource {res.uri} {res.mime_type or ''}, not shown]"
    return f"[{kind or type(block).__name__} content, not shown]"


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        return _describe(e.exceptions[0])
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _tail(log: IO[bytes], limit: int) -> str:
    # pread, not seek + read: the server shares this file's offset, and moving it would make
    # the server overwrite its own log.
    fd = log.fileno()
    size = os.fstat(fd).st_size
    return os.pread(fd, limit, max(0, size - limit)).decode("utf-8", errors="replace")


def _log_note(errlog: IO[bytes] | None) -> str:
    tail = _tail(errlog, 1_000).strip() if errlog is not None and not errlog.closed else ""
    return f"; its stderr ends:\n{tail}" if tail else ""
